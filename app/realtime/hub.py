"""One hub per worker: one subscription in, many SSE clients out.

Every event is turned into its SSE frame once per worker and appended to each client's small
pending list; the client's own greenlet writes whatever is pending in one write. Events leave
the hub in id order with no gaps: a jump in ids is filled from the events table first (ids
commit in order, see outbox.py, so what the table lacks then was rolled back and never was).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections import deque

log = logging.getLogger(__name__)

CLIENTS_KEY = "trackopz:clients:"


def frame(event_id: int, body: str) -> bytes:
    return b"id: %d\ndata: %s\n\n" % (event_id, body.encode())


class Client:
    """One open stream: what is waiting to be written, and a wake-up for its greenlet."""

    __slots__ = ("pending", "wakeup", "closed", "bound", "reason")

    def __init__(self, bound: int):
        from gevent.event import Event

        self.pending: deque[tuple[int, bytes]] = deque()
        self.wakeup = Event()
        self.closed = False
        self.bound = bound
        self.reason = ""

    def push(self, event_id: int, data: bytes) -> bool:
        if len(self.pending) >= self.bound:
            self.close("fell behind")
            return False
        self.pending.append((event_id, data))
        self.wakeup.set()
        return True

    def close(self, reason: str = "closed") -> None:
        if not self.closed:
            self.closed = True
            self.reason = reason
        self.wakeup.set()

    def take(self, timeout: float) -> list[tuple[int, bytes]]:
        """Whatever is pending, waiting up to `timeout` seconds for something."""
        if not self.pending and not self.closed:
            self.wakeup.wait(timeout)
        self.wakeup.clear()
        items = list(self.pending)
        self.pending.clear()
        return items


class Hub:
    def __init__(self) -> None:
        self.app = None
        self.clients: set[Client] = set()
        self.window: deque[tuple[int, bytes]] = deque(maxlen=2000)
        self.last_id = 0
        self.started = False
        self.subscribed = False
        self.delivered_total = 0
        self.dropped_slow = 0
        self.redis_reconnects = 0
        self.gap_fills = 0
        self._lock = None
        self._greenlets: list = []
        self.worker_key = f"{CLIENTS_KEY}{socket.gethostname()}:{os.getpid()}"

    def init_app(self, app) -> None:
        self.app = app
        self.window = deque(maxlen=app.config["SSE_WINDOW"])
        self.started = False
        self.clients = set()
        self.last_id = 0
        app.extensions["trackopz_hub"] = self

    # --- life -------------------------------------------------------------------------------

    def ensure_started(self) -> None:
        """Start in the worker that serves, never in a parent that will fork."""
        if self.started and self._pid == os.getpid():
            return
        import gevent
        from gevent.lock import Semaphore

        self._pid = os.getpid()
        self.started = True
        self.clients = set()
        self._lock = Semaphore()
        self.worker_key = f"{CLIENTS_KEY}{socket.gethostname()}:{os.getpid()}"
        with self.app.app_context():
            from app.extensions import db
            from app.lifecycle.service import last_event_id

            self.last_id = last_event_id()
            db.session.remove()
        broker = self.app.extensions["trackopz_broker"]
        if broker.redis is not None:
            self._greenlets = [
                gevent.spawn(self._listen, broker),
                gevent.spawn(self._heartbeat, broker),
            ]
        else:
            self.subscribed = True

    # --- clients ----------------------------------------------------------------------------

    def register(self) -> Client:
        self.ensure_started()
        client = Client(self.app.config["SSE_CLIENT_QUEUE"])
        self.clients.add(client)
        return client

    def unregister(self, client: Client) -> None:
        self.clients.discard(client)
        client.close()

    def connected_clients(self) -> int:
        """Stream clients of every worker (each reports its count to Redis with a TTL)."""
        broker = self.app.extensions["trackopz_broker"] if self.app else None
        if broker is None or broker.redis is None:
            return len(self.clients)
        try:
            total = 0
            keys = list(broker.redis.scan_iter(match=CLIENTS_KEY + "*", count=500))
            if keys:
                total = sum(int(v) for v in broker.redis.mget(keys) if v is not None)
            mine = broker.redis.get(self.worker_key) if self.started else None
            # This worker's own figure is current; the stored one may be seconds old.
            return total - (int(mine) if mine is not None else 0) + len(self.clients)
        except Exception:  # Redis down: say what this worker knows
            return len(self.clients)

    def frames_after(self, after: int) -> list[tuple[int, bytes]] | None:
        """The window's frames after id `after`, or None when the window does not reach back."""
        if not self.window:
            return [] if after >= self.last_id else None
        first = self.window[0][0]
        if after < first - 1:
            return None
        return [item for item in self.window if item[0] > after]

    # --- events in --------------------------------------------------------------------------

    def on_messages(self, messages: list[tuple[int, str]]) -> None:
        """Deliver committed events; ids at or below the last delivered one are repeats."""
        with self._lock_ctx():
            for event_id, body in messages:
                if event_id <= self.last_id:
                    continue
                if event_id > self.last_id + 1:
                    self._fill(event_id - 1)
                self._deliver(event_id, frame(event_id, body))

    def on_raw(self, raw: bytes) -> None:
        head, _, body = raw.partition(b"|")
        try:
            event_id = int(head)
        except ValueError:
            log.warning("ignored a malformed message on the channel")
            return
        with self._lock_ctx():
            if event_id <= self.last_id:
                return
            if event_id > self.last_id + 1:
                self._fill(event_id - 1)
            self._deliver(event_id, b"id: %d\ndata: %s\n\n" % (event_id, body))

    def catch_up(self) -> None:
        """Deliver whatever the table has beyond what this hub has seen."""
        with self._lock_ctx():
            self._fill(None)

    def _lock_ctx(self):
        if self._lock is None:
            self.ensure_started()
        return self._lock

    def _fill(self, upto: int | None) -> None:
        from sqlalchemy import select

        from app.extensions import db
        from app.models import Event
        from app.realtime.outbox import event_json

        with self.app.app_context():
            try:
                stmt = select(Event.id, Event.type, Event.payload, Event.created_at).where(
                    Event.id > self.last_id
                )
                if upto is not None:
                    stmt = stmt.where(Event.id <= upto)
                rows = db.session.execute(stmt.order_by(Event.id).limit(10000)).all()
            finally:
                db.session.remove()
        if rows:
            self.gap_fills += 1
        for event_id, type_, payload, created_at in rows:
            self._deliver(event_id, frame(event_id, event_json(type_, payload, created_at)))

    def _deliver(self, event_id: int, data: bytes) -> None:
        self.last_id = event_id
        self.window.append((event_id, data))
        dropped = 0
        for client in list(self.clients):
            if not client.push(event_id, data):
                self.clients.discard(client)
                dropped += 1
        self.dropped_slow += dropped
        self.delivered_total += len(self.clients)

    # --- redis --------------------------------------------------------------------------------

    def _listen(self, broker) -> None:
        import gevent
        import redis

        delay = 0.1
        while True:
            pubsub = None
            try:
                pubsub = broker.redis.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(broker.channel)
                pubsub.get_message(timeout=1)  # the subscribe confirmation
                self.subscribed = True
                delay = 0.1
                self.catch_up()  # what was committed while we were not listening
                while True:
                    message = pubsub.get_message(timeout=5)
                    if message is None:
                        self._tail_check()
                        continue
                    if message["type"] == "message":
                        self.on_raw(message["data"])
            except (redis.RedisError, OSError) as err:
                if self.subscribed:
                    log.warning("redis subscription lost (%s); reconnecting", err)
                self.subscribed = False
                self.redis_reconnects += 1
            except Exception:
                self.subscribed = False
                log.exception("hub listener failed; restarting it")
            finally:
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except Exception:
                        pass
            gevent.sleep(delay)
            delay = min(delay * 2, 2.0)

    def _tail_check(self) -> None:
        """A quiet channel: make sure no committed event was left unpublished (a dead worker's)."""
        from sqlalchemy import func, select

        from app.extensions import db
        from app.models import Event

        with self.app.app_context():
            try:
                newest = db.session.scalar(select(func.max(Event.id))) or 0
            except Exception:
                log.warning("tail check could not reach the database")
                return
            finally:
                db.session.remove()
        if newest > self.last_id:
            self.catch_up()

    def _heartbeat(self, broker) -> None:
        import gevent

        while True:
            try:
                broker.redis.set(self.worker_key, len(self.clients), ex=15)
            except Exception:
                pass
            gevent.sleep(5)

    def stats(self) -> dict:
        return {
            "clients": len(self.clients),
            "lastEventId": self.last_id,
            "subscribed": self.subscribed,
            "delivered": self.delivered_total,
            "droppedSlow": self.dropped_slow,
            "redisReconnects": self.redis_reconnects,
            "gapFills": self.gap_fills,
            "checkedAt": time.time(),
        }
