"""Where a request's write transaction begins: where it can, in the sign-in's read transaction,
so that the request uses one connection (one pool checkout, one ping) rather than two."""

from __future__ import annotations

from app.extensions import db

_READ_ONLY = "read_only_transaction"


def reads_only() -> None:
    """Note that the open transaction has only read so far (the sign-in's lookup)."""
    session = db.session()
    session.info[_READ_ONLY] = session.get_transaction()


def begin_write() -> None:
    """Start a write transaction: IMMEDIATE on SQLite, so the lock is taken up front (there a
    transaction that reads and then writes fails at once with "database is locked" if another
    writer committed in between).

    On PostgreSQL a transaction that has only read (see reads_only) goes on as the write one,
    unless the session holds ORM objects (a rollback would expire them, and a locking SELECT
    does not refresh an object already loaded): in READ COMMITTED each statement reads with a
    snapshot of its own, so nothing read before is held on to, and ending it would cost a
    ROLLBACK, and the next checkout a BEGIN and the pool's ping.
    """
    session = db.session()
    read_only = session.info.pop(_READ_ONLY, None)
    if (
        read_only is not None
        and read_only is session.get_transaction()
        and session.get_bind().dialect.name == "postgresql"
        and not (session.identity_map or session.new or session.deleted)
    ):
        return
    session.rollback()
    session.connection(execution_options={"sqlite_immediate": True})
