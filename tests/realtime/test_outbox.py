"""The outbox and the broker, in-process: ids commit in order without deadlocks, a publish never
loses or breaks a committed write."""

from __future__ import annotations

import threading
import time

import gevent
import pytest
from sqlalchemy import func, select, text

from app.extensions import broker, db
from app.lifecycle import service
from app.models import Event
from app.realtime.broker import Broker
from app.realtime.outbox import EVENT_LOCK_KEY


def _waiting_for_event_lock(app) -> int:
    with app.app_context():
        try:
            return db.session.scalar(
                text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
                    "AND objid = :key"
                ),
                {"key": EVENT_LOCK_KEY},
            )
        finally:
            db.session.remove()


def _wait_until(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_a_transition_and_a_machine_rename_do_not_deadlock(app, make, backend, monkeypatch):
    """move_to_past updates the product's machine; a rename locks that machine and emits an event.

    Were the event lock taken at the first event (before the machine's row), the transition
    could hold it while waiting for the machine, and the rename hold the machine while waiting
    for it: Postgres would kill one of them. The lock is taken last, so both commit."""
    if backend != "postgres":
        pytest.skip("the event lock is Postgres's; SQLite serializes writers")
    product, machine, _ = make.live_product()
    monkeypatch.setattr(broker, "publish", lambda messages: None)  # threads: no gevent hub here

    with app.app_context():
        hold = db.engine.connect()
        hold.execute(text("SELECT pg_advisory_lock(:key)"), {"key": EVENT_LOCK_KEY})
    errors: list[BaseException] = []

    def run(fn, **kw):
        def target():
            with app.app_context():
                try:
                    fn(**kw)
                except BaseException as err:  # noqa: BLE001
                    errors.append(err)
                finally:
                    db.session.remove()

        thread = threading.Thread(target=target)
        thread.start()
        return thread

    try:
        # The transition queues for the event lock first, then the rename.
        t1 = run(service.change_state, product_id=product["id"], action="move_to_past")
        assert _wait_until(lambda: _waiting_for_event_lock(app) >= 1 or not t1.is_alive())
        t2 = run(service.update_machine, machine_id=machine["id"], name="Lathe renamed")
        time.sleep(0.5)  # the rename reaches its wait (for the machine row, or the event lock)
    finally:
        with app.app_context():
            hold.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": EVENT_LOCK_KEY})
            hold.close()
    t1.join(15)
    t2.join(15)
    assert not errors, errors
    with app.app_context():
        types = db.session.scalars(select(Event.type).order_by(Event.id)).all()
        db.session.remove()
    assert "product_moved_to_past" in types
    assert types.count("dispatchable_products_update") >= 2


def test_a_rolled_back_transaction_leaves_no_event(app, make, db):
    product, _, _ = make.live_product()
    before = db.session.scalar(select(Event.id).order_by(Event.id.desc()).limit(1))
    published = []
    original = broker.publish
    broker.publish = lambda messages: published.extend(messages)
    try:
        from app.realtime import outbox

        service.begin_write()
        outbox.emit("job_started", {"productId": product["id"]})
        db.session.rollback()
        db.session.commit()  # a later commit must not carry the dropped event
    finally:
        broker.publish = original
    after = db.session.scalar(select(Event.id).order_by(Event.id.desc()).limit(1))
    assert after == before
    assert published == []


def test_events_commit_and_publish_together_after_the_commit(app, make, db):
    product, _, _ = make.live_product()
    seen = []

    def publish(messages):
        # Published after the commit: another connection already sees the rows.
        with db.engine.connect() as other:
            ids = other.execute(
                select(Event.id).where(Event.id.in_([m[0] for m in messages]))
            ).scalars()
            seen.append((sorted(m[0] for m in messages), sorted(ids)))

    original = broker.publish
    broker.publish = publish
    try:
        assert make.action(product["id"], "move_to_past").status_code == 200
    finally:
        broker.publish = original
    ((published, visible),) = seen
    assert published == visible and len(published) == 3


class FakePipeline:
    def __init__(self, redis):
        self.redis = redis
        self.commands = []

    def publish(self, channel, message):
        self.commands.append(message)

    def execute(self):
        gevent.sleep(0.01)  # the network: other greenlets run meanwhile
        if self.redis.down:
            import redis

            raise redis.ConnectionError("down")
        self.redis.published.extend(self.commands)


class FakeRedis:
    def __init__(self):
        self.published: list[str] = []
        self.down = False

    def pipeline(self, transaction=False):
        return FakePipeline(self)


def _broker(fake) -> Broker:
    b = Broker()
    b.redis = fake
    return b


def test_concurrent_publishes_each_go_out_once_in_order():
    """Greenlets that commit at once publish at once: none may pop another's messages."""
    fake = FakeRedis()
    b = _broker(fake)
    greenlets = [gevent.spawn(b.publish, [(i, f"e{i}")]) for i in range(1, 21)]
    gevent.joinall(greenlets, raise_error=True)
    gevent.sleep(0.2)
    assert [int(m.split("|")[0]) for m in fake.published] == list(range(1, 21))
    assert not b.unpublished


def test_publishes_while_redis_is_down_wait_and_go_out_in_order():
    fake = FakeRedis()
    b = _broker(fake)
    b.publish([(1, "a")])
    fake.down = True
    for i in range(2, 8):
        started = time.monotonic()
        b.publish([(i, "x")])
        if i > 2:  # after the first failure no publish waits on Redis
            assert time.monotonic() - started < 0.005
    assert list(e for e, _ in b.unpublished) == list(range(2, 8))
    fake.down = False
    deadline = time.monotonic() + 5
    while b.unpublished and time.monotonic() < deadline:
        gevent.sleep(0.05)
    assert [int(m.split("|")[0]) for m in fake.published] == list(range(1, 8))
    assert b.healthy


def test_a_pool_timeout_is_a_503_not_a_500(app, client, monkeypatch):
    """No connection free in time is an overload the client may retry, not a bug."""
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    from app.realtime.outbox import is_unavailable_error

    assert is_unavailable_error(PoolTimeout("QueuePool limit of size 10 overflow 10 reached"))

    def exhausted(*args, **kwargs):
        raise PoolTimeout("QueuePool limit of size 10 overflow 10 reached")

    monkeypatch.setattr(service, "dispatchable_json", exhausted)
    response = client.get("/api/live-products/dispatchable")
    assert response.status_code == 503
    assert response.get_json()["success"] is False


def test_a_connection_lost_in_the_commits_round_trip_is_a_503_and_writes_nothing(
    app, client, make, db, backend, monkeypatch
):
    """On PostgreSQL a transition's writes, its events and its COMMIT go in one round trip: the
    database dropping the connection right then answers 503, leaves the product, its jobs, its
    audit trail and the events as they were, publishes nothing, and the next request works."""
    if backend == "sqlite":
        pytest.skip("the commit's round trip is PostgreSQL's")
    from app.common import roundtrip
    from app.models import Product, Transition

    product, _, _ = make.live_product()
    transitions = db.session.scalar(select(func.count()).select_from(Transition))
    newest = db.session.scalar(select(func.max(Event.id)))
    db.session.remove()
    published = []
    monkeypatch.setattr(broker, "publish", lambda messages: published.extend(messages))
    send = roundtrip.send

    def dropped_before_the_commit(conn, statements, *, commit=False, **options):
        if commit:
            with db.engine.connect() as other:
                other.execute(
                    text("SELECT pg_terminate_backend(:pid, 5000)"),
                    {"pid": conn.connection.driver_connection.info.backend_pid},
                )
        return send(conn, statements, commit=commit, **options)

    monkeypatch.setattr(roundtrip, "send", dropped_before_the_commit)
    response = make.action(product["id"], "move_to_past")
    assert response.status_code == 503, response.get_json()
    assert response.get_json()["success"] is False
    assert published == []
    assert db.session.get(Product, product["id"]).state == "ON"
    assert db.session.scalar(select(func.count()).select_from(Transition)) == transitions
    assert db.session.scalar(select(func.max(Event.id))) == newest
    db.session.remove()

    monkeypatch.setattr(roundtrip, "send", send)
    assert make.action(product["id"], "move_to_past").status_code == 200
    assert db.session.get(Product, product["id"]).state == "OFF"
    assert len(published) == 3


def test_after_the_database_drops_every_connection_the_next_write_works(
    app, client, make, db, backend
):
    """What a restart of PostgreSQL looks like to the app: every pooled connection dead. The
    pool does not ping on checkout, so the sign-in's read meets a dead one; it tries again on a
    new connection, the pool has dropped the other dead ones meanwhile, and the user sees no
    error at all."""
    if backend == "sqlite":
        pytest.skip("SQLite has no connections to drop")
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    product, _, _ = make.live_product()  # the pool now holds connections
    db.session.remove()
    admin = create_engine(db.engine.url, poolclass=NullPool)
    with admin.connect() as conn:
        dropped = conn.execute(
            text(
                "SELECT count(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ).scalar_one()
    admin.dispose()
    assert dropped >= 1
    assert make.action(product["id"], "move_to_past").status_code == 200
    assert make.action(product["id"], "reactivate").status_code == 200
    assert client.get(f"/api/products/lifecycle?productId={product['id']}").status_code == 200


def test_a_write_whose_connection_died_alone_is_sent_again_on_a_new_one(app, make, db, backend):
    """The sign-in's read gets a live connection and the transition's first round trip a dead
    one (dropped alone: a proxy's idle timeout, a killed backend). Nothing of that round trip
    ran, so it is sent again on a new connection, and the user gets their 200."""
    if backend == "sqlite":
        pytest.skip("SQLite has no connections to drop")
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    product, _, _ = make.live_product()
    db.session.remove()
    db.engine.dispose()
    # The pool lends its connections oldest-returned first: the sign-in gets `first`, and the
    # transition, which checks one out while the sign-in's is back in the pool, gets `second`.
    first, second = db.engine.raw_connection(), db.engine.raw_connection()
    doomed = second.driver_connection.info.backend_pid
    first.close()
    second.close()
    admin = create_engine(db.engine.url, poolclass=NullPool)
    with admin.connect() as conn:
        conn.execute(text("SELECT pg_terminate_backend(:pid, 5000)"), {"pid": doomed})
    admin.dispose()
    answer = make.action(product["id"], "move_to_past")
    assert answer.status_code == 200, answer.get_json()
    assert [t["action"] for t in answer.get_json()["lifecycle"]["transitions"]][-1:] == [
        "move_to_past"
    ]


def test_a_pooled_connection_left_idle_and_dropped_is_replaced_before_it_is_lent(
    database_url, backend, app
):
    """A connection that sat in the pool (a firewall's or the server's idle timeout may have
    dropped it) is pinged before it is lent, and a dead one replaced: even /readyz's database
    check, which nothing retries, passes after every connection was dropped."""
    if backend == "sqlite":
        pytest.skip("SQLite has no connections to drop")
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    from app import create_app
    from config import TestConfig

    idle = create_app(
        TestConfig, SQLALCHEMY_DATABASE_URI=database_url, DB_PING_AFTER_IDLE_SECONDS=0
    )
    web = idle.test_client()
    assert _database_check(web) == "ok"  # the pool now holds a connection
    with idle.app_context():
        admin = create_engine(db.engine.url, poolclass=NullPool)
    with admin.connect() as conn:
        conn.execute(
            text(
                "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )
    admin.dispose()
    assert _database_check(web) == "ok"


def _database_check(web) -> str:
    return web.get("/readyz").get_json()["checks"]["database"]
