"""Concurrent writes on one product serialize (Postgres: SELECT ... FOR UPDATE on the product).

Twenty threads, each with a test client of its own signed in as the `client` fixture is, are
lined up on a barrier and fire together at the real Postgres.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest
from sqlalchemy import func, select, text

from app.extensions import db
from app.models import Event
from tests.api.conftest import ok

N = 20


@pytest.fixture
def pg_only(backend):
    if backend == "sqlite":
        pytest.skip("concurrency is tested on Postgres; SQLite serializes every writer anyway")


def clone(app, client):
    """A new test client sending what `client` sends (its sign-in)."""
    twin = app.test_client()
    twin.environ_base.update(client.environ_base)
    for cookie in client._cookies.values():
        twin._cookies[(cookie.domain, cookie.path, cookie.key)] = cookie
    return twin


def fire(app, client, requests) -> list:
    """Send each request from its own thread, all at once; the responses, in order."""
    barrier = threading.Barrier(len(requests))
    results: list = [None] * len(requests)
    clients = [clone(app, client) for _ in requests]

    def run(i, request):
        barrier.wait()
        try:
            results[i] = request(clients[i])
        except Exception as err:  # noqa: BLE001 - reported below, with its thread
            results[i] = err

    threads = [threading.Thread(target=run, args=(i, r)) for i, r in enumerate(requests)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a request hung"
    errors = [r for r in results if isinstance(r, Exception)]
    assert not errors, errors
    return results


def codes(responses) -> Counter:
    return Counter(r.status_code for r in responses)


def test_twenty_move_to_past_at_once_one_wins(app, client, make, count, pg_only):
    product, _, job = make.live_product()
    body = {"productId": product["id"], "action": "move_to_past"}
    responses = fire(app, client, [lambda c: c.post("/api/products/lifecycle", json=body)] * N)
    assert codes(responses) == {200: 1, 409: N - 1}, [r.get_json() for r in responses]
    assert count("transitions", "action = 'move_to_past'") == 1
    assert count("events", "type = 'product_moved_to_past'") == 1
    assert ok(client.get(f"/api/jobs/{job['id']}"))["job"]["state"] == "OFF"


def test_twenty_identical_job_starts_at_once_one_wins(app, client, make, count, pg_only):
    product, machine = make.product(), make.machine()
    body = {"productId": product["id"], "machineId": machine["id"], "stage": "Cutting"}
    responses = fire(app, client, [lambda c: c.post("/api/jobs", json=body)] * N)
    assert codes(responses) == {201: 1, 409: N - 1}, [r.get_json() for r in responses]
    assert count("jobs", "product_id = :p AND state = 'ON'", p=product["id"]) == 1
    assert count("jobs") == 1
    assert count("events", "type = 'job_started'") == 1


def test_twenty_next_stages_at_once_leave_one_job_on(app, client, make, count, pg_only):
    """Different stages: all may start, one after another, and exactly one stays ON."""
    product, machine, _ = make.live_product()
    requests = [
        lambda c, i=i: c.post(
            "/api/jobs",
            json={"productId": product["id"], "machineId": machine["id"], "stage": f"op {i}"},
        )
        for i in range(N)
    ]
    responses = fire(app, client, requests)
    assert codes(responses) == {201: N}
    assert count("jobs", "product_id = :p AND state = 'ON'", p=product["id"]) == 1
    assert count("jobs", "product_id = :p", p=product["id"]) == N + 1
    latest = ok(client.get(f"/api/products/{product['id']}"))["product"]["latestJobId"]
    assert count("jobs", "id = :j AND state = 'ON'", j=latest) == 1


def test_twenty_dispatches_at_once_record_one_dispatch(app, client, make, count, pg_only):
    product, _, _ = make.live_product()
    body = {"productId": product["id"], "destination": "Export Bay 3"}
    responses = fire(
        app, client, [lambda c: c.post("/api/live-products/dispatchable", json=body)] * N
    )
    assert codes(responses) == {200: 1, 409: N - 1}
    assert count("dispatches") == 1
    assert count("transitions", "reason = 'dispatched'") == 1


def test_twenty_operator_updates_at_once_all_count(app, client, make, pg_only):
    _, _, job = make.live_product()
    url = f"/api/jobs/{job['id']}/updates"
    responses = fire(
        app, client, [lambda c: c.post(url, json={"operator": "a", "quantity": 2})] * N
    )
    assert codes(responses) == {201: N}
    assert ok(client.get(f"/api/jobs/{job['id']}"))["job"]["quantityProduced"] == 2 * N


def test_one_idempotency_key_sent_twenty_times_at_once_writes_once(app, client, make, count):
    """On both backends: the embedded default serves greenlets side by side on one SQLite file,
    and a key's bookkeeping must not trip over SQLite's "database is locked" there (it did)."""
    product, _, _ = make.live_product()
    body = {"productId": product["id"], "action": "move_to_past"}
    headers = {"Idempotency-Key": "all-at-once"}
    responses = fire(
        app,
        client,
        [lambda c: c.post("/api/products/lifecycle", json=body, headers=headers)] * N,
    )
    by_code = codes(responses)
    assert by_code[200] >= 1 and set(by_code) <= {200, 409}, by_code
    # 409s say "still being processed"; every 200 is the same first answer
    bodies = {r.get_data() for r in responses if r.status_code == 200}
    assert len(bodies) == 1
    assert count("transitions", "action = 'move_to_past'") == 1


def test_twenty_products_moved_at_once_each_delta_counts_the_list_after_it(
    app, client, make, db, pg_only
):
    """The dispatch page's count comes from the deltas: taken in event order, each delta's
    count is the number of live products right after it, however the writers raced."""
    products = [make.live_product()[0] for _ in range(N)]
    live_before = ok(client.get("/api/live-products/dispatchable"))["count"]
    requests = [
        (lambda c, pid=p["id"]: c.post("/api/products/lifecycle", json=_past(pid)))
        for p in products
    ]
    assert codes(fire(app, client, requests)) == {200: N}
    counts = db.session.scalars(
        select(Event.payload)
        .where(Event.type == "dispatchable_products_update")
        .order_by(Event.id.desc())
        .limit(N)
    ).all()
    assert [p["count"] for p in reversed(counts)] == list(
        range(live_before - 1, live_before - N - 1, -1)
    )
    assert ok(client.get("/api/live-products/dispatchable"))["count"] == live_before - N
    # and their times rise with their ids (what a replay shows, and what the prune cuts by)
    stamps = db.session.scalars(select(Event.created_at).order_by(Event.id)).all()
    assert stamps == sorted(stamps)


def _past(product_id: int) -> dict:
    return {"productId": product_id, "action": "move_to_past"}


@pytest.mark.parametrize("reactivated, status", [(0, "idle"), (N // 2, "running")])
def test_products_on_one_machine_change_at_once_and_the_machine_status_is_right(
    app, client, make, db, pg_only, reactivated, status
):
    """A machine runs while any of its jobs is ON. N products on one machine change together:
    all go past (it ends idle), or half go past while the other half come back (it runs). Each
    transition must see the others' committed jobs, not a snapshot from before them."""
    machine = make.machine()
    products = [make.product() for _ in range(N)]
    for p in products:
        make.job(p["id"], machine["id"])
    for p in products[:reactivated]:
        ok(client.post("/api/products/lifecycle", json=_past(p["id"])))

    def change(p, action):
        body = {"productId": p["id"], "action": action}
        return lambda c: c.post("/api/products/lifecycle", json=body)

    requests = [change(p, "reactivate") for p in products[:reactivated]]
    requests += [change(p, "move_to_past") for p in products[reactivated:]]
    before = db.session.scalar(select(func.max(Event.id)))
    db.session.remove()
    assert codes(fire(app, client, requests)) == {200: N}
    assert ok(client.get(f"/api/machines/{machine['id']}"))["machine"]["status"] == status
    # Its status events tell the same story, change after change: each one starts where the
    # one before it ended (changes written together in one transaction too), and the last ends
    # where the machine is.
    told = [
        (e["previousStatus"], e["status"])
        for e in db.session.scalars(
            select(Event.payload)
            .where(Event.type == "machine_status_changed", Event.id > before)
            .order_by(Event.id)
        )
        if e["machineId"] == machine["id"]
    ]
    chain = ["running"]
    for previous, now in told:
        assert previous == chain[-1] != now, told
        chain.append(now)
    assert chain[-1] == status, told


