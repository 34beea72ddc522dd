"""`flask --app wsgi seed-demo` and `flask --app wsgi events prune`."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta

from app.demo import MACHINES, ROUTE, _plan
from tests.api.conftest import ok
from tests.support.servers import flask_cli

MACHINE_NAMES = [
    "Cutting",
    "CNC Turning Soft-1",
    "CNC Turning Soft-2",
    "Gun Drilling",
    "Heat Treatment",
    "CNC Turning Hard-1",
    "CNC Turning Hard-2",
    "Grinding",
    "Flat Milling VMC",
    "Profile CNC",
    "PDI",
    "RFD",
]


def assert_consistent(sql):
    """What the lifecycle service promises about any history it wrote."""
    # the product's pointer is its newest job, and its state is that job's
    assert (
        sql(
            "SELECT p.id FROM products p LEFT JOIN jobs j ON j.id = p.latest_job_id "
            "WHERE p.latest_job_id IS DISTINCT FROM "
            "(SELECT max(id) FROM jobs WHERE product_id = p.id) "
            "OR p.state IS DISTINCT FROM j.state"
        )
        == []
    )
    # at most one ON job per product, and it is the latest
    assert (
        sql(
            "SELECT j.id FROM jobs j JOIN products p ON p.id = j.product_id "
            "WHERE j.state = 'ON' AND j.id <> p.latest_job_id"
        )
        == []
    )
    # OFF jobs have ended, ON jobs have not
    assert sql("SELECT id FROM jobs WHERE (state = 'OFF') <> (ended_at IS NOT NULL)") == []
    # the running total is the sum of the output logged
    assert (
        sql(
            "SELECT j.id FROM jobs j WHERE j.quantity_produced <> "
            "(SELECT coalesce(sum(quantity), 0) FROM operator_product_updates u WHERE u.job_id = j.id)"
        )
        == []
    )
    # a machine runs exactly when it has an ON job, unless set by hand
    assert (
        sql(
            "SELECT m.id FROM machines m WHERE m.status IN ('running', 'idle') AND "
            "(m.status = 'running') <> EXISTS (SELECT 1 FROM jobs j "
            "WHERE j.machine_id = m.id AND j.state = 'ON')"
        )
        == []
    )
    # every dispatch moved its product to past with reason 'dispatched'
    assert (
        sql(
            "SELECT d.id FROM dispatches d WHERE NOT EXISTS (SELECT 1 FROM transitions t "
            "WHERE t.job_id = d.job_id AND t.action = 'move_to_past' AND t.reason = 'dispatched')"
        )
        == []
    )


def test_the_demo_names_the_line_and_plans_its_products():
    assert [name for name, _ in MACHINES] == MACHINE_NAMES
    assert Counter(_plan(24)) == {"dispatch": 9, "live": 1, "past": 2, "partial": 12}
    for n in (3, 6, 100):
        fates = Counter(_plan(n))
        assert sum(fates.values()) == n
        assert fates["dispatch"] >= 1 and fates["past"] >= 1  # live, past and dispatched


def seed(database_url, *args):
    """The real command line, on the test database (no Redis: its events stay in this test)."""
    env = {"DATABASE_URL": database_url, "SECRET_KEY": "cli-test", "REDIS_URL": ""}
    return flask_cli("seed-demo", *args, env=env)


def test_seed_demo_loads_a_believable_factory_once(database_url, client, sql, count, dump):
    # six products rather than the default 24: the same code, a quarter of the writes
    result = seed(database_url, "--products", "6")
    assert "Loaded the demo factory: 6 products" in result.stdout, result.stdout + result.stderr

    names = [r[0] for r in sql("SELECT name FROM machines ORDER BY id")]
    assert names == MACHINE_NAMES
    states = dict(sql("SELECT coalesce(state, '-'), count(*) FROM products GROUP BY state"))
    assert states == {"ON": 4, "OFF": 2}, states
    assert count("dispatches") == 1
    assert count("operator_product_updates") >= count("jobs")
    assert count("transitions", "action = 'move_to_past' AND reason <> 'dispatched'") >= 1
    stages = sql("SELECT max(n) FROM (SELECT count(*) AS n FROM jobs GROUP BY product_id) s")[0][0]
    assert stages == len(ROUTE)  # some products went the whole route
    assert count("machines", "status = 'running'") >= 1
    assert count("machines", "status = 'maintenance'") == 1
    assert_consistent(sql)
    now = datetime.utcnow() + timedelta(minutes=1)
    (newest,) = sql("SELECT max(created_at) FROM transitions")[0]
    newest = datetime.fromisoformat(newest) if isinstance(newest, str) else newest
    assert newest < now  # the demo wrote the past, not the future

    # the API serves it
    dashboard = ok(client.get("/api/dashboard/status"))["dashboard"]
    assert dashboard["stats"]["totalMachines"] == 12
    assert dashboard["stats"]["liveProducts"] == states["ON"]
    assert ok(client.get("/api/live-products/dispatchable"))["count"] == states["ON"]


def test_seed_demo_refuses_a_database_with_products(runner, make, dump):
    make.product()
    rows = dump()
    result = runner.invoke(args=["seed-demo"])
    assert result.exit_code == 0, result.output
    assert "already has products" in result.output
    assert dump() == rows


def test_events_prune_keeps_the_retention_and_the_newest_event(runner, make, clock, sql, count):
    clock.set(datetime.utcnow() - timedelta(days=40))
    old, _, _ = make.live_product()
    ok(make.action(old["id"], "move_to_past"))
    clock.set(datetime.utcnow() - timedelta(days=2))
    make.client.post(
        "/api/products", json={"name": "K", "code": "K"}, headers={"Idempotency-Key": "old-key"}
    )
    clock.real()
    ok(make.action(old["id"], "reactivate"))
    make.client.post(
        "/api/products", json={"name": "L", "code": "L"}, headers={"Idempotency-Key": "new-key"}
    )
    cutoff = datetime.utcnow() - timedelta(days=30)
    recent = count("events", "created_at >= :c", c=cutoff)
    assert count("events", "created_at < :c", c=cutoff) > 0
    keys = count("idempotency_keys")

    result = runner.invoke(args=["events", "prune"])
    assert result.exit_code == 0, result.output
    assert "Pruned" in result.output
    assert count("events", "created_at < :c", c=cutoff) == 0
    assert count("events") == recent
    assert count("idempotency_keys") == keys - 1  # the two-day-old key is past its 24 hours

    # --days 0: everything but the newest event, which keeps the ids rising after a restart
    (newest,) = sql("SELECT max(id) FROM events")[0]
    result = runner.invoke(args=["events", "prune", "--days", "0"])
    assert result.exit_code == 0, result.output
    assert [r[0] for r in sql("SELECT id FROM events")] == [newest]
    # and the history the events described is all still there
    assert count("transitions", "product_id = :p", p=old["id"]) == 3


def test_events_prune_on_an_empty_log(runner):
    result = runner.invoke(args=["events", "prune"])
    assert result.exit_code == 0, result.output
    assert "Pruned 0 event(s)" in result.output
