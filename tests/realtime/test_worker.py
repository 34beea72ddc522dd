"""One gevent worker under stress: a 2 s database wait blocks nobody else, 500 streams come and
go without leaving a greenlet or a queue behind, and gunicorn refuses workers it cannot serve."""

from __future__ import annotations

import os
import re
import selectors
import signal
import socket
import subprocess
import threading
import time

import psycopg
import pytest
import redis

from tests.realtime.helpers import STREAM, StreamReader
from tests.realtime.shop import Shop, events_after, newest_event
from tests.support.servers import BIN, ROOT, free_port

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def one_worker(gunicorns, rt_env, rt_redis):
    return gunicorns({**rt_env, "REDIS_URL": rt_redis.url}, workers=1)


def _waiting_on_a_lock(database_url: str) -> bool:
    with psycopg.connect(database_url, autocommit=True) as conn:
        return bool(
            conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'"
            ).fetchone()[0]
        )


def test_a_two_second_database_call_does_not_delay_keepalives_or_other_requests(
    one_worker, http, rt_database_url
):
    host = one_worker
    shop = Shop(host.url, http())
    (product,) = shop.live_products(1, [shop.machine()])
    reader = StreamReader(host.url, http, name="sse-idle")
    reader.start()
    assert reader.ready.wait(15)
    holder = psycopg.connect(rt_database_url)  # a transaction that holds the product's row
    try:
        holder.execute("SELECT id FROM products WHERE id = %s FOR UPDATE", (product,))
        result: dict = {}

        def post():
            started = time.monotonic()
            result["status"] = shop.toggle(product).status_code
            result["took"] = time.monotonic() - started

        poster = threading.Thread(target=post)
        poster.start()
        deadline = time.monotonic() + 10
        while not _waiting_on_a_lock(rt_database_url):  # the worker's query is now stuck
            assert time.monotonic() < deadline, "the POST never reached the row lock"
            time.sleep(0.05)

        # The holder keeps the row through a 2 s pg_sleep: the worker's query takes ~2 s.
        sleeper = threading.Thread(
            target=lambda: (holder.execute("SELECT pg_sleep(2)"), holder.commit())
        )
        window_start = time.monotonic()
        sleeper.start()
        probe = http()
        slowest: dict[str, float] = {}
        while sleeper.is_alive():
            for path in ("/healthz", "/api/products?limit=1", "/api/realtime/stats"):
                started = time.monotonic()
                r = probe.get(host.url + path, timeout=5)
                assert r.status_code == 200, (path, r.status_code)
                slowest[path] = max(slowest.get(path, 0), time.monotonic() - started)
            time.sleep(0.05)
        window_end = time.monotonic()
        sleeper.join()
        poster.join(15)
    finally:
        holder.close()
        reader.stop()
    assert result.get("status") == 200, result
    assert result["took"] >= 1.8, result  # it did wait on the database all that time
    assert max(slowest.values()) < 0.5, slowest
    # Keepalives (SSE_KEEPALIVE_SECONDS=1) kept coming while the POST waited.
    times = [t for t in reader.chunk_times if window_start - 1.5 <= t <= window_end + 1.5]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert len(times) >= 3 and max(gaps) < 1.7, gaps
    reader.join(10)


def test_keepalives_keep_their_interval_after_an_event_the_hub_wrote_itself(one_worker, http):
    """The hub writes an idle stream's events straight to its socket; the stream's keepalive
    clock must count from that write, or an idle page would hear nothing for up to twice
    SSE_KEEPALIVE_SECONDS (1 s here) after an event, and a proxy's read timeout draws closer."""
    host = one_worker
    shop = Shop(host.url, http())
    (product,) = shop.live_products(1, [shop.machine()])
    reader = StreamReader(host.url, http, reconnect=False, name="sse-keepalive")
    reader.start()
    try:
        assert reader.ready.wait(15)
        deadline = time.monotonic() + 5
        while reader.keepalives < 2:  # settled into the idle rhythm
            assert time.monotonic() < deadline, "no keepalives"
            time.sleep(0.02)
        time.sleep(0.1)  # just after a keepalive: the worst moment for the old clock
        assert shop.toggle(product).status_code == 200
        time.sleep(3)
        times = [t for t in reader.chunk_times if t >= reader.chunk_times[-1] - 3.2]
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        assert len(times) >= 3 and max(gaps) < 1.6, gaps
    finally:
        reader.stop()
    reader.join(10)