def test_output_logged_during_a_machine_rename_carries_the_new_name(
    pg_only, app, client, make, probe_engine
):
    """Logging output locks the product; renaming a machine locks the machine. Both send the
    product's list item, so the one that commits second must have read after the first: else
    the list (its stream deltas, and each worker's kept copy) ends with the old name or the old
    quantity."""
    product, machine, job = make.live_product()
    with probe_engine.connect() as rename:  # a rename in progress: its row lock held
        rename = rename.execution_options(isolation_level="READ COMMITTED")
        tx = rename.begin()
        rename.execute(
            text("UPDATE machines SET name = 'Renamed' WHERE id = :id"), {"id": machine["id"]}
        )
        logged: list = []
        worker = threading.Thread(
            target=lambda: logged.append(
                clone(app, client).post(
                    f"/api/jobs/{job['id']}/updates", json={"operator": "a", "quantity": 3}
                )
            )
        )
        worker.start()
        time.sleep(0.5)
        waited = worker.is_alive()
        tx.commit()
    worker.join(timeout=10)
    assert waited, "the output was written while the rename was still in progress"
    assert logged and logged[0].status_code == 201, logged
    with app.app_context():
        payload = db.session.scalars(
            select(Event.payload)
            .where(Event.type == "dispatchable_products_update")
            .order_by(Event.id.desc())
            .limit(1)
        ).one()
        db.session.remove()
    (item,) = payload["added"]
    assert (item["id"], item["process"], item["quantityProduced"]) == (product["id"], "Renamed", 3)


