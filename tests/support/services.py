"""Where the real Postgres and Redis are, and what to do when they are not there.

Without them, tests that need them skip with a line naming what is missing; with
TRACKOPZ_REQUIRE_SERVICES=1 (as .ci/run sets) they fail instead.
"""

from __future__ import annotations

import atexit
import os
import shutil
from functools import cache
from urllib.parse import urlsplit, urlunsplit

import pytest

REQUIRED = os.environ.get("TRACKOPZ_REQUIRE_SERVICES") == "1"
# One database per test process, so that runs side by side never drop each other's.
TEST_DB_PREFIX = "trackopz_test_"
TEST_DB_NAME = f"{TEST_DB_PREFIX}{os.getpid()}"


def missing(what: str):
    """Skip, or fail when the services are required."""
    if REQUIRED:
        pytest.fail(f"{what} (TRACKOPZ_REQUIRE_SERVICES=1)", pytrace=False)
    pytest.skip(what)


def _pg_url(url: str, dbname: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + dbname))


@cache
def postgres_url() -> str | None:
    """A database of the tests' own on the server DATABASE_URL names, made fresh per run."""
    url = os.environ.get("DATABASE_URL")
    if not url or not url.startswith(("postgres://", "postgresql")):
        return None
    import psycopg

    base = url.replace("postgresql+psycopg://", "postgresql://").replace(
        "postgres://", "postgresql://"
    )
    try:
        with psycopg.connect(base, autocommit=True, connect_timeout=5) as conn:
            _drop_leftovers(conn)
            conn.execute(f"CREATE DATABASE {TEST_DB_NAME}")
    except psycopg.Error as err:
        raise RuntimeError(
            f"cannot make the test database on {urlsplit(base).hostname}: {err}"
        ) from err
    atexit.register(_drop_own, base)
    return _pg_url(base, TEST_DB_NAME).replace("postgresql://", "postgresql+psycopg://", 1)


def _drop_database(conn, name: str) -> None:
    conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = %s AND pid <> pg_backend_pid()",
        (name,),
    )
    conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


def _drop_leftovers(conn) -> None:
    """Databases of earlier test processes that are gone (killed runs leave them behind)."""
    rows = conn.execute(
        "SELECT datname FROM pg_database WHERE datname LIKE %s", (TEST_DB_PREFIX + "%",)
    ).fetchall()
    for (name,) in rows:
        pid = name[len(TEST_DB_PREFIX) :]
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            _drop_database(conn, name)


def _drop_own(base: str) -> None:
    import psycopg

    try:
        with psycopg.connect(base, autocommit=True, connect_timeout=5) as conn:
            _drop_database(conn, TEST_DB_NAME)
    except psycopg.Error:
        pass


def require_postgres() -> str:
    url = postgres_url()
    if url is None:
        missing("no Postgres: set DATABASE_URL to a PostgreSQL server")
    return url


def redis_url() -> str | None:
    return os.environ.get("REDIS_URL") or None


def require_redis() -> str:
    url = redis_url()
    if url is None:
        missing("no Redis: set REDIS_URL")
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except redis.RedisError as err:
        missing(f"Redis at REDIS_URL does not answer: {err}")
    return url


def require_binary(name: str, path: str | None = None) -> str:
    found = path if path and os.path.exists(path) else shutil.which(name)
    if not found:
        missing(f"no {name} on this machine")
    return found
