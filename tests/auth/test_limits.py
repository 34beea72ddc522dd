"""Abuse protection: sign-in attempts, writes per token, open streams per user."""

from __future__ import annotations

import secrets
import time

import pytest

from app import create_app
from config import TestConfig
from tests.auth.conftest import PASSWORD, assert_envelope, csrf_of, sign_in
from tests.conftest import authed_client, make_user
from tests.support import services

STREAM = "/api/live-products/dispatchable/stream"


@pytest.fixture(params=["sqlite"])
def backend(request) -> str:
    """Nothing here depends on the database: SQLite only, to keep the suite fast."""
    return request.param


def _retry_after(response) -> int:
    value = int(response.headers["Retry-After"])
    assert 0 < value <= 3600
    return value


def _from(app, address: str):
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return client


# --- sign-in ----------------------------------------------------------------------------------


def test_sign_in_attempts_per_user_are_limited(app):
    """LOGIN_RATE_LIMIT_PER_USER failures for one name, from anywhere: then 429 for that name."""
    make_user(app, "ana", "operator", password=PASSWORD)
    make_user(app, "ravi", "dispatcher", password=PASSWORD)
    limit = int(app.config["LOGIN_RATE_LIMIT_PER_USER"].split()[0])
    for i in range(limit):
        # Spread over addresses: the per-user limit holds whatever the address.
        client = _from(app, f"10.0.0.{i + 1}")
        assert sign_in(client, "ana", "wrong password").status_code == 401
    client = _from(app, "10.0.1.1")
    refused = sign_in(client, "ANA ", "wrong password")  # the same name, however spelled
    assert refused.status_code == 429
    _retry_after(refused)
    assert b"Too many sign-in attempts" in refused.data
    # Even the right password waits: that is what stops the guessing.
    assert sign_in(client, "ana").status_code == 429
    assert_envelope(client.get("/api/me"), 401)
    # Another user signs in from the same address.
    assert sign_in(client, "ravi").status_code == 302


def test_successful_sign_ins_do_not_count(app):
    make_user(app, "ana", "operator", password=PASSWORD)
    limit = int(app.config["LOGIN_RATE_LIMIT_PER_USER"].split()[0])
    client = app.test_client()
    for _ in range(limit + 1):
        assert sign_in(client, "ana").status_code == 302


def test_sign_in_attempts_per_address_are_limited(app):
    app.config["LOGIN_RATE_LIMIT_PER_ADDRESS"] = "3 per minute"
    make_user(app, "ana", "operator", password=PASSWORD)
    attacker = _from(app, "203.0.113.9")
    for name in ("a1", "a2", "a3"):  # a different name each time: the per-user limit never trips
        assert sign_in(attacker, name, "guess").status_code == 401
    refused = sign_in(attacker, "a4", "guess")
    assert refused.status_code == 429
    _retry_after(refused)
    # Someone elsewhere is not affected.
    other = _from(app, "198.51.100.7")
    assert sign_in(other, "ana").status_code == 302


def test_behind_a_trusted_proxy_the_limit_is_per_client_address(database_url, app):
    """nginx in front (TRUSTED_PROXIES=1): the address is the one nginx saw, X-Forwarded-For."""
    proxied = create_app(
        TestConfig,
        SQLALCHEMY_DATABASE_URI=database_url,
        TRUSTED_PROXIES=1,
        LOGIN_RATE_LIMIT_PER_ADDRESS="2 per minute",
    )
    make_user(proxied, "ana", "operator", password=PASSWORD)
    attacker = _from(proxied, "127.0.0.1")  # every request comes from nginx
    attacker.environ_base["HTTP_X_FORWARDED_FOR"] = "203.0.113.9"
    for name in ("a1", "a2"):
        assert sign_in(attacker, name, "guess").status_code == 401
    assert sign_in(attacker, "a3", "guess").status_code == 429
    other = _from(proxied, "127.0.0.1")
    other.environ_base["HTTP_X_FORWARDED_FOR"] = "198.51.100.7"
    assert sign_in(other, "ana").status_code == 302


