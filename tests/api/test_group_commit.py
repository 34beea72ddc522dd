"""Group commit (app.common.groups): the changes of requests that arrive while another is being
written go into the next transaction together, and each request still gets its own answer."""

from __future__ import annotations

import threading

import pytest

from app.common.groups import GroupCommit


class Recorder:
    """A `run` that records its groups; the first group waits until told to finish, so that the
    changes submitted meanwhile queue up behind it."""

    def __init__(self, fail_on=None):
        self.groups: list[list] = []
        self.release = threading.Event()
        self.started = threading.Event()
        self.fail_on = fail_on

    def __call__(self, changes: list) -> list:
        self.groups.append(list(changes))
        if len(self.groups) == 1:
            self.started.set()
            assert self.release.wait(10)
        if self.fail_on in changes:
            raise RuntimeError(f"the database refused group {len(self.groups)}")
        return [ValueError(f"bad {c}") if c.startswith("bad") else c.upper() for c in changes]


def submit_all(group: GroupCommit, run: Recorder, first: tuple, queued: list[tuple]) -> dict:
    """`first` starts a group; `queued` arrive (in order) while it is written; every answer."""
    answers: dict = {}

    def one(key, change):
        try:
            answers[change] = group.submit(key, change)
        except BaseException as err:  # noqa: BLE001 - the answer under test
            answers[change] = err

    leader = threading.Thread(target=one, args=first)
    leader.start()
    assert run.started.wait(10)
    threads = []
    for key, change in queued:
        t = threading.Thread(target=one, args=(key, change))
        t.start()
        threads.append(t)
        _wait_queued(group, len(threads))
    run.release.set()
    for t in (leader, *threads):
        t.join(10)
    assert not any(t.is_alive() for t in (leader, *threads)), "a request never got its answer"
    return answers


def _wait_queued(group: GroupCommit, n: int) -> None:
    for _ in range(1000):
        with group._mutex:
            if len(group._queue) >= n:
                return
        threading.Event().wait(0.005)
    raise AssertionError(f"{n} changes never queued")


def test_changes_that_arrive_meanwhile_are_written_together_in_order():
    run = Recorder()
    group = GroupCommit(run)
    answers = submit_all(group, run, (1, "a"), [(2, "b"), (3, "c"), (4, "d")])
    assert run.groups == [["a"], ["b", "c", "d"]]
    assert answers == {"a": "A", "b": "B", "c": "C", "d": "D"}


def test_two_changes_of_one_product_never_share_a_group():
    run = Recorder()
    group = GroupCommit(run)
    answers = submit_all(group, run, (1, "a"), [(2, "b"), (2, "b2"), (3, "c")])
    assert run.groups == [["a"], ["b", "c"], ["b2"]]
    assert answers["b2"] == "B2"


def test_a_change_that_breaks_a_rule_fails_alone():
    run = Recorder()
    group = GroupCommit(run)
    answers = submit_all(group, run, (1, "a"), [(2, "bad-b"), (3, "c")])
    assert isinstance(answers["bad-b"], ValueError)
    assert answers["c"] == "C"


def test_a_failed_group_fails_each_of_its_changes_and_the_next_group_runs():
    run = Recorder(fail_on="c")
    group = GroupCommit(run)
    answers = submit_all(group, run, (1, "a"), [(2, "b"), (3, "c")])
    assert [str(answers[c]) for c in ("b", "c")] == ["the database refused group 2"] * 2
    assert group.submit(4, "d") == "D"  # nobody holds on to the lead
    assert run.groups[-1] == ["d"]


def test_a_leader_killed_while_writing_hands_its_followers_on():
    """A greenlet killed in the middle of its group (a worker's graceful timeout) must not leave
    the requests queued behind it waiting forever."""
    run = Recorder()
    group = GroupCommit(run)

    def killed(changes):
        if changes == ["a"]:
            run.started.set()
            assert run.release.wait(10)
            raise KeyboardInterrupt  # a BaseException, as GreenletExit is
        return run(changes)

    group._run = killed
    answers = submit_all(group, run, (1, "a"), [(2, "b")])
    assert isinstance(answers["a"], KeyboardInterrupt)
    assert answers["b"] == "B"


@pytest.mark.parametrize("concurrent", [1, 8])
def test_every_change_gets_its_own_answer_under_load(concurrent):
    group = GroupCommit(lambda changes: [c * 2 for c in changes])
    answers: dict = {}

    def worker(i):
        for n in range(i * 100, i * 100 + 50):
            answers[n] = group.submit(n, n)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrent)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert answers == {n: 2 * n for i in range(concurrent) for n in range(i * 100, i * 100 + 50)}