def _open_streams(port: int, n: int, headers: dict, batch: int = 50) -> list[socket.socket]:
    """`n` raw connections, each with its stream's first message read; opened `batch` at a
    time (pages load over a moment, not in one instant: a burst of hundreds of stream opens
    at once queues on the worker's database pool)."""
    socks: list[socket.socket] = []
    while len(socks) < n:
        socks += _open_batch(port, min(batch, n - len(socks)), headers)
    return socks


def _open_batch(port: int, n: int, headers: dict, timeout: float = 30) -> list[socket.socket]:
    request = (
        f"GET {STREAM} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n"
        + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        + "\r\n"
    ).encode()
    sel = selectors.DefaultSelector()
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(request)
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, bytearray())
        socks.append(s)
    waiting = len(socks)
    deadline = time.monotonic() + timeout
    while waiting:
        if time.monotonic() > deadline:
            stuck = [bytes(k.data[:300]) for k in sel.get_map().values()]
            raise AssertionError(f"{waiting} streams did not open; e.g. {stuck[:3]}")
        for key, _ in sel.select(timeout=1):
            data = key.fileobj.recv(65536)
            assert data, "a stream closed before its first message"
            key.data.extend(data)
            if b"connection_established" in key.data:
                assert key.data.startswith(b"HTTP/1.1 200"), bytes(key.data[:200])
                sel.unregister(key.fileobj)
                waiting -= 1
    sel.close()
    return socks


def test_500_clients_come_and_go_and_the_worker_returns_to_its_baseline(
    one_worker, http, auth_headers, rt_database_url, rt_redis
):
    host = one_worker
    api = http()

    def stats() -> dict:
        r = api.get(host.url + "/api/realtime/stats", timeout=10)
        assert r.status_code == 200
        return r.json()

    for s in _open_streams(host.port, 2, auth_headers):  # warm up: the loops a stream starts
        s.close()
    time.sleep(1.0)
    base = stats()
    assert base["hub"]["clients"] == 0
    events_before = newest_event(rt_database_url)

    started = time.monotonic()
    socks = _open_streams(host.port, 500, auth_headers)
    opened_in = time.monotonic() - started
    try:
        during = stats()
        assert during["hub"]["clients"] == 500
        # Past its first message each stream is the hub's: no greenlet waits per idle stream.
        assert during["hub"]["owned"] == 500
        assert during["greenlets"] <= base["greenlets"] + 2, (base, during)
        # The open streams hold no database connection (this stats request holds none either).
        assert during["dbPool"]["checkedOut"] <= 1, during["dbPool"]
    finally:
        for s in socks:
            s.close()
    closed_at = time.monotonic()
    while True:
        now = stats()
        if now["hub"]["clients"] == 0 and now["greenlets"] <= base["greenlets"] + 2:
            break
        assert time.monotonic() - closed_at < 5, (base, now)
        time.sleep(0.1)
    took = time.monotonic() - closed_at
    assert now["hub"]["queued"] == 0
    # Nothing was published meanwhile: the watchers noticed the closed connections themselves.
    assert newest_event(rt_database_url) == events_before
    assert now["hub"]["lastEventId"] == base["hub"]["lastEventId"]
    assert took < 5
    print(f"500 streams opened in {opened_in:.1f}s, all let go {took:.1f}s after closing")
    # The per-user stream leases went back too (not left to expire).
    store = redis.Redis.from_url(rt_redis.url)
    leases = sum(store.zcard(k) for k in store.scan_iter(match="trackopz:streams:*"))
    assert leases == 0