def test_a_product_created_while_another_commits_first_reaches_the_dashboard(
    pg_only, app, client, probe_engine
):
    """Two products created at once: the one that drew the smaller id commits last. The
    dashboard's ETag must still change when it does, or every GET (a revalidation or not) goes
    on answering the figures built in between, one product short, until the next event."""
    total = lambda: ok(client.get("/api/dashboard/status"))["dashboard"]["stats"]["totalProducts"]  # noqa: E731
    assert total() == 0
    with probe_engine.connect() as other:  # a create of code SLOW in progress, not committed
        other = other.execution_options(isolation_level="READ COMMITTED")
        tx = other.begin()
        other.execute(
            text("INSERT INTO products (name, code, created_at) VALUES ('Held', 'SLOW', now())")
        )
        created: list = []
        # The app's create of the same code draws its id, then waits on the unique index for
        # the transaction above to end.
        slow = threading.Thread(
            target=lambda: created.append(
                clone(app, client).post("/api/products", json={"name": "Slow", "code": "SLOW"})
            )
        )
        slow.start()
        assert waits_for_a_lock(probe_engine, "INSERT INTO products"), (
            "the create did not wait for the transaction holding its code"
        )
        # Meanwhile another product is created, with a greater id, and committed first.
        fast = ok(client.post("/api/products", json={"name": "Fast", "code": "FAST"}), 201)
        assert total() == 1
        tx.rollback()  # the held create gives up: the app's goes on and commits
    slow.join(timeout=10)
    assert created and created[0].status_code == 201, created
    assert created[0].get_json()["product"]["id"] < fast["product"]["id"]
    assert total() == 2


def waits_for_a_lock(engine, statement: str, timeout: float = 10) -> bool:
    """Whether a backend comes to wait on a lock while running `statement` (its start)."""
    deadline = time.monotonic() + timeout
    with engine.connect() as conn:
        while time.monotonic() < deadline:
            waiting = conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE wait_event_type = 'Lock' AND query LIKE :start"
                ),
                {"start": statement + "%"},
            ).scalar()
            if waiting:
                return True
            time.sleep(0.02)
    return False
