"""Where a request's reads and writes meet the database.

The pool pings a connection before lending it only if it sat unused for a while
(DB_PING_AFTER_IDLE_SECONDS, see app/__init__.py): a ping on every checkout (`pool_pre_ping`)
was a round trip of every request. A connection found dead when used is dropped, and with it
every connection the pool had before (SQLAlchemy's invalidation): after a database restart, the
first statement of each worker fails, not one per pooled connection. The sign-in's read, which
every request makes first, and a group of transitions' first round trip try once more on a new
connection (`on_a_live_connection`), so a restart costs a user nothing; another write that meets
a dead connection answers 503, and writes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import psycopg
from flask import request
from psycopg.rows import namedtuple_row
from sqlalchemy import Connection, Engine, Row
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import Executable

from app.common import roundtrip
from app.extensions import db

T = TypeVar("T")


def on_a_live_connection(attempt: Callable[[], T]) -> T:
    """`attempt()`, and once more if it met a connection found dead: for an attempt of which
    nothing can have run on a dead connection (a read, or a transaction's first round trip)."""
    try:
        return attempt()
    except DBAPIError as err:
        if not err.connection_invalidated:
            raise
    return attempt()


def read_alone(statement: Executable, params: dict) -> Row | tuple | None:
    """The first row of one read-only statement, outside any transaction: on a connection of
    its own in autocommit (PostgreSQL), so one round trip (no BEGIN and no ROLLBACK), and the
    request's session is left unopened for what the request does next. Tried again on a new
    connection if the pooled one was found dead.

    Every request's sign-in is one of these. Through psycopg the statement goes straight to the
    pooled driver connection, its row a named tuple: SQLAlchemy's Connection around it (checkout
    events, isolation level set and reset, result processing) cost twice the CPU of the read
    itself. Its columns must need no SQLAlchemy type processing (plain ints, strings, booleans,
    naive datetimes), as those of the sign-in reads do.
    """
    engine = db.engine
    if roundtrip.together(engine):
        return on_a_live_connection(lambda: _read_on_driver(engine, statement, params))

    def read():
        with engine.connect() as conn:
            if conn.dialect.name != "sqlite":  # SQLite keeps its own transaction handling
                conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            return conn.execute(statement, params).first()

    return on_a_live_connection(read)


def _read_on_driver(engine: Engine, statement: Executable, params: dict) -> tuple | None:
    compiled = roundtrip.compile_once(statement, engine.dialect)
    pooled = engine.raw_connection()
    raw = pooled.driver_connection
    try:
        raw.autocommit = True
        try:
            cursor = raw.cursor(row_factory=namedtuple_row)
            return cursor.execute(compiled.string, compiled.construct_params(params)).fetchone()
        finally:
            if not (raw.closed or raw.broken):
                raw.autocommit = False
    except psycopg.Error as err:
        raise roundtrip.wrapped(err, compiled.string, engine, pooled) from err
    finally:
        pooled.close()


_NO_SESSION_READS = frozenset({"realtime.stream", "realtime.stats", "reports.download"})


def reads_without_a_transaction() -> None:
    """Before an API GET or HEAD on PostgreSQL: the request's session reads in autocommit.

    Each statement then has its own snapshot, as it had in a READ COMMITTED transaction, without
    the transaction's BEGIN and ROLLBACK: two round trips of three for a one-statement read (GET
    /api/machines: ~4.5 -> ~3.5 ms of worker CPU, and a third of PostgreSQL's). A read that needs
    one snapshot for several statements asks for it itself (dispatchable_snapshot), and
    begin_write's rollback hands this connection back, so a write still gets its transaction.
    Not where the connection would sit idle: the stream (a reconnect storm would hold one per
    stream while it waits, and it often needs none: Hub.shared_snapshot), the report downloads
    (they read on a connection of their own) and the worker's own figures (which count the pool's
    connections).
    """
    if (
        request.method in ("GET", "HEAD")
        and request.path.startswith("/api/")
        and request.endpoint not in _NO_SESSION_READS
        and db.engine.dialect.name == "postgresql"
        and not db.session().in_transaction()  # (a test's own app context may hold one open)
    ):
        db.session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})


def begin_write() -> None:
    """Start a write transaction: IMMEDIATE on SQLite, so the lock is taken up front (there a
    transaction that reads and then writes fails at once with "database is locked" if another
    writer committed in between)."""
    session = db.session()
    session.rollback()
    session.connection(execution_options={"sqlite_immediate": True})


def begin_write_together() -> Connection:
    """begin_write for a transaction whose BEGIN goes with its first statements, in their round
    trip (roundtrip.send's `begin`), not in one of its own: PostgreSQL through psycopg only.

    The connection is in autocommit, so psycopg sends no BEGIN of its own; the BEGIN sent with
    the statements, and the COMMIT sent with the last ones, make the transaction. (psycopg's
    commit() and rollback() go by the server's transaction status, so a rollback still ends
    it, and the session's commit after that COMMIT sends nothing.)
    """
    session = db.session()
    session.rollback()
    return session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
