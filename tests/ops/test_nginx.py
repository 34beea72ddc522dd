"""A real nginx, with docs/nginx/trackopz.conf, in front of two gunicorn instances.

The shipped file is used as it is, with only its deployment-specific values replaced: the upstream
servers (two gunicorn instances started here, two workers each), the listen address, the access
log path, and proxy_read_timeout, lowered from 60 s to 5 s with SSE_KEEPALIVE_SECONDS=2 so that
20 seconds of idle prove what 3 minutes would with the real values: a stream with nothing to
say outlives nginx's read timeout several times over because its keepalive comments pass.

The stream's location ignores the app's own `X-Accel-Buffering: no` here, so it is the shipped
`proxy_buffering off` that is in force. (With nginx 1.22 and a client that reads as fast as this
one, buffering on did not visibly delay small events either; what it does is keep reading from
gunicorn into buffers and temp files for a client that has stopped reading, so the app never sees
a slow client to drop. docs/DEPLOYMENT.md says so.) A keepalive interval above the read timeout
does make the idle test fail: nginx cuts the stream.

Postgres and Redis are real: a database `trackopz_ops_<pid>` (made and migrated here, dropped at
the end) and Redis db 12 (flushed), on a channel of this run's own. Without nginx, Postgres or Redis this skips with a line saying what is missing; under
TRACKOPZ_REQUIRE_SERVICES=1 it fails instead.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import requests

from tests.support import services
from tests.support.servers import ROOT, Gunicorn, flask_cli, free_port, make_token

pytestmark = pytest.mark.slow

CONF = ROOT / "docs" / "nginx" / "trackopz.conf"
OPS_DB = f"trackopz_ops_{os.getpid()}"  # runs side by side never share one; dropped at the end
REDIS_DB = 12
# Pub/sub channels are server-wide, not per db index: one of our own, so that no other
# TrackOPZ on this Redis (a dev server, another test run) publishes into these hubs.
REDIS_CHANNEL = f"trackopz:ops:{os.getpid()}:events"
KEEPALIVE_SECONDS = 2
READ_TIMEOUT_SECONDS = 5
IDLE_SECONDS = 20
STREAM = "/api/live-products/dispatchable/stream"


# --- the services ------------------------------------------------------------------------------


def _admin_url() -> str:
    url = os.environ.get("DATABASE_URL")
    if not url or not url.startswith(("postgres://", "postgresql")):
        services.missing("no Postgres: set DATABASE_URL to a PostgreSQL server")
    base = re.sub(r"^postgres(ql)?(\+\w+)?://", "postgresql://", url)
    return urlunsplit(urlsplit(base)._replace(path="/postgres"))


def _recreate(admin: str, *, create: bool) -> None:
    import psycopg

    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (OPS_DB,),
        )
        conn.execute(f"DROP DATABASE IF EXISTS {OPS_DB}")
        if create:
            conn.execute(f"CREATE DATABASE {OPS_DB}")


def _ops_database() -> str:
    """A fresh database of this run's own on the server DATABASE_URL names."""
    import psycopg

    admin = _admin_url()
    try:
        _recreate(admin, create=True)
    except psycopg.OperationalError as err:
        services.missing(f"Postgres at DATABASE_URL does not answer: {err}")
    return urlunsplit(urlsplit(admin)._replace(path="/" + OPS_DB))


def _ops_redis() -> str:
    import redis

    url = services.require_redis()
    url = urlunsplit(urlsplit(url)._replace(path=f"/{REDIS_DB}"))
    redis.Redis.from_url(url).flushdb()
    return url


