"""The transactional outbox: events are rows written in the change's own transaction.

Ids must become visible in id order, so that a hub that sees id N knows every smaller id is
either committed or never will be. `emit()` only collects an event; the rows are inserted at the
very end of the transaction, by a `before_commit` hook: on Postgres it first takes a
transaction-scoped advisory lock, which the commit releases, so event inserts and commits are
serialized; the lock, the INSERT and the COMMIT reach the server in one round trip, so the lock
is held only while the server runs the INSERT and the COMMIT. Taking it last matters: a
transaction that took it early and then wanted a row lock (a machine's status) could deadlock
with one that holds that row and waits for the lock. SQLite serializes writers anyway.

Publishing happens after the commit (`after_commit`), never before, whatever path commits.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from sqlalchemy import Integer, TextClause, bindparam, column, text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from app.common import roundtrip
from app.common.schemas import iso
from app.extensions import broker, db
from app.models import Event, utcnow
from app.observability import audit

log = logging.getLogger(__name__)

EVENT_LOCK_KEY = 0x7472_6B6F  # "trko": the one advisory lock that orders event commits
PENDING = "outbox"  # events emitted in the open transaction, not inserted yet
WRITTEN = "outbox_written"  # (id, json) of the events the committing transaction inserted
LAST = "outbox_last"  # statements commit() runs before the events, and a list for their rows
HOLD = "outbox_hold"  # set: the committed events wait for publish_held() instead
HELD = "outbox_held"  # (id, json) of the committed events that wait for publish_held()


def event_json(type_: str, payload: dict, created_at: datetime) -> str:
    """The JSON of one SSE message; built the same way for live, replayed and gap-filled events."""
    return json.dumps(
        {"type": type_, "data": payload, "timestamp": iso(created_at)},
        separators=(",", ":"),
        default=str,
    )


@dataclass(frozen=True)
class LiveCount:
    """A payload's "count": to be filled with the number of live products as of its event.

    Counted under the event lock (see _write_pending): as of this event, not as of some racing
    writer's. `change`: how many products this event's change made live (less than 0: past).
    The count is taken once, after all of a transaction's changes, so an event that several
    changes follow gets it less theirs: each event the count right after its own change.
    """

    change: int = 0


def emit(type_: str, payload: dict) -> None:
    """Add an event to the current transaction: inserted when it commits, published after.

    A payload whose "count" is a LiveCount gets the number of live products (see LiveCount).
    """
    db.session.info.setdefault(PENDING, []).append((type_, payload))


def commit(*, last: Sequence[roundtrip.Statement] = ()) -> list[list[tuple]]:
    """Commit the transaction; its events are published after the commit (never before).

    `last`: statements to run at the end of the transaction, before its events are written;
    their rows are returned. On PostgreSQL they share the commit's round trip (see
    _write_pending): a write whose result is only needed for the response, or the read of what
    the transaction leaves, costs no round trip of its own.
    """
    session = db.session
    results: list[list[tuple]] = []
    session.info[LAST] = (list(last), results)
    try:
        session.commit()
    except Exception:
        session.rollback()
        raise
    finally:
        session.info.pop(LAST, None)
    return results


def is_unavailable_error(err: BaseException) -> bool:
    """A dropped or refused database connection, or none free in the pool in time (a burst the
    worker cannot serve yet): the client gets a 503, not a 500."""
    if isinstance(err, OperationalError | PoolTimeout):
        return True
    return isinstance(err, DBAPIError) and err.connection_invalidated


def _write_pending(session) -> None:
    """Run commit()'s last statements, then insert the transaction's events under the lock that
    orders event commits.

    On PostgreSQL the last statements, the lock, the INSERT and the COMMIT go in one round trip
    (app.common.roundtrip), so the lock is held only while the server runs the INSERT and the
    COMMIT: sent one by one, the greenlet holding it waited for each reply and then for its
    turn among the worker's other greenlets, and every writer of every worker waited with it.
    The session's own COMMIT that follows finds the transaction ended and sends nothing.
    """
    last, results = session.info.pop(LAST, ((), []))
    pending = session.info.pop(PENDING, None)
    if not pending and not last:
        return
    # The transaction's other changes go first: every row lock it needs is taken before the
    # event lock, so the event lock is never held while waiting for a row.
    session.flush()
    conn = session.connection()
    dialect = conn.dialect.name
    params: dict = {"now": utcnow()}
    bodies = []  # (type, payload without its LiveCount, whether it gets the count)
    later = 0  # what the LiveCounts after this event change
    for i, (type_, payload) in reversed(list(enumerate(pending or ()))):
        counted = isinstance(payload.get("count"), LiveCount)
        body = {k: v for k, v in payload.items() if k != "count"} if counted else payload
        head, tail = json.dumps(body), None
        if counted:
            head, tail = head[:-1] + (", " if body else "") + '"count": ', "}"
        params.update(
            {f"type_{i}": type_, f"head_{i}": head, f"tail_{i}": tail, f"off_{i}": -later}
        )
        if counted:
            later += payload["count"].change
        bodies.append((type_, body, counted))
    bodies.reverse()
    statements = list(last)
    if pending:
        if dialect == "postgresql":
            statements.append((_EVENT_LOCK, {"key": EVENT_LOCK_KEY}))
        statements.append((_insert_events(dialect, len(pending)), params))
    done = roundtrip.run(conn, statements, commit=True)
    results.extend(done[: len(last)])
    if not pending:
        return
    written = session.info.setdefault(WRITTEN, [])
    # Ids are drawn row by row in `ord` order; RETURNING's order is not promised.
    for (event_id, count, at), (type_, body, counted) in zip(sorted(done[-1]), bodies, strict=True):
        written.append(
            (event_id, event_json(type_, body | {"count": int(count)} if counted else body, at))
        )
        audit.note_event(session, type_)


_EVENT_LOCK = text("SELECT pg_advisory_xact_lock(:key)")


@lru_cache(maxsize=64)
def _insert_events(dialect: str, rows: int) -> TextClause:
    """One INSERT of `rows` events, in their order, that also counts the live products.

    A payload given as a head and a tail is stored as head, count, tail: the count is taken by
    this statement, whose snapshot starts after the event lock was granted, so it sees every
    earlier event's transaction, and the lock is held for this INSERT and the COMMIT only. The
    count runs once, and only if some row needs it (a CASE branch's sub-select).
    """
    listed = ", ".join(f"({i}, :type_{i}, :head_{i}, :tail_{i}, :off_{i})" for i in range(rows))
    payload = f"CASE WHEN tail IS NULL THEN head ELSE head || (({_LIVE_COUNT}) + off) || tail END"
    stamp = Event.__table__.c.created_at.type
    if dialect == "postgresql":
        # Text goes into a json column through a cast (SQLite's is text). The writer read its
        # clock before the lock was granted, so a writer that read it later may have gone
        # first: never stamp an event earlier than the one before it, so that created_at
        # rises with the id (the prune cuts a prefix of ids, a replay's times never go back).
        payload, stored_count = f"CAST({payload} AS JSON)", "payload ->> 'count'"
        now = "GREATEST(:now, (SELECT created_at FROM events ORDER BY id DESC LIMIT 1))"
    else:  # SQLite: the writer read its clock inside its write lock (BEGIN IMMEDIATE)
        stored_count, now = "json_extract(payload, '$.count')", ":now"
    return (
        text(
            f"WITH pending(ord, type, head, tail, off) AS (VALUES {listed}) "
            f"INSERT INTO events (type, payload, created_at) SELECT type, {payload}, {now} "
            f"FROM pending ORDER BY ord RETURNING id, {stored_count}, created_at"
        )
        .bindparams(bindparam("now", type_=stamp))
        .columns(column("id", Integer), column("count"), column("created_at", stamp))
    )


_LIVE_COUNT = "SELECT count(*) FROM products WHERE state = 'ON'"


def _publish_committed(session) -> None:
    messages = session.info.pop(WRITTEN, None)
    if session.info.pop(HOLD, False):
        session.info.setdefault(HELD, []).extend(messages or ())
    elif messages:
        _publish(messages)


def publish_held() -> None:
    """Publish the events that commits made with HOLD set in this session held back."""
    messages = db.session.info.pop(HELD, None)
    if messages:
        _publish(messages)


def _publish(messages: list[tuple[int, str]]) -> None:
    try:
        broker.publish(messages)
    except Exception:  # the write is committed: the hubs' gap fill and tail check deliver it
        log.exception("publishing %d committed event(s) failed", len(messages))


def _forget_on_rollback(session) -> None:
    """A rolled-back transaction's events were never committed: drop them from the outbox."""
    session.info.pop(PENDING, None)
    session.info.pop(WRITTEN, None)
    session.info.pop(LAST, None)
    session.info.pop(HOLD, None)


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