def test_without_a_trusted_proxy_x_forwarded_for_changes_nothing(app):
    """Else an attacker would dodge the per-address limit with a new made-up address each time."""
    app.config["LOGIN_RATE_LIMIT_PER_ADDRESS"] = "2 per minute"
    attacker = _from(app, "203.0.113.9")
    for i, name in enumerate(("a1", "a2", "a3")):
        attacker.environ_base["HTTP_X_FORWARDED_FOR"] = f"10.9.9.{i}"
        status = sign_in(attacker, name, "guess").status_code
        assert status == (429 if i == 2 else 401)


# --- writes per token -------------------------------------------------------------------------


@pytest.fixture
def limited_app(app, database_url):
    """The suite's database (migrated and emptied by `app`), with a low write limit."""
    return create_app(
        TestConfig, SQLALCHEMY_DATABASE_URI=database_url, WRITE_RATE_LIMIT="3 per minute"
    )


def test_writes_per_token_are_limited(limited_app):
    script = authed_client(limited_app, "mes", "manager")
    other = authed_client(limited_app, "mes2", "manager")
    for i in range(3):
        response = script.post("/api/machines", json={"name": "Lathe", "code": f"L-{i}"})
        assert response.status_code == 201
    refused = script.post("/api/machines", json={"name": "Lathe", "code": "L-9"})
    body = assert_envelope(refused, 429)
    assert "3 per 1 minute" in body["error"]
    _retry_after(refused)
    # A refused write did nothing; reads go on; another token has its own budget.
    codes = [m["code"] for m in script.get("/api/machines").get_json()["machines"]]
    assert "L-9" not in codes and len(codes) == 3
    assert other.post("/api/machines", json={"name": "Lathe", "code": "L-10"}).status_code == 201
    # A failed write counts too (a script cannot probe for free).
    assert_envelope(script.patch("/api/machines/1", json={}), 429)


def test_writes_of_a_browser_session_are_limited(limited_app):
    make_user(limited_app, "meera", "manager", password=PASSWORD)
    browser = limited_app.test_client()
    assert sign_in(browser, "meera").status_code == 302
    headers = {"X-CSRF-Token": csrf_of(browser)}
    for i in range(3):
        body = {"name": "Lathe", "code": f"L-{i}"}
        assert browser.post("/api/machines", json=body, headers=headers).status_code == 201
    refused = browser.post("/api/machines", json={"name": "x", "code": "y"}, headers=headers)
    assert_envelope(refused, 429)


# --- open streams per user --------------------------------------------------------------------


@pytest.fixture
def stream_app(app):
    """In-process counting (no Redis), whatever REDIS_URL says."""
    from app.extensions import broker, hub

    app.config["REDIS_URL"] = None
    broker.init_app(app, hub)
    yield app
    hub.stop() if hasattr(hub, "stop") else None


def _open(client, **kw):
    """Open a stream and start it (so it holds its place until closed)."""
    response = client.get(STREAM, buffered=False, **kw)
    if response.status_code == 200:
        assert b"connection_established" in next(response.response)
    return response


def test_the_stream_cap_per_user(stream_app):
    cap = stream_app.config["STREAMS_PER_USER"]
    assert cap == 20
    viewer = authed_client(stream_app, "ana", "operator")
    other = authed_client(stream_app, "ravi", "operator")
    streams = []
    try:
        for _ in range(cap):
            response = _open(viewer)
            assert response.status_code == 200
            streams.append(response)
        refused = _open(viewer)
        body = assert_envelope(refused, 429)
        assert str(cap) in body["error"]
        _retry_after(refused)
        # Another user is not affected.
        theirs = _open(other)
        assert theirs.status_code == 200
        streams.append(theirs)
        # Closing one gives its place back.
        streams.pop(0).close()
        again = _open(viewer)
        assert again.status_code == 200
        streams.append(again)
        assert _open(viewer).status_code == 429
    finally:
        for response in streams:
            response.close()
    # All closed: the whole cap is free again.
    for _ in range(cap):
        response = _open(viewer)
        assert response.status_code == 200
        response.close()


def test_a_stream_never_started_does_not_hold_its_place(stream_app):
    """A response the server never iterated (the client left at once) frees its place anyway."""
    import gc

    stream_app.config["STREAMS_PER_USER"] = 2
    viewer = authed_client(stream_app, "ana", "operator")
    for _ in range(3):
        response = viewer.get(STREAM, buffered=False)
        assert response.status_code == 200
        response.close()
        del response
        gc.collect()


