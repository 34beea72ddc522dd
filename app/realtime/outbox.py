"""The transactional outbox: events are rows written in the change's own transaction.

Ids must become visible in id order, so that a hub that sees id N knows every smaller id is
either committed or never will be. `emit()` only collects an event; the rows are inserted at the
very end of the transaction, by a `before_commit` hook: on Postgres it first takes a
transaction-scoped advisory lock, which the commit releases, so event inserts and commits are
serialized and the lock is held for one INSERT and the COMMIT only. Taking it last matters: a
transaction that took it early and then wanted a row lock (a machine's status) could deadlock
with one that holds that row and waits for the lock. SQLite serializes writers anyway.

Publishing happens after the commit (`after_commit`), never before, whatever path commits.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime

from sqlalchemy import func, insert, select, text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from app.common.schemas import iso
from app.extensions import broker, db
from app.models import Event, Product, utcnow
from app.observability import audit

log = logging.getLogger(__name__)

EVENT_LOCK_KEY = 0x7472_6B6F  # "trko": the one advisory lock that orders event commits
PENDING = "outbox"  # events emitted in the open transaction, not inserted yet
WRITTEN = "outbox_written"  # (id, json) of the events the committing transaction inserted


def event_json(type_: str, payload: dict, created_at: datetime) -> str:
    """The JSON of one SSE message; built the same way for live, replayed and gap-filled events."""
    return json.dumps(
        {"type": type_, "data": payload, "timestamp": iso(created_at)},
        separators=(",", ":"),
        default=str,
    )


LIVE_COUNT = object()  # a payload's "count" to be filled with the number of live products


def emit(type_: str, payload: dict) -> None:
    """Add an event to the current transaction: inserted when it commits, published after.

    A payload whose "count" is LIVE_COUNT gets the number of live products, counted under the
    event lock (see _write_pending): the count as of this event, not as of some racing writer's.
    """
    db.session.info.setdefault(PENDING, []).append((type_, payload))


def commit() -> list[tuple[int, str]]:
    """Commit the transaction; its events are published after the commit (never before)."""
    session = db.session
    published: list[tuple[int, str]] = []
    session.info["outbox_published"] = published
    try:
        session.commit()
    except Exception:
        session.rollback()
        raise
    finally:
        session.info.pop("outbox_published", None)
    return published


def is_unavailable_error(err: BaseException) -> bool:
    """A dropped or refused database connection, or none free in the pool in time (a burst the
    worker cannot serve yet): the client gets a 503, not a 500."""
    if isinstance(err, OperationalError | PoolTimeout):
        return True
    return isinstance(err, DBAPIError) and err.connection_invalidated


def _write_pending(session) -> None:
    """Insert the transaction's events last, under the lock that orders event commits."""
    pending = session.info.pop(PENDING, None)
    if not pending:
        return
    # The transaction's other changes go first: every row lock it needs is taken before the
    # event lock, so the event lock is never held while waiting for a row.
    session.flush()
    conn = session.connection()
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": EVENT_LOCK_KEY})
    counted = [payload for _, payload in pending if payload.get("count") is LIVE_COUNT]
    if counted:
        live = conn.execute(_LIVE_COUNT).scalar_one()
        for payload in counted:
            payload["count"] = live
    now = utcnow()  # commit order: created_at rises with the id, prune cuts a prefix
    rows = [{"type": type_, "payload": payload, "created_at": now} for type_, payload in pending]
    ids = conn.execute(
        insert(_EVENTS).returning(_EVENTS.c.id, sort_by_parameter_order=True), rows
    ).scalars()
    written = session.info.setdefault(WRITTEN, [])
    for event_id, row in zip(ids, rows, strict=True):
        written.append((event_id, event_json(row["type"], row["payload"], now)))
        audit.note_event(session, row["type"])


_EVENTS = Event.__table__
_LIVE_COUNT = select(func.count()).select_from(Product.__table__).where(Product.state == "ON")


def _publish_committed(session) -> None:
    messages = session.info.pop(WRITTEN, None)
    if not messages:
        return
    sink = session.info.get("outbox_published")
    if sink is not None:
        sink.extend(messages)
    try:
        broker.publish(messages)
    except Exception:  # the write is committed: the hubs' gap fill and tail check deliver it
        log.exception("publishing %d committed event(s) failed", len(messages))


def _forget_on_rollback(session) -> None:
    """A rolled-back transaction's events were never committed: drop them from the outbox."""
    session.info.pop(PENDING, None)
    session.info.pop(WRITTEN, None)


def init_outbox() -> None:
    from flask_sqlalchemy.session import Session
    from sqlalchemy import event

    for name, fn in (
        ("before_commit", _write_pending),
        ("after_commit", _publish_committed),
        ("after_rollback", _forget_on_rollback),
    ):
        if not event.contains(Session, name, fn):
            event.listen(Session, name, fn)