def nginx_config(tmp: Path, port: int, upstreams: list[str]) -> Path:
    """docs/nginx/trackopz.conf with this test's values, inside a main config rooted in `tmp`."""
    text = CONF.read_text()

    def swap(pattern: str, replacement: str, text: str, *, flags: int = 0) -> str:
        new, count = re.subn(pattern, replacement, text, flags=flags)
        assert count, f"docs/nginx/trackopz.conf no longer has {pattern!r}; update this test"
        return new

    servers = "".join(f"    server {a} max_fails=3 fail_timeout=10s;\n" for a in upstreams)
    text = swap(r"(?m)^    server \S+:\d+[^;\n]*;\n(?:    server [^;\n]*;\n)*", servers, text)
    text = swap(r"(?m)^    listen 80;", f"    listen 127.0.0.1:{port};", text)
    text = swap(
        r"access_log \S+ trackopz;", f"access_log {tmp}/trackopz.access.log trackopz;", text
    )
    text = swap(r"proxy_read_timeout 60s;", f"proxy_read_timeout {READ_TIMEOUT_SECONDS}s;", text)
    # Which instance answered, so the test can see the balancing (not in the shipped file: it
    # would tell the world the internal addresses).
    text = swap(
        r"(?m)^(    server_name [^;]*;)$",
        r"\1\n    add_header X-Upstream $upstream_addr always;",
        text,
    )
    # Prove the config alone keeps the stream unbuffered: ignore the app's X-Accel-Buffering.
    text = swap(
        r"(proxy_buffering off;)", r"\1\n        proxy_ignore_headers X-Accel-Buffering;", text
    )
    (tmp / "trackopz.conf").write_text(text)
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers that can write to tmp
    main = tmp / "nginx.conf"
    main.write_text(
        f"""daemon off;
master_process on;
worker_processes 1;
{user}pid {tmp}/nginx.pid;
error_log {tmp}/error.log info;
events {{ worker_connections 512; }}
http {{
    access_log {tmp}/access.log;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    default_type application/octet-stream;
    include {tmp}/trackopz.conf;
}}
"""
    )
    return main


class Nginx:
    def __init__(self, binary: str, tmp: Path, port: int, upstreams: list[str]):
        self.binary, self.tmp, self.port = binary, tmp, port
        self.conf = nginx_config(tmp, port, upstreams)
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _args(self, *extra: str) -> list[str]:
        return [
            self.binary,
            "-p",
            str(self.tmp),
            "-c",
            str(self.conf),
            "-e",
            str(self.tmp / "error.log"),
            *extra,
        ]

    def start(self, timeout: float = 10) -> Nginx:
        check = subprocess.run(self._args("-t"), capture_output=True, text=True)
        assert check.returncode == 0, f"nginx -t refused the config:\n{check.stderr}"
        self._out = open(self.tmp / "nginx.out", "ab")
        self.proc = subprocess.Popen(
            self._args(), stdout=self._out, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited at start:\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"nginx did not listen in {timeout}s:\n{self.log()}")

    def log(self) -> str:
        try:
            return (self.tmp / "error.log").read_text(errors="replace")[-5000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        self.proc = None
        self._out.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory, artifacts_dir):
    """Postgres + Redis + two gunicorn instances (two workers each) + nginx in front."""
    nginx_bin = services.require_binary("nginx", "/usr/sbin/nginx")
    env = {
        "DATABASE_URL": _ops_database(),
        "REDIS_URL": _ops_redis(),
        "SSE_KEEPALIVE_SECONDS": str(KEEPALIVE_SECONDS),
        "SECRET_KEY": "test-only-secret",
        "REDIS_CHANNEL": REDIS_CHANNEL,
    }
    flask_cli("db", "upgrade", env=env)
    token = make_token(env, name="ops", role="manager")
    log_dir = artifacts_dir / "ops"
    log_dir.mkdir(exist_ok=True)
    hosts = [Gunicorn(env, workers=2, log_dir=log_dir) for _ in range(2)]
    nginx = None
    try:
        for host in hosts:
            host.start()
        tmp = tmp_path_factory.mktemp("nginx")
        nginx = Nginx(nginx_bin, tmp, free_port(), [f"127.0.0.1:{h.port}" for h in hosts]).start()
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {token}"
        _wait_ready(session, nginx.url)
        yield {"nginx": nginx, "hosts": hosts, "session": session, "token": token}
    finally:
        if nginx is not None:
            nginx.stop()
        for host in hosts:
            host.stop()
        try:
            _recreate(_admin_url(), create=False)
        except Exception as err:  # noqa: BLE001 - never hide the test's own failure
            print(f"could not drop {OPS_DB}: {err}")


