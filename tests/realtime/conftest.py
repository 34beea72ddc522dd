"""Fixtures of the real-time tests.

Fast tests use the suite's app/client/make fixtures with the in-process broker. The slow ones run
real gunicorn instances on a database of their own (`trackopz_rt_<pid>`) and redis-servers of
their own, so they collide neither with the plain suite nor with anything else on this machine. Every
HTTP call of theirs goes through `http()` (and raw sockets through `auth_headers()`): the one
place that knows how to sign in.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
import requests

from app.extensions import broker, hub
from tests.realtime.helpers import RedisServer
from tests.support import services
from tests.support.servers import Gunicorn

RT_DB = f"trackopz_rt_{os.getpid()}"  # runs side by side never share one
SECRET = "realtime-tests-secret"


@pytest.fixture
def app(app):
    """The suite's app, with the in-process broker whatever REDIS_URL says: the in-process
    tests drive the stream from the test's own thread, and the shared Redis channel is not
    theirs to publish on."""
    app.config["REDIS_URL"] = None
    broker.init_app(app, hub)
    yield app
    hub.stop()


# --- real processes --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def rt_database_url() -> str:
    """A database of these tests' own, migrated to the head; dropped at the end."""
    base = services.require_postgres()
    import psycopg

    admin = base.replace("postgresql+psycopg://", "postgresql://").rsplit("/", 1)[0] + "/postgres"

    def recreate(create: bool) -> None:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (RT_DB,),
            )
            conn.execute(f"DROP DATABASE IF EXISTS {RT_DB}")
            if create:
                conn.execute(f"CREATE DATABASE {RT_DB}")

    recreate(True)
    url = admin.rsplit("/", 1)[0] + "/" + RT_DB
    yield url
    recreate(False)


@pytest.fixture(scope="session")
def rt_app(rt_database_url):
    """The app in this process, on that database: migrates it (as `flask db upgrade` does)."""
    from flask_migrate import upgrade

    from app import create_app
    from app.extensions import db
    from config import TestConfig

    app = create_app(
        TestConfig,
        SQLALCHEMY_DATABASE_URI=rt_database_url.replace("postgresql://", "postgresql+psycopg://"),
        REDIS_URL=None,
    )
    with app.app_context():
        upgrade()
        db.session.remove()
    yield app
    with app.app_context():
        db.engine.dispose()


@pytest.fixture(scope="session")
def api_token(rt_app) -> str | None:
    """A manager's bearer token; None if the app has no sign-in."""
    try:
        from app.auth import service
    except ImportError:
        return None
    with rt_app.app_context():
        service.create_user(name="rt-boss", role="manager", password="x" * 16)
        _, plain = service.create_token(user_name="rt-boss", name="realtime-tests")
        return plain


@pytest.fixture(scope="session")
def redis_binary() -> str:
    return services.require_binary("redis-server")


@pytest.fixture(scope="session")
def rt_redis(redis_binary, artifacts_dir):
    """A redis-server of the session's own (pub/sub channels are not per db index)."""
    server = RedisServer(redis_binary, artifacts_dir).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def auth_headers(api_token) -> dict:
    return {"Authorization": f"Bearer {api_token}"} if api_token else {}


@pytest.fixture(scope="session")
def http(auth_headers):
    """A factory of requests sessions that are signed in."""

    def make() -> requests.Session:
        session = requests.Session()
        session.headers.update(auth_headers)
        return session

    return make


@pytest.fixture(scope="session")
def rt_env(rt_database_url, rt_app) -> dict:
    """What every gunicorn of these tests gets (REDIS_URL is added per instance)."""
    return {
        "DATABASE_URL": rt_database_url,
        "SECRET_KEY": SECRET,
        "SSE_KEEPALIVE_SECONDS": "1",
        "WRITE_RATE_LIMIT": "100000 per minute",
        "STREAMS_PER_USER": "100000",
        "LOG_LEVEL": "warning",
        "REDIS_URL": "",
    }


@pytest.fixture(scope="session")
def gunicorns(artifacts_dir):
    """Start gunicorn instances with `start(env, workers=...)`; all are stopped at the end."""
    started: list[Gunicorn] = []
    log_dir = Path(artifacts_dir)

    def start(env: dict, *, workers: int = 2, count: int = 1):
        """One instance, or a list of `count` started side by side."""
        servers = [Gunicorn(env, workers=workers, log_dir=log_dir) for _ in range(count)]
        started.extend(servers)
        errors = []

        def run(server):
            try:
                server.start(timeout=60)
            except Exception as err:  # noqa: BLE001
                errors.append(err)

        threads = [threading.Thread(target=run, args=(s,)) for s in servers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        return servers[0] if count == 1 else servers

    yield start
    stoppers = [threading.Thread(target=server.stop) for server in started]
    for t in stoppers:
        t.start()
    for t in stoppers:
        t.join()
