"""The dispatchable list, kept in each worker from the events its hub delivers.

`GET /api/live-products/dispatchable` answers the whole list as of the last event. Built by the
database, that costs tens of milliseconds at a couple of thousand live products, and every
change to the list makes every open workpanel ask again. Yet every change is already in this
worker's hub, in id order, as a `dispatchable_products_update` (items added or replaced, ids
removed): the contract's promise is that a snapshot plus these updates is the list. So a worker
reads the list from the database once, at some event id, and from then on brings it forward
with the updates in the hub's window; the database is asked again only when the window does not
reach back far enough, or when the updates fail the check that each one's `count` is the
length of the list it leaves.

The list keeps the database's order, products by name then id, so Python must sort names as the
database does: by code point, which is what the C collations do (and SQLite's default). On any
other collation the list is built by the database on every change, as before (see `usable`).
"""

from __future__ import annotations

import bisect
import logging
import os
import threading
import time
from collections.abc import Callable

import orjson

from app.realtime.hub import gevent_patched

log = logging.getLogger(__name__)

# How long a request waits for this worker's hub to receive an event the database already has
# (published by another worker a moment ago) before it builds the list in the database instead.
HUB_WAIT_SECONDS = 0.05
_UPDATE = b'"type":"dispatchable_products_update"'
_DATA = b"\ndata: "
# Collations that order text by code point, as Python compares str.
_CODE_POINT_COLLATIONS = frozenset({"c", "posix", "c.utf-8", "c.utf8"})
KEPT = "live list"  # its name among the app's shared answers (app.common.http.SHARED_ANSWERS)


class Stale(Exception):
    """The updates do not take the kept list where they say: read it from the database again."""