def _wait_ready(session: requests.Session, url: str, timeout: float = 15) -> None:
    """Every worker answers /readyz 200 (its hub holds its Redis subscription)."""
    deadline = time.monotonic() + timeout
    streak = 0
    while time.monotonic() < deadline:
        r = session.get(url + "/readyz", timeout=5)
        streak = streak + 1 if r.status_code == 200 else 0
        if streak >= 8:
            return
        time.sleep(0.1)
    raise AssertionError(f"not ready through nginx: {r.status_code} {r.text}")


# --- an SSE reader that notes when each thing arrived -----------------------------------------


class Stream:
    """Reads a stream in a thread; `items` gets (arrival time, kind, payload) per message."""

    def __init__(self, url: str, token: str):
        self.items: queue.Queue = queue.Queue()
        self.response = requests.get(
            url,
            headers={"Authorization": f"Bearer {token}", "Accept": "text/event-stream"},
            stream=True,
            timeout=(5, 60),
        )
        assert self.response.status_code == 200, self.response.text
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        buffer = b""
        try:
            for chunk in self.response.iter_content(chunk_size=None):
                now = time.monotonic()
                buffer += chunk
                while b"\n\n" in buffer:
                    block, buffer = buffer.split(b"\n\n", 1)
                    self._message(now, block.decode())
        except Exception as err:  # noqa: BLE001 - closed by the test, or cut
            self.items.put((time.monotonic(), "error", repr(err)))
            return
        self.items.put((time.monotonic(), "eof", None))

    def _message(self, now: float, block: str) -> None:
        data = [line[5:].strip() for line in block.splitlines() if line.startswith("data:")]
        if data:
            self.items.put((now, "event", json.loads("\n".join(data))))
        elif block.startswith(":"):
            self.items.put((now, "comment", block))

    def next(self, timeout: float = 5) -> tuple[float, str, object]:
        return self.items.get(timeout=timeout)

    def wait_event(self, match, timeout: float = 5) -> tuple[float, dict]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, "the event did not arrive"
            at, kind, payload = self.next(left)
            assert kind in ("event", "comment"), f"the stream ended: {kind} {payload}"
            if kind == "event" and match(payload):
                return at, payload

    def close(self) -> None:
        self.response.close()


def _ok(response: requests.Response, code: int = 200) -> dict:
    assert response.status_code == code, response.text
    return response.json()


def _live_product(session: requests.Session, url: str, n: int) -> int:
    product = _ok(
        session.post(f"{url}/api/products", json={"name": f"Ops {n}", "code": f"OPS-{n}"}), 201
    )
    machine = _ok(
        session.post(f"{url}/api/machines", json={"name": f"Cell {n}", "code": f"CELL-{n}"}), 201
    )
    _ok(
        session.post(
            f"{url}/api/jobs",
            json={"productId": product["product"]["id"], "machineId": machine["machine"]["id"]},
        ),
        201,
    )
    return product["product"]["id"]


def _flip(session: requests.Session, url: str, product_id: int, action: str) -> None:
    _ok(
        session.post(
            f"{url}/api/products/lifecycle", json={"productId": product_id, "action": action}
        )
    )


TRANSITION_TYPES = {"move_to_past": "product_moved_to_past", "reactivate": "product_reactivated"}


# --- the tests ---------------------------------------------------------------------------------


