"""Webhooks end to end: gunicorn serving the API, `flask webhooks run` as its own process(es),
a receiver that is down at first, on SQLite (one deliverer, file lock) and on Postgres (two
deliverers at once, advisory locks)."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import time

import pytest
from sqlalchemy import create_engine, text

from tests.enhancements.test_webhooks import SECRET, Receiver
from tests.support import services
from tests.support.servers import (
    BIN,
    ROOT,
    Gunicorn,
    auth_session,
    flask_cli,
    free_port,
    make_token,
)

pytestmark = pytest.mark.slow

FAST = {
    "WEBHOOK_BACKOFF_SECONDS": "0.05",
    "WEBHOOK_BACKOFF_CAP_SECONDS": "0.3",
    "WEBHOOK_POLL_SECONDS": "0.1",
    "REDIS_URL": "",
    "SECRET_KEY": "test-only-secret",
}


@pytest.fixture(params=["sqlite", "postgres"])
def database(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'trackopz.db'}"
        return
    base = services.require_postgres().replace("postgresql+psycopg://", "postgresql://")
    name = f"trackopz_wh_{os.getpid()}"
    admin = base.rsplit("/", 1)[0] + "/postgres"
    import psycopg

    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
    yield base.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
        )
        conn.execute(f"DROP DATABASE IF EXISTS {name}")


def _deliverer(env, log_path):
    log = open(log_path, "ab")
    return subprocess.Popen(
        [str(BIN / "flask"), "--app", "wsgi", "webhooks", "run"],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _stop(proc):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def test_end_to_end(database, tmp_path):
    env = {**FAST, "DATABASE_URL": database}
    flask_cli("db", "upgrade", env=env)
    token = make_token(env)
    receiver = Receiver(free_port())
    processes = []
    with Gunicorn(env, workers=1, log_dir=tmp_path) as web:
        http = auth_session(token)

        def call(method, path, body=None, expect=200):
            r = http.request(method, web.url + path, json=body, timeout=10)
            assert r.status_code == expect, r.text
            return r.json()

        try:
            hook = call("POST", "/api/webhooks", {"url": receiver.url, "secret": SECRET}, 201)
            refused = http.post(web.url + "/api/webhooks", json={"url": web.url + "/hook"})
            assert refused.status_code == 400
            processes.append(_deliverer(env, tmp_path / "deliverer-1.log"))
            if not database.startswith("sqlite"):
                processes.append(_deliverer(env, tmp_path / "deliverer-2.log"))

            machine = call("POST", "/api/machines", {"name": "Lathe", "code": "M-1"}, 201)[
                "machine"
            ]
            ids = []
            for i in range(3):
                p = call("POST", "/api/products", {"name": f"Shaft {i}", "code": f"P-{i}"}, 201)
                ids.append(p["product"]["id"])
                call("POST", "/api/jobs", {"productId": ids[-1], "machineId": machine["id"]}, 201)
            # The receiver is down: attempts fail and back off (once the deliverers are up).
            deadline = time.monotonic() + 30
            while True:
                log = call("GET", f"/api/webhooks/{hook['webhook']['id']}/deliveries")
                if log["deliveries"] and log["deliveries"][0]["attempts"] >= 2:
                    break
                assert time.monotonic() < deadline, "no delivery was attempted"
                time.sleep(0.1)
            assert log["deliveries"][0]["status"] == "retrying"
            assert len(log["deliveries"]) == 1  # later events wait behind the first
            if database.startswith("sqlite"):
                second = _deliverer(env, tmp_path / "deliverer-2.log")
                assert second.wait(30) != 0  # the file lock: one deliverer per SQLite database
                assert b"Another webhook deliverer" in (tmp_path / "deliverer-2.log").read_bytes()

            receiver.start()
            call(
                "POST",
                "/api/products/lifecycle/batch",
                {"actions": [{"productId": p, "action": "move_to_past"} for p in ids]},
            )
            call(
                "POST",
                "/api/live-products/dispatchable/batch",
                {"productIds": ids[:1], "destination": "Dock"},
            )  # already past: fails, writes nothing
            engine = create_engine(database.replace("postgresql://", "postgresql+psycopg://"))
            with engine.connect() as conn:
                expected = (
                    conn.execute(
                        text("SELECT id FROM events WHERE id > :start ORDER BY id"),
                        {"start": hook["webhook"]["lastEventId"]},
                    )
                    .scalars()
                    .all()
                )
            engine.dispose()
            deadline = time.monotonic() + 30
            while len(receiver.requests) < len(expected):
                assert time.monotonic() < deadline, (receiver.ids(), expected)
                time.sleep(0.05)
            time.sleep(0.5)  # anything sent twice would arrive meanwhile
            assert receiver.ids() == expected
            for headers, body in receiver.requests:
                digest = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
                assert headers["X-TrackOPZ-Signature"] == "sha256=" + digest
                assert json.loads(body)["id"] == int(headers["X-TrackOPZ-Event-Id"])
            shown = call("GET", f"/api/webhooks/{hook['webhook']['id']}")["webhook"]
            assert shown["lastEventId"] == expected[-1]
        finally:
            for proc in processes:
                _stop(proc)
            receiver.stop()
