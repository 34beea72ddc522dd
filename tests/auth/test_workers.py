"""Real processes: gunicorn with two gevent workers sharing Redis and Postgres.

- A revoked token is refused at once by every worker (no worker keeps a cache of tokens), and
  the streams it opened before are hung up.
- The cap on open streams holds across workers, leases are renewed while streams stay open,
  a closed stream gives its place back, and a killed worker's places expire.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.support import services
from tests.support.servers import Gunicorn, flask_cli, make_token

pytestmark = pytest.mark.slow

DB = f"trackopz_auth_{os.getpid()}"
STREAM = "/api/live-products/dispatchable/stream"
LEASE_SECONDS = 3


@pytest.fixture(scope="module")
def server(tmp_path_factory, artifacts_dir):
    base = services.require_postgres()
    redis_url = services.require_redis()
    import psycopg
    import redis

    admin = base.replace("postgresql+psycopg://", "postgresql://").rsplit("/", 1)[0] + "/postgres"

    def recreate(create: bool) -> None:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (DB,),
            )
            conn.execute(f"DROP DATABASE IF EXISTS {DB}")
            if create:
                conn.execute(f"CREATE DATABASE {DB}")

    recreate(True)
    log_dir = tmp_path_factory.mktemp("auth-workers")
    access_log = log_dir / "access.log"
    tag = f"trackopz-auth-test-{os.getpid()}"
    env = {
        "DATABASE_URL": admin.rsplit("/", 1)[0] + "/" + DB,
        "SECRET_KEY": "auth-workers-secret",
        "REDIS_URL": redis_url,
        "REDIS_CHANNEL": f"{tag}:events",
        "STREAMS_KEY_PREFIX": f"{tag}:streams:",
        "STREAMS_PER_USER": "4",
        "STREAM_LEASE_SECONDS": str(LEASE_SECONDS),
        "SSE_KEEPALIVE_SECONDS": "1",
        "STREAM_AUTH_RECHECK_SECONDS": "1",
        "LOG_LEVEL": "warning",
        "ACCESS_LOG": str(access_log),
        # The worker's pid on every access line: which worker answered.
        "GUNICORN_CMD_ARGS": "--access-logformat '%(p)s %(s)s %(m)s %(U)s'",
    }
    flask_cli("db", "upgrade", env=env)
    manager = make_token(env, name="boss", role="manager")
    script = make_token(env, name="mes", role="operator")
    viewer = make_token(env, name="ana", role="operator")
    kiosk = make_token(env, name="kiosk", role="operator")
    gunicorn = Gunicorn(env, workers=2, log_dir=Path(artifacts_dir))
    gunicorn.start(timeout=60)
    try:
        yield {
            "g": gunicorn,
            "access_log": access_log,
            "manager": manager,
            "script": script,
            "viewer": viewer,
            "kiosk": kiosk,
            "redis": redis.Redis.from_url(redis_url),
            "streams_key": f"{tag}:streams:",
        }
    finally:
        gunicorn.stop()
        client = redis.Redis.from_url(redis_url)
        for key in client.scan_iter(match=f"{tag}:*"):
            client.delete(key)
        recreate(False)


def _pids_by_status(log: Path, start: int, path: str) -> dict[str, set[int]]:
    """{status: worker pids} of the access lines for `path` written after byte `start`."""
    out: dict[str, set[int]] = {}
    with open(log, "rb") as f:
        f.seek(start)
        for line in f.read().decode(errors="replace").splitlines():
            m = re.match(r"<(\d+)> (\d{3}) \w+ (\S+)", line)
            if m and m.group(3) == path:
                out.setdefault(m.group(2), set()).add(int(m.group(1)))
    return out


def _burst(url: str, token: str, n: int) -> list[int]:
    """n GETs, 16 at a time, each on a connection of its own (so both workers take some)."""

    def one(_):
        with requests.Session() as s:
            s.headers["Authorization"] = f"Bearer {token}"
            s.headers["Connection"] = "close"
            return s.get(url, timeout=10).status_code

    with ThreadPoolExecutor(16) as pool:
        return list(pool.map(one, range(n)))


def _log_size(log: Path) -> int:
    return log.stat().st_size if log.exists() else 0


def _wait_for_log(log: Path, start: int, path: str, want: int, timeout: float = 5) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        seen = _pids_by_status(log, start, path)
        if sum(len(v) for v in seen.values()) >= want or time.monotonic() > deadline:
            return seen
        time.sleep(0.1)


def test_a_revoked_token_is_refused_at_once_by_every_worker(server):
    g, log = server["g"], server["access_log"]
    workers = set(g.worker_pids())
    assert len(workers) == 2
    me = g.url + "/api/me"

    # The token works on both workers first (so each has seen it, were there a cache).
    start = _log_size(log)
    for _ in range(10):
        assert set(_burst(me, server["script"], 40)) == {200}
        if _wait_for_log(log, start, "/api/me", 2).get("200", set()) >= workers:
            break
    assert _pids_by_status(log, start, "/api/me")["200"] == workers

    boss = requests.Session()
    boss.headers["Authorization"] = f"Bearer {server['manager']}"
    tokens = boss.get(g.url + "/api/tokens", timeout=10).json()["tokens"]
    (mine,) = [t for t in tokens if t["userName"] == "mes"]
    start = _log_size(log)
    assert boss.delete(f"{g.url}/api/tokens/{mine['id']}", timeout=10).status_code == 200

    # At once, everywhere: every request after the revoke is a 401, on both workers.
    refused = set()
    statuses = []
    for _ in range(10):
        statuses += _burst(me, server["script"], 60)
        refused = _wait_for_log(log, start, "/api/me", 2).get("401", set())
        if refused >= workers:
            break
    assert set(statuses) == {401}
    assert refused == workers
    assert "200" not in _pids_by_status(log, start, "/api/me")


class Stream:
    """One open stream, read on a thread of its own so the connection stays busy."""

    def __init__(self, url: str, token: str):
        self.ended = threading.Event()
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"
        self.response = self.session.get(url + STREAM, stream=True, timeout=(5, 30))
        self.status = self.response.status_code
        if self.status == 200:
            # One iterator for the whole life of the stream: a dropped one closes the connection.
            self._lines = self.response.iter_lines()
            first = next(self._lines)
            assert first.startswith(b"retry:"), first
            self._thread = threading.Thread(target=self._drain, daemon=True)
            self._thread.start()

    def _drain(self):
        try:
            for _ in self._lines:
                pass
        except Exception:  # noqa: BLE001 - closed under us
            pass
        finally:
            self.ended.set()

    def close(self):
        self.response.close()
        self.session.close()


def _members(server, user_id: int) -> list[str]:
    key = f"{server['streams_key']}{user_id}"
    now = time.time()
    return [m.decode() for m in server["redis"].zrangebyscore(key, now, "+inf")]


def test_the_stream_cap_holds_across_workers(server):
    g, cap = server["g"], 4
    viewer = requests.Session()
    viewer.headers["Authorization"] = f"Bearer {server['viewer']}"
    user_id = viewer.get(g.url + "/api/me", timeout=10).json()["user"]["id"]
    streams: list[Stream] = []
    try:
        # Open the cap's worth, spread over both workers (the lease names the worker's pid).
        for _ in range(40):
            while len(streams) < cap:
                s = Stream(g.url, server["viewer"])
                assert s.status == 200, s.response.text
                streams.append(s)
            if len({m.split(":")[0] for m in _members(server, user_id)}) == 2:
                break
            streams.pop(0).close()
            time.sleep(0.2)
        holders = {int(m.split(":")[0]) for m in _members(server, user_id)}
        assert holders == set(g.worker_pids()), holders
        assert len(_members(server, user_id)) == cap

        # The next is refused, whichever worker takes it.
        for _ in range(4):
            refused = Stream(g.url, server["viewer"])
            assert refused.status == 429
            body = refused.response.json()
            assert body["success"] is False and str(cap) in body["error"]
            assert int(refused.response.headers["Retry-After"]) >= 1
            refused.close()

        # Past the lease time the open streams still count: their workers renew them.
        time.sleep(LEASE_SECONDS + 1.5)
        assert len(_members(server, user_id)) == cap
        assert Stream(g.url, server["viewer"]).status == 429

        # A closed stream gives its place back (its worker notices the close).
        streams.pop().close()
        deadline = time.monotonic() + 5
        while len(_members(server, user_id)) >= cap and time.monotonic() < deadline:
            time.sleep(0.1)
        again = Stream(g.url, server["viewer"])
        assert again.status == 200
        streams.append(again)

        # A killed worker cannot give its places back: they expire after the lease time.
        victim = int(_members(server, user_id)[0].split(":")[0])
        held_by_victim = sum(1 for m in _members(server, user_id) if m.startswith(f"{victim}:"))
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        deadline = killed_at + LEASE_SECONDS + 5
        opened = 0
        while opened < held_by_victim and time.monotonic() < deadline:
            s = Stream(g.url, server["viewer"])
            if s.status == 200:
                streams.append(s)
                opened += 1
            else:
                assert s.status in (429, 502, 503), s.status
                s.close()
                time.sleep(0.3)
        assert opened == held_by_victim, "the dead worker's places never came back"
        assert len(_members(server, user_id)) == cap
    finally:
        for s in streams:
            s.close()


def test_a_revoked_token_loses_its_open_streams(server):
    """Refused at once applies to what is already open too: its worker hangs the stream up."""
    g = server["g"]
    doomed = Stream(g.url, server["kiosk"])
    kept = Stream(g.url, server["viewer"])
    try:
        assert doomed.status == 200 and kept.status == 200
        assert not doomed.ended.wait(2.5)  # rechecked (every second) and still let in
        boss = requests.Session()
        boss.headers["Authorization"] = f"Bearer {server['manager']}"
        tokens = boss.get(g.url + "/api/tokens", timeout=10).json()["tokens"]
        (kiosk,) = [t for t in tokens if t["userName"] == "kiosk"]
        assert boss.delete(f"{g.url}/api/tokens/{kiosk['id']}", timeout=10).status_code == 200
        assert doomed.ended.wait(6), "the revoked token's stream is still open"
        assert not kept.ended.is_set()
        assert Stream(g.url, server["kiosk"]).status == 401
    finally:
        doomed.close()
        kept.close()
