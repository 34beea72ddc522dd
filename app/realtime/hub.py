"""One hub per worker: one subscription in, many SSE clients out.

Every event is turned into its SSE frame (and its HTTP chunk) once per worker. An idle client
gets the chunk written to its socket by the hub at once; a busy one gets it appended to its small
pending list, and its own greenlet writes whatever is pending in one write. Events leave
the hub in id order with no gaps: a jump in ids waits a moment for the smaller ids' publishes
(racing writers publish in any order), then is filled from the events table (ids commit in
order, see outbox.py, so what the table lacks then was rolled back and never was).
While Redis is down the hub reads new events from the table every couple of seconds instead.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections import deque
from contextlib import contextmanager

log = logging.getLogger(__name__)

FILL_BATCH = 1000
HEARTBEAT_SECONDS = 5.0
HEARTBEAT_TTL = 15
STALLED_SECONDS = 30.0  # an owned stream whose peer takes nothing for this long is let go
QUIET_SECONDS = 5.0  # a channel this quiet gets a tail check against the table
OUTAGE_POLL_SECONDS = 2.0
# How long a later event waits for a smaller id's publish before the table is asked for it.
# Writers publish after their commits, in whatever order their greenlets get to it.
GAP_GRACE_SECONDS = 0.05
MESSAGES_AT_ONCE = 500  # read from the channel at once, and sent to each client in one write


def gevent_patched() -> bool:
    """Whether gevent runs this process's sockets (a gunicorn gevent worker): only then does the
    hub's Redis listener run while a request sleeps."""
    try:
        from gevent import monkey
    except ImportError:  # pragma: no cover
        return False
    return monkey.is_module_patched("socket")


def frame(event_id: int, body: str | bytes) -> bytes:
    data = body.encode() if isinstance(body, str) else body
    return b"id: %d\ndata: %s\n\n" % (event_id, data)


def chunk(data: bytes) -> bytes:
    """`data` as one HTTP/1.1 chunk: what a direct-mode stream's socket gets."""
    return b"%X\r\n%s\r\n" % (len(data), data)