def test_the_stream_refuses_an_anonymous_client(stream_app, anon_client):
    body = assert_envelope(anon_client.get(STREAM), 401)
    assert "Sign in" in body["error"]
    revoked = authed_client(stream_app, "gone", "operator")
    boss = authed_client(stream_app, "boss2", "manager")
    token_id = boss.get("/api/tokens").get_json()["tokens"][-1]["id"]
    assert boss.delete(f"/api/tokens/{token_id}").status_code == 200
    assert_envelope(revoked.get(STREAM), 401)
    # No token in the URL either.
    assert_envelope(anon_client.get(STREAM + "?token=tpz_x&access_token=tpz_x"), 401)


def _stream_lease(app, socket_end, **headers):
    """What the stream view does first, with `socket_end` as the connection's socket."""
    from app.auth import streams

    environ = {"gunicorn.socket": socket_end}
    with app.test_request_context(STREAM, headers=headers, environ_base=environ):
        assert app.preprocess_request() is None  # signed in
        return streams.acquire()


def _hung_up(sock) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False


def test_open_streams_of_a_revoked_token_or_a_deactivated_user_are_hung_up(stream_app, db):
    """A stream is let in when it opens; its worker checks again and hangs up those no longer
    let in (every STREAM_AUTH_RECHECK_SECONDS; here by hand)."""
    import socket

    from app.auth.streams import cap
    from app.models import User
    from tests.auth.conftest import cookie_client

    boss = authed_client(stream_app, "boss2", "manager")
    _, doomed = make_user(stream_app, "mes", "operator")
    _, kept = make_user(stream_app, "ana", "operator")
    browser = cookie_client(stream_app, "olga", "operator")
    session_cookie = browser.get_cookie("trackopz_session").value
    pairs = [socket.socketpair() for _ in range(3)]
    leases = [
        _stream_lease(stream_app, pairs[0][0], Authorization=f"Bearer {doomed}"),
        _stream_lease(stream_app, pairs[1][0], Authorization=f"Bearer {kept}"),
        _stream_lease(stream_app, pairs[2][0], Cookie=f"trackopz_session={session_cookie}"),
    ]
    try:
        state = cap()
        assert state.recheck() == 0
        assert not any(_hung_up(far) for _, far in pairs)

        tokens = boss.get("/api/tokens").get_json()["tokens"]
        (mes,) = [t for t in tokens if t["userName"] == "mes"]
        assert boss.delete(f"/api/tokens/{mes['id']}").status_code == 200
        assert state.recheck() == 1
        assert [_hung_up(far) for _, far in pairs] == [True, False, False]

        db.session.execute(db.update(User).where(User.name == "olga").values(active=False))
        db.session.commit()
        assert state.recheck() == 1
        assert _hung_up(pairs[2][1]) and not _hung_up(pairs[1][1])
        assert state.recheck() == 0  # each is hung up once
    finally:
        for lease in leases:
            lease.release()
        for a, b in pairs:
            a.close()
            b.close()
    assert not cap().watched


# --- the cap shared through Redis (two StreamCaps = two workers) --------------------------------


@pytest.fixture
def redis_app(sqlite_url):
    url = services.require_redis()
    app = create_app(TestConfig, SQLALCHEMY_DATABASE_URI=sqlite_url, REDIS_URL=url)
    user_id = 10**9 + secrets.randbelow(10**9)  # nobody else's set
    yield app, user_id
    from app.extensions import broker

    broker.redis.delete(f"{app.config['STREAMS_KEY_PREFIX']}{user_id}")
    create_app(TestConfig, SQLALCHEMY_DATABASE_URI=sqlite_url)  # the broker back to in-process


def test_the_cap_is_shared_by_every_worker_through_redis(redis_app):
    from werkzeug.exceptions import TooManyRequests

    from app.auth.streams import StreamCap

    app, user_id = redis_app
    app.config.update(STREAMS_PER_USER=3, STREAM_LEASE_SECONDS=30)
    with app.test_request_context():
        one, two = StreamCap(app), StreamCap(app)
        leases = [one.acquire(user_id), one.acquire(user_id), two.acquire(user_id)]
        assert all(lease.shared for lease in leases)
        assert one.open_streams(user_id) == 3
        for worker in (one, two):
            with pytest.raises(TooManyRequests) as refused:
                worker.acquire(user_id)
            assert 0 < refused.value.retry_after <= 30
        leases[2].release()  # closed on the second worker: the first may open one
        leases[2].release()  # (twice is once)
        leases.append(one.acquire(user_id))
        assert one.open_streams(user_id) == 3
        for lease in leases:
            lease.release()
        assert one.open_streams(user_id) == 0


