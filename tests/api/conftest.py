"""Helpers for the HTTP contract tests: the error envelope, the database as rows, a settable clock."""

from __future__ import annotations

import re
from contextlib import contextmanager
from datetime import datetime, timedelta

import pytest
from sqlalchemy import create_engine, event, text

from app import create_app
from app.common.http import SHARED_ANSWERS
from app.extensions import db as _db
from app.extensions import hub, limiter
from app.models import clock_override
from config import TestConfig
from tests import conftest as root
from tests.support import services

# The shop floor's tables; a refused request must leave every row of them as it was.
DOMAIN_TABLES = (
    "products",
    "machines",
    "jobs",
    "operator_product_updates",
    "dispatches",
    "transitions",
    "events",
)
ISO_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$")


# --- one app per module and backend ----------------------------------------------------------
#
# Building the app (blueprints, the OpenAPI spec) costs far more than emptying the tables, so
# these tests share one app per module and backend and start each test on empty tables. The
# `client` and `make` fixtures of tests/conftest.py sit on top of this `app` unchanged.


@pytest.fixture(scope="module", params=root.BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def shared_app(backend, sqlite_url):
    url = services.require_postgres() if backend == "postgres" else sqlite_url
    app = create_app(TestConfig, SQLALCHEMY_DATABASE_URI=url)
    app.extensions["tests_url"] = url
    with app.app_context():
        if url not in root._schema_ready:
            from flask_migrate import upgrade

            upgrade()
            root._schema_ready.add(url)
    yield app
    with app.app_context():
        _db.session.remove()
        _db.engine.dispose()


@pytest.fixture
def app(shared_app):
    """The module's app on empty tables, with fresh rate-limit counters."""
    with shared_app.app_context():
        _empty_tables()
        limiter.reset()
    # Emptied tables rewind SQLite's ids, which a real database never does (`events prune`
    # keeps the newest event), so answers shared under an ETag go with them, as in a new worker,
    # and on SQLite so does the hub that has seen those ids. (Not on Postgres, where ids go on
    # rising: there the concurrency tests publish from threads, and with the hub stopped between
    # tests they hung waiting for its lock, without Redis; why is not understood yet.)
    shared_app.extensions.pop(SHARED_ANSWERS, None)
    if shared_app.extensions["tests_url"].startswith("sqlite"):
        hub.stop()
    yield shared_app
    with shared_app.app_context():
        _db.session.remove()


def _empty_tables() -> None:
    """DELETE, not TRUNCATE: on tables this small it is many times faster on Postgres. Ids go on
    rising across tests, so no test may assume an id."""
    _db.session.execute(text("UPDATE products SET latest_job_id = NULL"))  # products <-> jobs
    for table in reversed(_db.metadata.sorted_tables):
        _db.session.execute(table.delete())
    _db.session.commit()


def is_iso_z(value) -> bool:
    return isinstance(value, str) and bool(ISO_Z.match(value))


def assert_error(response, status: int, *, field: str | None = None) -> dict:
    """The contract's error envelope with `status`: JSON, never HTML, never a stack trace."""
    raw = response.get_data(as_text=True)
    assert response.status_code == status, (
        f"expected {status}, got {response.status_code}: {raw[:500]}"
    )
    assert response.mimetype == "application/json", raw[:500]
    body = response.get_json()
    assert body["success"] is False, body
    assert isinstance(body["error"], str) and body["error"].strip(), body
    assert set(body) <= {"success", "error", "details"}, body
    assert "Traceback" not in raw and "<html" not in raw.lower(), raw[:500]
    if "details" in body:
        assert isinstance(body["details"], dict) and body["details"], body
    if field is not None:
        assert field in body.get("details", {}), body
    return body


def ok(response, status: int = 200) -> dict:
    raw = response.get_data(as_text=True)
    assert response.status_code == status, (
        f"expected {status}, got {response.status_code}: {raw[:500]}"
    )
    body = response.get_json()
    assert body["success"] is True, body
    return body


@pytest.fixture(scope="module")
def probe_engine(shared_app):
    """The tests' own look at the database: not the app's engine or session, each statement
    on its own (autocommit on Postgres; on SQLite a SELECT opens no transaction), no pings."""
    url = shared_app.extensions["tests_url"]
    options = {"isolation_level": "AUTOCOMMIT"} if url.startswith("postgresql") else {}
    engine = create_engine(url, **options)
    yield engine
    engine.dispose()


@pytest.fixture
def sql(app, probe_engine):
    """Run one SQL statement; its rows as tuples."""

    def run(statement: str, **params) -> list[tuple]:
        with probe_engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(statement), params).all()]

    return run


@pytest.fixture
def count(sql):
    def run(table: str, where: str = "", **params) -> int:
        return sql(f"SELECT count(*) FROM {table} {'WHERE ' + where if where else ''}", **params)[
            0
        ][0]

    return run


@pytest.fixture
def dump(sql):
    """Every row of the domain tables: equal before and after means nothing was written."""

    def run() -> dict[str, list[tuple]]:
        return {t: sql(f"SELECT * FROM {t} ORDER BY 1") for t in DOMAIN_TABLES}

    return run


@pytest.fixture
def fingerprint(sql):
    """One cheap statement that moves with any write to the domain tables: row counts, the
    newest ids, and the newest edit times (a machine rename writes no event)."""
    parts = [f"(SELECT count(*) FROM {t})" for t in DOMAIN_TABLES]
    parts += [f"(SELECT max(id) FROM {t})" for t in DOMAIN_TABLES]
    parts += [
        "(SELECT max(updated_at) FROM machines)",
        "(SELECT max(updated_at) FROM jobs)",
        "(SELECT max(state_changed_at) FROM products)",
    ]
    statement = "SELECT " + ", ".join(parts)

    def run() -> tuple:
        return sql(statement)[0]

    return run


class Clock:
    """The app's clock (app.models.utcnow), set by hand: durations and days come out exact."""

    def __init__(self) -> None:
        self.now: datetime | None = None

    def set(self, when: datetime) -> datetime:
        self.now = when
        clock_override.set(when)
        return when

    def advance(self, **delta) -> datetime:
        assert self.now is not None, "set the clock first"
        return self.set(self.now + timedelta(**delta))

    def real(self) -> None:
        self.now = None
        clock_override.set(None)


@pytest.fixture
def clock():
    c = Clock()
    yield c
    c.real()


# --- answers shared by a worker -----------------------------------------------------------


def comparable(response) -> dict:
    """The answer without the time it was given at."""
    body = response.get_json()
    body.get("dashboard", {}).pop("lastUpdated", None)
    return body


@pytest.fixture
def cold(app, client):
    """GET as a worker that has answered nothing yet: its shared answers dropped first."""

    def get(url: str):
        app.extensions.pop(SHARED_ANSWERS, None)
        response = client.get(url)
        assert response.status_code == 200, response.get_data(as_text=True)[:300]
        return response

    return get


@contextmanager
def statements(app):
    """The SQL statements the app's engine runs inside the block."""
    seen: list[str] = []

    def note(conn, cursor, statement, *args):
        seen.append(statement)

    with app.app_context():
        engine = _db.engine
    event.listen(engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", note)