class Client:
    """One open stream: what is waiting to be written to it, and how.

    Queued (where the hub cannot own the connection: the test client, TLS, HTTP/1.0): the hub
    appends frames to `pending` and wakes the stream's greenlet, which writes them.

    Owned (`adopt`, a plain HTTP/1.1 connection under gunicorn, once its first message is
    written): the request is over for gunicorn and the hub holds the socket itself. The chunk
    of the events that came together is sent with one non-blocking `send` from the hub's loop;
    what a full socket buffer does not take waits in `rest` and `backlog` and goes out when a
    write watcher says the socket can take more; past `bound` events waiting the client is let
    go. A read watcher notices a hang-up, the hub's tender sends the keepalives. No greenlet, no
    request and no response object stays behind per idle stream.
    """

    __slots__ = (
        "pending",
        "wakeup",
        "closed",
        "bound",
        "reason",
        "sock",
        "owned",
        "cursor",
        "rest",
        "backlog",
        "waiting",
        "send",
        "wrote",
        "reader",
        "peek",
        "writer",
        "on_close",
    )

    def __init__(self, bound: int):
        from gevent.event import Event

        self.pending: deque[tuple[int, bytes]] = deque()
        self.wakeup = Event()
        self.closed = False
        self.bound = bound
        self.reason = ""
        self.sock = None  # the connection, when the server gives it: a slow client is cut off
        self.owned = False
        self.cursor = 0  # owned: the newest event id sent or waiting in `rest`/`backlog`
        self.rest = b""  # owned: the unsent end of what was last sent
        self.backlog: list[bytes] = []  # owned: chunks waiting behind `rest`
        self.waiting = 0  # owned: how many events the backlog holds
        self.send = None
        self.wrote = 0.0  # owned: when something was last sent (for keepalives)
        self.reader = None  # notices a hang-up at once, even when nothing is being sent
        self.peek = None  # the connection's non-blocking recv, for the reader
        self.writer = None
        self.on_close = None

    def watch(self, sock) -> None:
        """Close this client as soon as the peer of `sock` hangs up: a read watcher, no
        greenlet. It stays on the same descriptor when the hub adopts the connection."""
        from gevent import get_hub

        self.sock = sock
        self.peek = getattr(sock, "_sock", sock).recv  # gevent's socket wraps a non-blocking one
        self.reader = get_hub().loop.io(sock.fileno(), 1)
        self.reader.start(self._readable)

    def adopt(self, fd: int, cursor: int, on_close) -> None:
        """Own the connection `fd` from here on (see the class docstring); the frames queued
        so far are sent first. `on_close(client)` runs once when the client closes."""
        from gevent import get_hub
        from gevent.monkey import get_original

        try:
            sock = get_original("socket", "socket")(fileno=fd)
        except BaseException:
            os.close(fd)  # the request's socket object let go of it: nobody else closes it
            raise
        sock.setblocking(False)
        if self.reader is None:
            self.watch(sock)
        else:  # the reader goes on, on the same descriptor, with this socket object
            self.sock, self.peek = sock, sock.recv
        self.send = sock.send
        self.on_close = on_close
        self.cursor = cursor
        self.wrote = time.monotonic()
        queued, self.pending, self.wakeup = self.pending, (), None
        self.owned = True
        self.writer = get_hub().loop.io(fd, 2)
        for event_id, data in queued:
            if event_id > self.cursor and not self.push_chunk(event_id, chunk(data), self.wrote):
                return

    def push(self, event_id: int, data: bytes) -> bool:
        if len(self.pending) >= self.bound:
            self.close("fell behind")
            return False
        self.pending.append((event_id, data))
        self.wakeup.set()
        return True

    def push_chunk(self, event_id: int, data: bytes, now: float, events: int = 1) -> bool:
        """Owned: send the chunk `data` (`events` events, up to `event_id`) now, or queue it
        behind what is still unsent."""
        if self.closed:
            return False
        if self.rest:
            if self.waiting + events > self.bound:
                self.close("fell behind")
                return False
            self.backlog.append(data)
            self.waiting += events
            self.cursor = event_id
            return True
        self.cursor = event_id
        return self._send(data, now)

    def _send(self, data: bytes, now: float) -> bool:
        try:
            sent = self.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self.close("client went away")
            return False
        if sent:
            self.wrote = now
        if sent < len(data):
            self.rest = data[sent:]
            self.writer.start(self._writable)
        return True

    def _writable(self) -> None:
        data = b"".join([self.rest, *self.backlog]) if self.backlog else self.rest
        self.rest = b""
        self.backlog.clear()
        self.waiting = 0
        if self._send(data, time.monotonic()) and not self.rest:
            self.writer.stop()

    def _readable(self) -> None:
        from socket import MSG_PEEK

        try:
            if self.peek(1, MSG_PEEK) != b"":
                self.reader.stop()  # the client sent something: an SSE client has nothing to say
                return
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            pass
        self.close("client went away")

    def keepalive(self, now: float) -> None:
        """Owned: a comment line, unless something is still on its way anyway."""
        if not self.closed and not self.rest:
            self._send(KEEPALIVE_CHUNK, now)

    def close(self, reason: str = "closed") -> None:
        if self.closed:
            return
        self.closed = True
        self.reason = reason
        if self.reader is not None:
            self.reader.stop()
            self.reader.close()
        if self.owned:
            self._hang_up(reason)
            return
        if reason == "fell behind" and self.sock is not None:
            # Its greenlet may be stuck writing to a peer that does not read: end that write.
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.wakeup.set()

    def _hang_up(self, reason: str) -> None:
        """Owned: end the connection (a server going away ends the body properly first)."""
        self.writer.stop()
        self.writer.close()
        sock = self.sock
        try:
            if reason == "server stopping":
                sock.send(self.rest + LAST_CHUNK)
            elif reason == "fell behind":
                sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()
        self.rest = b""
        self.backlog = []
        on_close, self.on_close = self.on_close, None
        if on_close is not None:
            on_close(self)

    def take(self, timeout: float) -> list[tuple[int, bytes]]:
        """Queued: whatever is pending, waiting up to `timeout` seconds for something."""
        if not self.pending and not self.closed:
            self.wakeup.wait(timeout)
        self.wakeup.clear()
        items = list(self.pending)
        self.pending.clear()
        return items


KEEPALIVE = b": keepalive\n\n"
KEEPALIVE_CHUNK = chunk(KEEPALIVE)
LAST_CHUNK = b"0\r\n\r\n"  # the end of a chunked body


def _ended(lease, on_end) -> None:
    try:
        lease.release()
    except Exception:  # noqa: BLE001 - an unreturned lease expires by itself
        log.exception("could not give a stream lease back")
    if on_end is not None:
        on_end()