def test_a_stream_through_nginx_gets_each_event_within_a_second_of_its_commit(stack):
    url, session = stack["nginx"].url, stack["session"]
    product_id = _live_product(session, url, 1)
    stream = Stream(url + STREAM, stack["token"])
    try:
        _, hello = stream.wait_event(lambda e: e["type"] == "connection_established")
        assert hello["data"]["count"] >= 1
        for i in range(6):
            action = "move_to_past" if i % 2 == 0 else "reactivate"
            sent = time.monotonic()
            _flip(session, url, product_id, action)
            arrived, event = stream.wait_event(
                lambda e, t=TRANSITION_TYPES[action]: (
                    e["type"] == t and e["data"]["productId"] == product_id
                )
            )
            # `sent` is before the commit, so this bounds commit-to-arrival from above.
            assert arrived - sent < 1.0, f"{action} took {arrived - sent:.2f}s to arrive"
            assert event["data"]["action"] == action
    finally:
        stream.close()


def test_requests_are_balanced_over_both_instances_and_metrics_add_up_per_instance(stack):
    url, session, hosts = stack["nginx"].url, stack["session"], stack["hosts"]
    seen = [requests.get(url + "/healthz", timeout=5).headers.get("X-Upstream") for _ in range(20)]
    expected = {f"127.0.0.1:{h.port}" for h in hosts}
    assert set(seen) == expected, seen
    counts = {a: seen.count(a) for a in expected}
    assert min(counts.values()) >= 5, counts  # round robin: about half each

    # The request id goes through: the client's is echoed, else nginx makes one.
    r = requests.get(url + "/healthz", headers={"X-Request-ID": "ops-check-1"}, timeout=5)
    assert r.headers["X-Request-ID"] == "ops-check-1"
    assert re.fullmatch(
        r"[0-9a-f]{32}", requests.get(url + "/healthz", timeout=5).headers["X-Request-ID"]
    )

    # Transitions handled by any of the four workers are counted on their instance's /metrics
    # (prometheus_client multiprocess mode adds up the workers); both instances together saw all.
    before = sum(_transitions(h.url) for h in hosts)
    product_id = _live_product(session, url, 2)
    upstreams = set()
    for i in range(8):
        r = session.post(
            f"{url}/api/products/lifecycle",
            json={
                "productId": product_id,
                "action": "move_to_past" if i % 2 == 0 else "reactivate",
            },
        )
        assert r.status_code == 200, r.text
        upstreams.add(r.headers["X-Upstream"])
    assert upstreams == expected
    assert sum(_transitions(h.url) for h in hosts) - before == 9  # 8 flips and the start_job
    # Through nginx, /metrics is open to this machine (the shipped allow list).
    assert "trackopz_http_requests_total" in requests.get(url + "/metrics", timeout=5).text


def _transitions(base: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    text = requests.get(base + "/metrics", timeout=5).text
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        if family.name == "trackopz_transitions"
        for s in family.samples
        if s.name == "trackopz_transitions_total"
    )


def test_an_idle_stream_outlives_the_read_timeout_because_keepalives_pass(stack):
    url, session = stack["nginx"].url, stack["session"]
    product_id = _live_product(session, url, 3)
    stream = Stream(url + STREAM, stack["token"])
    try:
        stream.wait_event(lambda e: e["type"] == "connection_established")
        started = time.monotonic()
        comments = []
        while time.monotonic() - started < IDLE_SECONDS:
            try:
                at, kind, payload = stream.next(timeout=READ_TIMEOUT_SECONDS + 2)
            except queue.Empty:
                pytest.fail("nothing came through nginx for longer than its read timeout")
            assert kind in ("comment", "event"), f"the idle stream ended: {kind} {payload}"
            if kind == "comment":
                comments.append(at)
        # 20 s of idle, four times nginx's read timeout; a comment every 2 s kept it open.
        assert len(comments) >= IDLE_SECONDS // KEEPALIVE_SECONDS - 3, comments
        gaps = [b - a for a, b in zip([started, *comments], comments, strict=False)]
        assert max(gaps) < READ_TIMEOUT_SECONDS, gaps
        # Still the same, live connection: an event committed now arrives at once.
        sent = time.monotonic()
        _flip(session, url, product_id, "move_to_past")
        arrived, _ = stream.wait_event(
            lambda e: e["type"] == "product_moved_to_past" and e["data"]["productId"] == product_id
        )
        assert arrived - sent < 1.0
    finally:
        stream.close()
