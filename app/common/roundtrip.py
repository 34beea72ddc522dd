"""Several statements sent to PostgreSQL in one round trip.

On the write path a round trip costs more than its statement does: the worker's CPU to send,
wait and wake (a gevent switch each time), the server's to read and answer, and, while the
transaction holds a lock, the wait of every writer queued behind it, for as long as this
greenlet waits for its turn among the worker's others. psycopg's pipeline mode does not avoid
that under gevent: each execute() in a pipeline waits on the socket, which is a switch.

So the statements go as one simple-protocol Query, their parameters bound on the client by
psycopg's own quoting (`ClientCursor.mogrify`, libpq's escaping). The server runs them one
after the other, each with its own snapshot (READ COMMITTED), as if sent one by one, and stops
at the first that fails, leaving the transaction aborted.

Only for PostgreSQL through psycopg (`together`); elsewhere callers execute the statements one
by one. Meant for statements built once (module level): each one's SQL is compiled once. Their
parameters are plain values psycopg adapts (no expanding IN lists, no types that need
SQLAlchemy's bind processing), and a simple Query is planned anew each time, as a statement
that SQLAlchemy and psycopg would have prepared is not: worth it for the few statements of a
transaction whose round trips hold locks.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import psycopg
from sqlalchemy import Connection, Engine, exc
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.sql import Executable

Statement = tuple[Executable, dict]


def together(conn: Connection | Engine) -> bool:
    """Whether `send` works on this connection (or this engine's)."""
    return conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg"


def run(
    conn: Connection, statements: Sequence[Statement], *, commit: bool = False
) -> list[list[tuple]]:
    """`send` where it works; elsewhere the statements one by one, and no COMMIT: where a
    caller asks for one here, the session's own commit follows (see outbox._write_pending)."""
    if together(conn):
        return send(conn, statements, commit=commit)
    results = []
    for stmt, params in statements:
        result = conn.execute(stmt, params)
        results.append(result.all() if result.returns_rows else [])
    return results


def send(
    conn: Connection, statements: Sequence[Statement], *, begin: bool = False, commit: bool = False
) -> list[list[tuple]]:
    """Run `statements` in `conn`'s open transaction in one round trip, then COMMIT in the
    same one if `commit`; each statement's rows (plain tuples; [] for a statement with none).
    `begin`: BEGIN the transaction first, in the same round trip (on a connection in autocommit:
    transactions.begin_write_together).

    A failure comes out as SQLAlchemy's exception for it (IntegrityError, OperationalError, ...),
    as if SQLAlchemy had sent the statement; a lost connection is invalidated.
    """
    raw = conn.connection.driver_connection
    quoting = psycopg.ClientCursor(raw)
    parts = []
    for stmt, params in statements:
        compiled = compile_once(stmt, conn.dialect)
        parts.append(quoting.mogrify(compiled.string, compiled.construct_params(params)))
    if begin:
        parts.insert(0, "BEGIN")
    if commit:
        parts.append("COMMIT")
    sql = ";\n".join(parts)
    cursor = raw.cursor()
    try:
        cursor.execute(sql)
        if begin:
            cursor.nextset()
        results = []
        for _ in statements:
            results.append(cursor.fetchall() if cursor.description is not None else [])
            cursor.nextset()
        return results
    except psycopg.Error as err:
        raise wrapped(err, sql, conn.engine, conn.connection, conn) from err
    finally:
        cursor.close()


@lru_cache(maxsize=256)
def compile_once(stmt: Executable, dialect):
    """`stmt` compiled for `dialect`, once: for statements built once (module level)."""
    return stmt.compile(dialect=dialect)


def wrapped(
    err: psycopg.Error, sql: str, engine: Engine, pooled: PoolProxiedConnection, conn=None
) -> exc.DBAPIError:
    """psycopg's `err`, met running `sql` past SQLAlchemy on the pooled connection `pooled` (held
    by the Connection `conn`, if any), as SQLAlchemy's exception for it.

    A lost connection is handled as SQLAlchemy handles one it detects itself: it is invalidated,
    and so is every connection the pool made before it (they are replaced when next checked
    out: after a database restart all of them are dead), and the exception says so
    (`connection_invalidated`), which on_a_live_connection goes by. The pool's `_invalidate` is
    what SQLAlchemy calls for that; it has no public name.
    """
    lost = engine.dialect.is_disconnect(err, pooled.driver_connection, None)
    if lost:
        engine.pool._invalidate(pooled, err, _checkin=False)
        (conn or pooled).invalidate(err)
    return exc.DBAPIError.instance(
        sql, None, err, psycopg.Error, connection_invalidated=lost, dialect=engine.dialect
    )