class Hub:
    def __init__(self) -> None:
        self.app = None
        self.clients: set[Client] = set()
        self.window: deque[tuple[int, bytes]] = deque(maxlen=2000)
        self.last_id = 0
        self.snapshot: tuple[int, bytes, int] | None = None  # see shared_snapshot()
        self.started = False
        self.subscribed = False
        self.delivered_total = 0
        self.dropped_slow = 0
        self.redis_reconnects = 0
        self.gap_fills = 0
        self.clients_key_prefix = "trackopz:events:clients:"
        self.worker_key = ""
        self._pid = None
        self._lock = None
        self._starting = None
        self._changed = None
        self._greenlets: list = []
        self._tender = None
        self._ending: set = set()  # greenlets giving back the leases of ended owned streams
        self._early: dict[int, bytes] = {}  # frames of events that came before a smaller id
        self._gap_since = 0.0  # when the oldest of them came
        self._gap_timer = None  # when the table is asked for what _early waits for
        self._batch: list[tuple[int, bytes]] | None = None  # see _batched()

    def init_app(self, app) -> None:
        self.stop()
        self.app = app
        self.window = deque(maxlen=app.config["SSE_WINDOW"])
        self.started = False
        self.subscribed = False
        self.clients = set()
        self.last_id = 0
        self.snapshot = None
        # Namespaced by the channel: deployments sharing a Redis do not count each other.
        self.clients_key_prefix = f"{app.config['REDIS_CHANNEL']}:clients:"
        app.extensions["trackopz_hub"] = self

    # --- life -------------------------------------------------------------------------------

    def ensure_started(self) -> None:
        """Start in the worker that serves, never in a parent that will fork."""
        if self.started and self._pid == os.getpid():
            return
        from gevent.event import Event
        from gevent.lock import Semaphore

        if self._starting is not None and self._starting[0] == os.getpid():
            self._starting[1].wait()  # another greenlet of this worker is starting it
            if self.started:
                return
        starting = Semaphore()
        starting.acquire()
        self._starting = (os.getpid(), starting)
        try:
            self._greenlets = []  # a forked child does not own its parent's greenlets
            self._tender = None
            self.clients = set()
            self.window.clear()
            self.snapshot = None
            self._lock = Semaphore()
            self._early = {}
            self._gap_timer = None
            self._changed = Event()
            self.subscribed = False
            self.worker_key = f"{self.clients_key_prefix}{socket.gethostname()}:{os.getpid()}"
            with self.app.app_context():
                from app.extensions import db
                from app.lifecycle.service import last_event_id

                try:
                    self.last_id = last_event_id()
                finally:
                    db.session.remove()
            self._pid = os.getpid()
            self.started = True
            self._spawn_loops()
        finally:
            starting.release()

    def _spawn_loops(self) -> None:
        import gevent

        broker = self.app.extensions["trackopz_broker"]
        if broker.redis is not None:
            self._greenlets = [
                gevent.spawn(self._listen, broker),
                gevent.spawn(self._heartbeat, broker),
            ]
        else:
            self.subscribed = True

    def stop(self) -> None:
        """Stop this worker's loops, end its streams and withdraw its client count."""
        mine = self._pid == os.getpid()
        if mine:
            for greenlet in [*self._greenlets, self._gap_timer]:
                if greenlet is not None:
                    greenlet.kill(block=False)
            self._gap_timer = None
            for client in list(self.clients):
                client.close("server stopping")
            if self._ending:  # a stopping worker gives its streams' leases back before it exits
                import gevent

                gevent.joinall(list(self._ending), timeout=2)
            broker = self.app.extensions.get("trackopz_broker") if self.app else None
            if broker is not None and broker.redis is not None and self.worker_key:
                try:
                    broker.redis.delete(self.worker_key)
                except Exception:  # noqa: BLE001 - Redis down: the key expires by itself
                    pass
        self._greenlets = []
        self.started = False

    # --- clients ----------------------------------------------------------------------------

    def register(self, sock=None) -> Client:
        self.ensure_started()
        client = Client(self.app.config["SSE_CLIENT_QUEUE"])
        if sock is not None:
            client.watch(sock)
        self.clients.add(client)
        self._count_changed()
        return client

    def adopt(self, client: Client, fd: int, cursor: int, lease, on_end=None) -> None:
        """Take over a stream's connection once its first message is written (Client.adopt).
        When the connection ends, the stream's lease goes back and `on_end()` runs."""
        import gevent

        def closed(client: Client) -> None:
            self.unregister(client)
            # Redis I/O and logging: not in the loop's callback that may have closed it.
            ending = gevent.spawn(_ended, lease, on_end)
            self._ending.add(ending)
            ending.link(self._ending.discard)

        self._ensure_tender()
        client.adopt(fd, cursor, closed)

    def _ensure_tender(self) -> None:
        import gevent

        if self._tender is None or self._tender.dead or self._pid != os.getpid():
            self._tender = gevent.spawn(self._tend)
            self._greenlets.append(self._tender)

    def _tend(self) -> None:
        """Keepalives for the owned connections: each gets one when nothing was sent to it for
        SSE_KEEPALIVE_SECONDS (checked every quarter of that, at most every second)."""
        import gevent

        keepalive = self.app.config["SSE_KEEPALIVE_SECONDS"]
        tick = min(1.0, keepalive / 4)
        stalled = max(STALLED_SECONDS, 2 * keepalive)
        while True:
            gevent.sleep(tick)
            now = time.monotonic()
            due = now - keepalive
            for client in [c for c in self.clients if c.owned and c.wrote <= due]:
                if client.rest and client.wrote <= now - stalled:
                    # A peer that takes nothing (a full window) and gets no events is let go
                    # too, not only one that falls SSE_CLIENT_QUEUE events behind.
                    client.close("fell behind")
                    self.dropped_slow += 1
                else:
                    client.keepalive(now)

    def unregister(self, client: Client) -> None:
        if client in self.clients:
            self.clients.discard(client)
            self._count_changed()
        client.close()

    def _count_changed(self) -> None:
        if self._changed is not None:
            self._changed.set()

    def connected_clients(self) -> int:
        """Stream clients of every worker (each reports its count to Redis with a TTL)."""
        broker = self.app.extensions["trackopz_broker"] if self.app else None
        mine = len(self.clients) if self._pid == os.getpid() else 0
        if broker is None or broker.redis is None:
            return mine
        try:
            total = 0
            keys = [
                k
                for k in broker.redis.scan_iter(match=self.clients_key_prefix + "*", count=500)
                if k.decode() != self.worker_key
            ]
            if keys:
                total = sum(int(v) for v in broker.redis.mget(keys) if v is not None)
            # This worker's own figure is current; the stored one may be a moment old.
            return total + mine
        except Exception:  # noqa: BLE001 - Redis down: say what this worker knows
            return mine

    def shared_snapshot(self, after: int | None, read) -> tuple[int, bytes, int]:
        """(event id, dispatchable list as JSON, its length) for a new stream: `read()` gives
        (JSON text or bytes, length, event id), from the database or the worker's kept list
        (livelist.py); its result is shared by this worker's new streams while nothing changes.

        A snapshot taken at event id S stays right for a client registered here while the last
        delivered id is still S: every later event reaches that client through the hub. So a
        reconnect storm costs one query and no JSON encoding per worker, not one per client. A
        client that has seen more than this hub (it comes from a worker that was ahead) gets a
        snapshot read now: one at S would look older than its Last-Event-ID, a resync.
        """
        cached = self.snapshot
        if (
            cached is not None
            and cached[0] == self.last_id
            and (after is None or after <= cached[0])
        ):
            return cached
        body, count, snapshot_id = read()
        snapshot = (snapshot_id, body.encode() if isinstance(body, str) else body, count)
        if snapshot_id == self.last_id:
            self.snapshot = snapshot
        return snapshot

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
        """Committed events from this process's own writers (the in-process broker)."""
        with self._lock_ctx(), self._batched():
            for event_id, body in messages:
                self._accept(event_id, frame(event_id, body))

    def on_raw(self, *raws: bytes) -> None:
        """Committed events from the channel, each `id|json`: as many as came together, and
        each client gets them in one write."""
        with self._lock_ctx(), self._batched():
            for raw in raws:
                head, _, body = raw.partition(b"|")
                try:
                    event_id = int(head)
                except ValueError:
                    log.warning("ignored a malformed message on the channel")
                    continue
                self._accept(event_id, frame(event_id, body))

    def _accept(self, event_id: int, data: bytes) -> None:
        """Deliver events in id order, each once (ids at or below the last one are repeats).

        An event that comes ahead of a smaller id usually has that id's publish a moment behind
        it (its writer committed first but published second), so it waits for it, at most
        GAP_GRACE_SECONDS: then the table fills the gap, when the timer fires or when the next
        event comes, whichever is first. Waiting also spares the publishing request a second
        database connection (the in-process broker publishes from the request).
        """
        if event_id <= self.last_id or event_id in self._early:
            return
        if event_id == self.last_id + 1:
            self._deliver(event_id, data)
            self._release_early()
            return
        now = time.monotonic()
        if not self._early:
            self._gap_since = now
        self._early[event_id] = data
        if now - self._gap_since >= GAP_GRACE_SECONDS:
            self._fill(max(self._early))
        elif self._gap_timer is None:
            import gevent

            self._gap_timer = gevent.spawn_later(GAP_GRACE_SECONDS, self._gap_expired)

    def _release_early(self) -> None:
        """Deliver the early events that are next in line; forget those already delivered."""
        early = self._early
        while self.last_id + 1 in early:
            event_id = self.last_id + 1
            self._deliver(event_id, early.pop(event_id))
        for event_id in [i for i in early if i <= self.last_id]:
            del early[event_id]
        # A timer left running finds nothing to do, or a newer gap to fill a little early;
        # killing it could interrupt it in the middle of its table read.

    def _gap_expired(self) -> None:
        """A gap that publishing did not close in time: what it lacks is read from the table."""
        import gevent

        with self._lock_ctx():
            self._gap_timer = None
            if not self._early:
                return
            try:
                self._fill(max(self._early))
            except Exception:  # noqa: BLE001 - the database may be away: try again later
                log.warning("hub could not read the events table to fill a gap")
                self._gap_timer = gevent.spawn_later(OUTAGE_POLL_SECONDS, self._gap_expired)

    def catch_up(self) -> None:
        """Deliver whatever the table has beyond what this hub has seen."""
        with self._lock_ctx():
            self._fill(None)

    def _lock_ctx(self):
        if self._lock is None or self._pid != os.getpid():
            self.ensure_started()
        return self._lock

    def _fill(self, upto: int | None) -> None:
        """Deliver the table's events after `last_id` (up to `upto`), in batches, in id order."""
        from sqlalchemy import select

        from app.extensions import db
        from app.models import Event
        from app.realtime.outbox import event_json

        filled = False
        while upto is None or self.last_id < upto:
            with self.app.app_context():
                try:
                    stmt = select(Event.id, Event.type, Event.payload, Event.created_at).where(
                        Event.id > self.last_id
                    )
                    if upto is not None:
                        stmt = stmt.where(Event.id <= upto)
                    rows = db.session.execute(stmt.order_by(Event.id).limit(FILL_BATCH)).all()
                finally:
                    db.session.remove()
            with self._batched():
                for event_id, type_, payload, created_at in rows:
                    self._deliver(event_id, frame(event_id, event_json(type_, payload, created_at)))
            filled = filled or bool(rows)
            if len(rows) < FILL_BATCH:
                break
        if filled:
            self.gap_fills += 1
        if self._early:
            self._release_early()

    @contextmanager
    def _batched(self):
        """Events delivered inside this block reach each client in one write when it ends: the
        events of one commit (a transaction's three, a group's dozen) cost each owned
        connection one `send`, not one each. Nested blocks join the outer one."""
        if self._batch is not None:
            yield
            return
        self._batch = []
        try:
            yield
        finally:
            batch, self._batch = self._batch, None
            if batch:
                self._send_out(batch)

    def _deliver(self, event_id: int, data: bytes) -> None:
        self.last_id = event_id
        self.window.append((event_id, data))
        if self._batch is not None:
            self._batch.append((event_id, data))
        else:
            self._send_out([(event_id, data)])

    def _send_out(self, events: list[tuple[int, bytes]]) -> None:
        """`events` (consecutive, in id order) to every client that has not had them."""
        first, last = events[0][0], events[-1][0]
        dropped = 0
        gone = False
        framed = chunk(b"".join(data for _, data in events))  # once per worker
        now = time.monotonic()
        for client in list(self.clients):
            if client.owned:
                if client.cursor >= last:
                    continue
                if client.cursor >= first:  # it was given the first of them another way
                    later = [data for i, data in events if i > client.cursor]
                    if client.push_chunk(last, chunk(b"".join(later)), now, len(later)):
                        continue
                elif client.push_chunk(last, framed, now, len(events)):
                    continue
            elif all(client.push(event_id, data) for event_id, data in events):
                continue
            self.clients.discard(client)
            dropped += client.reason == "fell behind"
            gone = True
        self.dropped_slow += dropped
        if gone:
            self._count_changed()
        self.delivered_total += len(self.clients) * len(events)

    # --- redis --------------------------------------------------------------------------------

    def _subscriber(self, broker):
        """A connection of its own that never retries behind our back: a lost subscription
        must surface here, so the hub reads what it missed before going on."""
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        return redis.Redis.from_url(
            broker.url,
            socket_connect_timeout=1,
            socket_timeout=QUIET_SECONDS + 5,
            socket_keepalive=True,
            health_check_interval=0,
            retry=Retry(NoBackoff(), 0),
        )

    def _listen(self, broker) -> None:
        import gevent
        import redis

        delay = 0.1
        client = self._subscriber(broker)
        while True:
            pubsub = None
            try:
                pubsub = client.pubsub(ignore_subscribe_messages=False)
                pubsub.subscribe(broker.channel)
                confirmed = pubsub.get_message(timeout=2)
                if not confirmed or confirmed.get("type") != "subscribe":
                    raise redis.ConnectionError("no subscribe confirmation")
                self.subscribed = True
                delay = 0.1
                self.catch_up()  # what was committed while we were not listening
                while True:
                    message = pubsub.get_message(timeout=QUIET_SECONDS)
                    if message is None:
                        self._tail_check()
                        pubsub.ping()  # a dead connection shows up here, not in silence
                        continue
                    if message["type"] == "message":
                        self.on_raw(message["data"], *self._more_messages(pubsub))
            except (redis.RedisError, OSError) as err:
                if self.subscribed:
                    log.warning("redis subscription lost (%s); reconnecting", err)
                    self.redis_reconnects += 1
                self.subscribed = False
            except gevent.GreenletExit:
                raise
            except Exception:
                self.subscribed = False
                log.exception("hub listener failed; restarting it")
            finally:
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except Exception:  # noqa: BLE001
                        pass
            # Redis is away: events still commit, so read them from the table meanwhile.
            self._poll_table()
            gevent.sleep(delay)
            delay = min(delay * 2, OUTAGE_POLL_SECONDS)

    @staticmethod
    def _more_messages(pubsub) -> list[bytes]:
        """The messages that are here already, behind one just read: what one commit, or
        several, published together (at most MESSAGES_AT_ONCE)."""
        more = []
        while len(more) < MESSAGES_AT_ONCE:
            message = pubsub.get_message(timeout=0)
            if message is None:
                break
            if message["type"] == "message":
                more.append(message["data"])
        return more

    def _poll_table(self) -> None:
        try:
            self.catch_up()
        except Exception:  # noqa: BLE001 - the database may be away too
            log.warning("hub could not read the events table")

    def _tail_check(self) -> None:
        """A quiet channel: make sure no committed event was left unpublished (a dead worker's)."""
        from sqlalchemy import func, select

        from app.extensions import db
        from app.models import Event

        with self.app.app_context():
            try:
                newest = db.session.scalar(select(func.max(Event.id))) or 0
            except Exception:  # noqa: BLE001
                log.warning("tail check could not reach the database")
                return
            finally:
                db.session.remove()
        if newest > self.last_id:
            self.catch_up()

    def _heartbeat(self, broker) -> None:
        """Report this worker's client count: every few seconds, and soon after it changes."""
        import gevent

        while True:
            try:
                broker.redis.set(self.worker_key, len(self.clients), ex=HEARTBEAT_TTL)
            except Exception:  # noqa: BLE001 - Redis down: the count comes back with it
                pass
            self._changed.clear()
            self._changed.wait(HEARTBEAT_SECONDS)
            gevent.sleep(0.2)  # a burst of connects or disconnects is reported once

    def stats(self) -> dict:
        return {
            "pid": os.getpid(),
            "started": self.started,
            "clients": len(self.clients),
            "owned": sum(1 for c in self.clients if c.owned),
            "queued": sum(len(c.pending) + len(c.backlog) for c in self.clients),
            "lastEventId": self.last_id,
            "window": len(self.window),
            "subscribed": self.subscribed,
            "delivered": self.delivered_total,
            "droppedSlow": self.dropped_slow,
            "redisReconnects": self.redis_reconnects,
            "gapFills": self.gap_fills,
            "checkedAt": time.time(),
        }