def test_changes_written_together_are_announced_one_after_the_other(app, make, db, backend):
    """One machine, two products: the live one goes past (the machine is idle) and the past one
    comes back (it runs again). Written in one transaction, in that order, they are announced
    as those two steps, and each response's item and counts are those of its own step."""
    if backend == "sqlite":
        pytest.skip("changes are written in groups on PostgreSQL")
    from sqlalchemy import func, select

    from app.lifecycle import service
    from app.models import Event

    machine = make.machine()
    past, live = make.product(), make.product()  # ids the other way round from the changes
    make.job(past["id"], machine["id"])
    assert make.action(past["id"], "move_to_past").status_code == 200
    make.job(live["id"], machine["id"])
    before = db.session.scalar(select(func.max(Event.id)))
    live_count = make.client.get("/api/live-products/dispatchable").get_json()["count"]
    db.session.remove()

    with app.app_context():
        results = service._change_group(
            [
                {"product_id": live["id"], "action": "move_to_past", "actor": "t"},
                {"product_id": 10**9, "action": "reactivate", "actor": "t"},  # no such product
                {"product_id": past["id"], "action": "reactivate", "actor": "t"},
            ]
        )
    assert [type(r).__name__ for r in results] == ["tuple", "NotFound", "tuple"]
    assert [r[0].new_state for r in (results[0], results[2])] == ["OFF", "ON"]
    # the audit trail's ids run in the order the changes came, as their events do
    assert results[0][0].transition["id"] < results[2][0].transition["id"]

    events = db.session.execute(
        select(Event.type, Event.payload).where(Event.id > before).order_by(Event.id)
    ).all()
    told = [(t, p.get("previousStatus"), p.get("status"), p.get("count")) for t, p in events]
    assert told == [
        ("product_moved_to_past", None, None, None),
        ("machine_status_changed", "running", "idle", None),
        ("dispatchable_products_update", None, None, live_count - 1),
        ("product_reactivated", None, None, None),
        ("machine_status_changed", "idle", "running", None),
        ("dispatchable_products_update", None, None, live_count),
    ]
    machine_now = make.client.get(f"/api/machines/{machine['id']}").get_json()["machine"]
    assert machine_now["status"] == "running"


def test_a_change_that_fails_unexpectedly_fails_alone(app, make, db, backend, monkeypatch):
    """Something other than a rule going wrong with one change of a group (a bug, a value the
    database refuses) rolls the group back; the changes are then written one by one, so the
    others are written and only that one fails."""
    if backend == "sqlite":
        pytest.skip("changes are written in groups on PostgreSQL")
    from app.lifecycle import service
    from app.models import Product

    products = [make.live_product()[0]["id"] for _ in range(3)]
    apply = service._apply

    def broken_for_the_second(row=None, **change):
        if change["product_id"] == products[1]:
            raise RuntimeError("a bug in one change")
        return apply(row, **change)

    monkeypatch.setattr(service, "_apply", broken_for_the_second)
    db.session.remove()
    with app.app_context():
        results = service._change_group(
            [{"product_id": p, "action": "move_to_past", "actor": "t"} for p in products]
        )
    assert [type(r).__name__ for r in results] == ["tuple", "RuntimeError", "tuple"]
    states = {p: db.session.get(Product, p).state for p in products}
    assert states == {products[0]: "OFF", products[1]: "ON", products[2]: "OFF"}


def test_a_product_locked_elsewhere_gives_a_503_in_time_and_others_go_on(
    database_url, backend, app, make, db
):
    """A row lock held elsewhere (an open psql session, say) must not stall the transitions of
    the worker behind it: after DB_LOCK_TIMEOUT_SECONDS the one that waits answers 503, and the
    next one, on another product, is written."""
    if backend == "sqlite":
        pytest.skip("row locks are PostgreSQL's")
    import time

    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    from app import create_app
    from app.models import Product
    from config import TestConfig

    stuck, _, _ = make.live_product()
    free, _, _ = make.live_product()
    quick = create_app(
        TestConfig, SQLALCHEMY_DATABASE_URI=database_url, DB_LOCK_TIMEOUT_SECONDS=0.3
    )
    web = quick.test_client()
    web.environ_base.update(make.client.environ_base)
    holder = create_engine(db.engine.url, poolclass=NullPool)
    with holder.connect() as conn:
        conn.execute(text("SELECT id FROM products WHERE id = :p FOR UPDATE"), {"p": stuck["id"]})
        started = time.monotonic()
        body = {"productId": stuck["id"], "action": "move_to_past"}
        refused = web.post("/api/products/lifecycle", json=body)
        waited = time.monotonic() - started
        assert refused.status_code == 503, refused.get_json()
        assert "did not confirm" in refused.get_json()["error"]
        assert 0.25 < waited < 5
        ok = web.post(
            "/api/products/lifecycle", json={"productId": free["id"], "action": "move_to_past"}
        )
        assert ok.status_code == 200
        conn.rollback()
    holder.dispose()
    assert db.session.get(Product, stuck["id"]).state == "ON"


def test_each_change_of_a_group_is_logged_for_its_own_request(app, make, db, backend, caplog):
    """The leader writes the whole group, but each transition's log line names the request
    that asked for it, so an operator can follow one request to its transition."""
    if backend == "sqlite":
        pytest.skip("changes are written in groups on PostgreSQL")
    import logging

    from app.lifecycle import service

    products = [make.live_product()[0]["id"] for _ in range(2)]
    db.session.remove()
    changes = [
        {"product_id": p, "action": "move_to_past", "actor": "t", "request_id": f"req-{p}"}
        for p in products
    ]
    with caplog.at_level(logging.INFO, logger="trackopz.transitions"), app.app_context():
        service._change_group(changes)
    logged = {r.product: r.request_id for r in caplog.records if r.name == "trackopz.transitions"}
    assert logged == {p: f"req-{p}" for p in products}


def test_the_followers_of_a_killed_leader_get_a_503():
    """A follower whose change was in the killed leader's group cannot know whether it was
    written: its request answers 503 (LeaderLost), not a dropped connection."""
    from app.common.groups import LeaderLost

    run = Recorder()

    def killed(changes):
        if changes == ["b", "c"]:
            raise KeyboardInterrupt  # a BaseException, as GreenletExit is
        return run(changes)

    group = GroupCommit(killed)
    answers = submit_all(group, run, (1, "a"), [(2, "b"), (3, "c")])
    assert answers["a"] == "A"
    assert isinstance(answers["b"], KeyboardInterrupt)  # the leader: what stopped it
    assert isinstance(answers["c"], LeaderLost) and answers["c"].status == 503
    assert group.submit(4, "d") == "D"