class LiveList:
    """One worker's copy of the dispatchable list, as of event `at` (None: not read yet)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()  # gevent's, in a gevent worker: it blocks a greenlet only
        self.at: int | None = None
        self.items: dict[int, dict] = {}
        self.keys: list[tuple[str, int]] = []  # (name, id), in the list's order
        # The list as JSON, and GET's answer, for `at`: made when first asked for.
        self.encoded: bytes | None = None
        self.body: bytes | None = None

    # --- what GET answers ---------------------------------------------------------------------

    def answer(self, target: int, hub, read: Callable[[], tuple[str, int, int]]) -> bytes:
        """GET's body as of event `target` or later: from this copy when the hub has the events
        up to `target`, else read afresh (`read()`: the list's JSON, its length and the id of
        the last event it reflects, in one snapshot)."""
        with self.lock:
            self._bring_to(target, hub, read)
            if self.body is None:
                self.body = b'{"success":true,"dispatchableProducts":%s,"count":%d}' % (
                    self._encoded(),
                    len(self.keys),
                )
            return self.body

    def snapshot(self, hub, read, after: int | None) -> tuple[bytes, int, int]:
        """(the list as JSON, its length, the id of the event it is at) for a new stream: at the
        hub's last delivered event where the window allows, so Hub.shared_snapshot shares it
        with the worker's other new streams until the next event. Never older than `after`, the
        last event the client has seen (it may come from a worker that is ahead of this one)."""
        with self.lock:
            self._bring_to(max(hub.last_id, after or 0), hub, read)
            return self._encoded(), len(self.keys), self.at

    def first(self, n: int, target: int, hub, read) -> list[dict]:
        """The first `n` items as of event `target` or later (the dashboard's live products)."""
        with self.lock:
            self._bring_to(target, hub, read)
            return [self.items[pid] for _, pid in self.keys[:n]]

    def _encoded(self) -> bytes:
        if self.encoded is None:
            self.encoded = orjson.dumps([self.items[pid] for _, pid in self.keys])
        return self.encoded

    def _bring_to(self, target: int, hub, read) -> None:
        if self.at is None or self.at < target:
            _wait_for(hub, target)
            if not self._forward(hub, target):
                body, _, at = read()  # its length is the list's, counted again here
                self._seed(body, at)

    # --- keeping it current -------------------------------------------------------------------

    def _forward(self, hub, target: int) -> bool:
        """Apply the hub's updates after `at`; False when they cannot take it to `target`."""
        if self.at is None or hub.last_id < target:
            return False
        try:
            frames = hub.frames_after(self.at)
            if frames is None:
                return False
            for event_id, data in frames:
                if _UPDATE in data:
                    self._apply(orjson.loads(data[data.index(_DATA) + len(_DATA) :]))
                self.at = event_id
        except (Stale, ValueError, KeyError, TypeError, RuntimeError) as err:
            # RuntimeError: the window changed under a thread's feet (a threaded test server).
            log.warning("the kept dispatchable list is read again: %s", err)
            self.at = None
            return False
        self.encoded = self.body = None
        return self.at >= target

    def _apply(self, event: dict) -> None:
        if event["type"] != "dispatchable_products_update":
            return
        change = event["data"]
        for pid in change["removed"]:
            self._drop(pid)
        for item in change["added"]:
            self._drop(item["id"])
            self._put(item)
        count = change.get("count")
        if isinstance(count, int) and count != len(self.keys):
            raise Stale(f"an update says {count} live products, the kept list has {len(self.keys)}")

    def _seed(self, body: str, at: int) -> None:
        self.items, self.keys, self.encoded, self.body = {}, [], None, None
        for item in orjson.loads(body):
            self.items[item["id"]] = item
            self.keys.append((item["name"], item["id"]))
        self.keys.sort()  # the database's order already, on a code-point collation
        self.at = at

    def _put(self, item: dict) -> None:
        self.items[item["id"]] = item
        bisect.insort(self.keys, (item["name"], item["id"]))

    def _drop(self, pid: int) -> None:
        item = self.items.pop(pid, None)
        if item is not None:
            del self.keys[bisect.bisect_left(self.keys, (item["name"], pid))]


def kept(app, session) -> LiveList | None:
    """This worker's kept list, with its hub started; None where the list cannot be kept (see
    `usable`). It goes with the app's other shared answers."""
    from app.common.http import shared_slot
    from app.extensions import hub

    if not usable(app, collation(session)):
        return None
    hub.ensure_started()
    return shared_slot(app, KEPT, LiveList)


def _wait_for(hub, target: int) -> None:
    """Give the hub a moment to receive event `target`, committed and published by another
    worker: it is usually on its way through Redis. Only in a gevent worker, where the hub's
    listener runs while this request sleeps."""
    if hub.last_id >= target or not hub.subscribed or not gevent_patched():
        return  # (unsubscribed: Redis is away, and the hub reads the table every few seconds)
    import gevent

    deadline = time.monotonic() + HUB_WAIT_SECONDS
    while hub.last_id < target and time.monotonic() < deadline:
        gevent.sleep(0.001)


def usable(app, collation: str | None) -> bool:
    """Whether this process can keep the list: a code-point collation, and a hub that hears of
    every event here. That is a gevent worker (its hub listens to Redis in greenlets), or any
    process with the in-process broker, which hands the hub each commit's events at once."""
    if collation is None or collation.lower() not in _CODE_POINT_COLLATIONS:
        return False
    broker = app.extensions.get("trackopz_broker")
    return broker is not None and (broker.redis is None or gevent_patched())


# The provider column came with PostgreSQL 15 (before it every database was libc's), the builtin
# provider's locale with 17: read through to_jsonb, a column a version lacks is NULL, not an error.
_PG_COLLATION = """
SELECT CASE coalesce(to_jsonb(d) ->> 'datlocprovider', 'c')
         WHEN 'c' THEN d.datcollate
         WHEN 'b' THEN to_jsonb(d) ->> 'datlocale'
       END
FROM pg_database d WHERE d.datname = current_database()
"""

_collations: dict[tuple[int, object], str | None] = {}


def collation(session) -> str | None:
    """The collation products' names are ordered by: the database's default (the column sets
    none). Read once per process and database."""
    bind = session.get_bind()
    key = (os.getpid(), bind)  # the engine itself: no URL rendered on every request
    if key not in _collations:
        if bind.dialect.name == "sqlite":
            _collations[key] = "c"  # BINARY, the default: UTF-8 bytes, so code points
        elif bind.dialect.name == "postgresql":
            from sqlalchemy import text
            from sqlalchemy.exc import SQLAlchemyError

            try:
                _collations[key] = session.execute(text(_PG_COLLATION)).scalar()
            except SQLAlchemyError:  # asked again next time; meanwhile the database builds it
                log.warning("could not read the database's collation", exc_info=True)
                session.rollback()
                return None
        else:
            _collations[key] = None
        if (_collations[key] or "").lower() not in _CODE_POINT_COLLATIONS:
            log.info(
                "the database's collation (%s) does not sort names by code point: the "
                "dispatchable list is built by the database after every change, not kept here "
                "(docs/DEPLOYMENT.md, Sizing)",
                _collations[key] or "unknown",
            )
    return _collations[key]
