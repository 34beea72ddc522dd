"""Where a request's reads and writes meet the database.

The pool does not ping a connection when it is checked out (`pool_pre_ping` is off: that ping
was a round trip of every request). A connection found dead when used is dropped, and with it
every connection the pool had before (SQLAlchemy's invalidation): after a database restart, the
first statement of each worker fails, not one per pooled connection. The sign-in's read, which
every request makes first, tries once more on a new connection (`read_alone`), so a restart
costs a user nothing; a write that meets a dead connection answers 503, and writes nothing.
"""

from __future__ import annotations

from sqlalchemy import Connection, Row
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import Executable

from app.extensions import db


def read_alone(statement: Executable, params: dict) -> Row | None:
    """The first row of one read-only statement, outside any transaction: on a connection of
    its own in autocommit, so one round trip (no BEGIN and no ROLLBACK), and the request's
    session is left unopened for what the request does next. Tried again on a new connection
    if the pooled one was found dead."""
    for attempt in (1, 2):
        try:
            with db.engine.connect() as conn:
                conn = conn.execution_options(isolation_level="AUTOCOMMIT")
                return conn.execute(statement, params).first()
        except DBAPIError as err:
            if attempt == 2 or not err.connection_invalidated:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


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