def test_a_lease_is_given_back_outside_the_request(redis_app):
    """The stream's generator ends after the request's app context is gone."""
    from app.auth.streams import StreamCap

    app, user_id = redis_app
    app.config.update(STREAMS_PER_USER=1)
    cap = StreamCap(app)
    with app.test_request_context():
        lease = cap.acquire(user_id)
    lease.release()  # no app context here
    with app.test_request_context():
        assert cap.open_streams(user_id) == 0
        cap.acquire(user_id).release()


def test_leases_of_a_dead_worker_expire_and_live_ones_are_renewed(redis_app):
    from werkzeug.exceptions import TooManyRequests

    from app.auth.streams import StreamCap

    app, user_id = redis_app
    app.config.update(STREAMS_PER_USER=2, STREAM_LEASE_SECONDS=1)
    with app.test_request_context():
        alive, dead = StreamCap(app), StreamCap(app)
        kept = alive.acquire(user_id)
        dead.acquire(user_id)  # this "worker" dies: never released, never renewed
        with pytest.raises(TooManyRequests):
            alive.acquire(user_id)
        deadline = time.monotonic() + 1.6
        while time.monotonic() < deadline:
            alive.renew(alive.redis())
            time.sleep(0.3)
        # The dead worker's lease is gone; the renewed one still counts.
        assert alive.open_streams(user_id) == 1
        another = alive.acquire(user_id)
        with pytest.raises(TooManyRequests):
            alive.acquire(user_id)
        kept.release()
        another.release()


def test_redis_down_does_not_refuse_a_stream(sqlite_url):
    from app.auth.streams import StreamCap

    app = create_app(
        TestConfig, SQLALCHEMY_DATABASE_URI=sqlite_url, REDIS_URL="redis://127.0.0.1:1/0"
    )
    try:
        app.config["STREAMS_PER_USER"] = 1
        with app.test_request_context():
            cap = StreamCap(app)
            lease = cap.acquire(7)
            assert not lease.shared  # counted in this process while Redis is away
            from werkzeug.exceptions import TooManyRequests

            with pytest.raises(TooManyRequests):
                cap.acquire(7)
            lease.release()
            cap.acquire(7).release()
    finally:
        create_app(TestConfig, SQLALCHEMY_DATABASE_URI=sqlite_url)


def test_the_write_limit_is_counted_in_redis_across_workers(app, database_url):
    """Two apps (two workers) on one Redis share a user's budget, and each response's
    X-RateLimit headers tell what is left of it."""
    url = services.require_redis()
    settings = {
        "SQLALCHEMY_DATABASE_URI": database_url,  # migrated and emptied by `app`
        "RATELIMIT_STORAGE_URI": url,
        "RATELIMIT_KEY_PREFIX": f"test-{secrets.token_hex(4)}",  # no earlier run's counts
        "WRITE_RATE_LIMIT": "3 per minute",
    }
    one = create_app(TestConfig, **settings)
    two = create_app(TestConfig, **settings)
    script = authed_client(one, "mes", "manager")
    twin = two.test_client()
    twin.environ_base.update(script.environ_base)
    left = []
    for i, client in enumerate((script, twin, script)):
        response = client.post("/api/machines", json={"name": "Lathe", "code": f"L-{i}"})
        assert response.status_code == 201
        assert response.headers["X-RateLimit-Limit"] == "3"
        reset = int(response.headers["X-RateLimit-Reset"])
        assert time.time() < reset <= time.time() + 61
        left.append(response.headers["X-RateLimit-Remaining"])
    assert left == ["2", "1", "0"]
    refused = twin.post("/api/machines", json={"name": "Lathe", "code": "L-9"})
    assert_envelope(refused, 429)
    _retry_after(refused)
    codes = [m["code"] for m in script.get("/api/machines").get_json()["machines"]]
    assert sorted(codes) == ["L-0", "L-1", "L-2"]
