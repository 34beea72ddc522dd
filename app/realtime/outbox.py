"""The transactional outbox: events are rows written in the change's own transaction.

Ids must become visible in id order, so that a hub that sees id N knows every smaller id is
either committed or never will be. On Postgres a transaction-scoped advisory lock is taken just
before the first event row is inserted and released by the commit, so event inserts and commits
are serialized (held for one INSERT and the COMMIT); SQLite serializes writers anyway.
"""

from __future__ import annotations

import json
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, OperationalError

from app.common.schemas import iso
from app.extensions import broker, db
from app.models import Event, utcnow

EVENT_LOCK_KEY = 0x7472_6B6F  # "trko": the one advisory lock that orders event commits


def event_json(type_: str, payload: dict, created_at: datetime) -> str:
    """The JSON of one SSE message; built the same way for live, replayed and gap-filled events."""
    return json.dumps(
        {"type": type_, "data": payload, "timestamp": iso(created_at)},
        separators=(",", ":"),
        default=str,
    )


def emit(type_: str, payload: dict) -> Event:
    """Add an event to the current transaction; it is published after `commit()`."""
    session = db.session
    pending = session.info.setdefault("outbox", [])
    if not pending and session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": EVENT_LOCK_KEY})
    event = Event(type=type_, payload=payload, created_at=utcnow())
    session.add(event)
    session.flush()
    pending.append(event)
    return event


def commit() -> list[tuple[int, str]]:
    """Commit the transaction, then hand its events to the broker (after the commit, never before)."""
    session = db.session
    events = session.info.pop("outbox", [])
    try:
        session.commit()
    except Exception:
        session.rollback()
        raise
    messages = [(e.id, event_json(e.type, e.payload, e.created_at)) for e in events]
    if messages:
        broker.publish(messages)
    return messages


def is_unavailable_error(err: BaseException) -> bool:
    """A dropped or refused database connection: the client gets a 503, not a 500."""
    if isinstance(err, OperationalError):
        return True
    return isinstance(err, DBAPIError) and err.connection_invalidated


def _forget_on_rollback(session) -> None:
    session.info.pop("outbox", None)


def init_outbox() -> None:
    """A rolled-back transaction's events were never committed: drop them from the outbox."""
    from flask_sqlalchemy.session import Session
    from sqlalchemy import event

    if not event.contains(Session, "after_rollback", _forget_on_rollback):
        event.listen(Session, "after_rollback", _forget_on_rollback)