def test_a_client_that_stops_reading_is_cut_off_and_the_readers_get_every_event_intact(
    gunicorns, rt_env, rt_redis, http, auth_headers, rt_database_url
):
    """The hub writes straight to each idle stream's socket; a socket whose buffers are full
    falls back to its queue, and past SSE_CLIENT_QUEUE the client is let go. A reader that keeps
    up sees every event once, in order, in valid HTTP chunks (urllib3 checks the framing)."""
    host = gunicorns({**rt_env, "REDIS_URL": rt_redis.url, "SSE_CLIENT_QUEUE": "20"}, workers=1)
    api = http()
    shop = Shop(host.url, api)
    machine = shop.machine()
    shop.live_products(60, [machine])  # each rename re-sends all 60 in one ~20 KB event
    reader = StreamReader(host.url, http, reconnect=False, name="sse-keeps-up")
    reader.start()
    assert reader.ready.wait(15)
    stalled = _stalled_stream(host.port, auth_headers)
    stats = lambda: api.get(host.url + "/api/realtime/stats", timeout=10).json()["hub"]  # noqa: E731
    before = stats()
    assert before["clients"] == 2
    start = newest_event(rt_database_url)
    try:
        for i in range(300):  # ~6 MB of events: more than the kernel buffers hold
            r = api.patch(f"{host.url}/api/machines/{machine}", json={"name": f"Rig {i}"})
            assert r.status_code == 200, r.text
            if stats()["droppedSlow"] > before["droppedSlow"]:
                break
        else:
            raise AssertionError("the client that does not read was never let go")
        last = newest_event(rt_database_url)
        assert reader.wait_for(last, 20), (reader.last_id, last)
        assert reader.ids == [e for e, _ in events_after(rt_database_url, start)]
        assert reader.problems == []
        assert stats()["clients"] == 1  # the stalled one is gone, the reader stays
    finally:
        reader.stop()
        stalled.close()


def _stalled_stream(port: int, headers: dict) -> socket.socket:
    """A stream with a small receive buffer that reads its first message and then no more."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: a small window
    s.settimeout(10)
    s.connect(("127.0.0.1", port))
    s.sendall(
        (
            f"GET {STREAM} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            + "\r\n"
        ).encode()
    )
    seen = b""
    while b"connection_established" not in seen:
        seen += s.recv(4096)
    return s


def _gunicorn_exit(env: dict, *args: str) -> tuple[int, str]:
    proc = subprocess.Popen(
        [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        return -1, out
    return proc.returncode, out


def test_more_than_one_worker_without_redis_is_refused_at_start(rt_env):
    env = {**os.environ, **rt_env, "PORT": str(free_port()), "WEB_CONCURRENCY": "2"}
    env.pop("REDIS_URL", None)
    for args in ((), ("--workers", "3")):
        if args:
            env["WEB_CONCURRENCY"] = "1"
        code, out = _gunicorn_exit(env, *args)
        assert code not in (0, -1), out
        assert "set REDIS_URL" in out.replace("Set REDIS_URL", "set REDIS_URL"), out


def test_stopping_the_server_ends_every_stream_it_holds_with_a_complete_body(
    gunicorns, rt_env, rt_redis, auth_headers
):
    """Streams past their first message are held by the hub, not by a request: a worker that
    shuts down still ends each one's chunked body properly (the browser reconnects elsewhere at
    once), and handing a stream over leaves no error in the server's log."""
    host = gunicorns({**rt_env, "REDIS_URL": rt_redis.url, "LOG_LEVEL": "info"}, workers=1)
    socks = [_stalled_stream(host.port, auth_headers) for _ in range(3)]
    try:
        time.sleep(1.2)
        host.stop()
        for s in socks:
            body = b""
            while chunk := s.recv(65536):
                body += chunk
            assert body.endswith(b"0\r\n\r\n"), body[-200:]  # the last chunk
    finally:
        for s in socks:
            s.close()
    log = host.log_path.read_text(errors="replace")
    assert "Traceback" not in log and "Error handling request" not in log, log[-3000:]
    # Each stream's end is logged when it ends, with how long it was open, not at the hand-over.
    durations = [float(d) for d in re.findall(r"stream closed after (\d+\.\d)s", log)]
    assert len(durations) == 3 and min(durations) >= 1.0, log[-3000:]
    # And the stopping worker gave their leases back (they would count for a minute otherwise).
    store = redis.Redis.from_url(rt_redis.url)
    assert sum(store.zcard(k) for k in store.scan_iter(match="trackopz:streams:*")) == 0
