"""The cap on open streams per user: at most STREAMS_PER_USER (default 20) across all workers.

The stream view takes a lease before it registers its hub client and gives it back when the
stream ends (the generator's `finally`, the error path before it, or the hub when it owns the
connection):

    lease = streams.acquire()   # 429 with Retry-After past the cap
    ...
    lease.release()             # idempotent

With REDIS_URL, the count is shared by every worker and host: one sorted set per user,
`trackopz:streams:<user id>` (STREAMS_KEY_PREFIX), whose members are the open streams (a random id each) scored with
their expiry time on Redis's clock (one clock for every host). Taking a lease prunes the expired
members, counts the rest and adds the new one in one Lua script, so two workers cannot both take
the last slot. Giving it back removes the member.

A worker that dies cannot give its leases back, so they expire: each lease lives
STREAM_LEASE_SECONDS (default 60) and a greenlet in every worker renews the leases of its open
streams every third of that. The trade-off: after a worker crash (or a kill -9) its streams keep
counting for up to STREAM_LEASE_SECONDS; the browsers it served reconnect at once, so a user who
had nearly the whole cap open may be refused for that long (the 429 says when to retry). A
shorter lease frees those slots sooner and costs a few more Redis writes per worker.

If Redis does not answer, a stream is not refused for it: the lease is counted in this process
only (the stream outlives a Redis outage, and so does a cap per worker).

Without REDIS_URL gunicorn runs one worker (gunicorn.conf.py), so a count in this process is the
whole count. STREAMS_PER_USER=0 turns the cap off.

A stream is let in once, when it opens, but may stay open for hours: every
STREAM_AUTH_RECHECK_SECONDS (default 15) each worker checks again, in one query, the credentials
its open streams were opened with, and hangs up (shuts the connection's socket down) the streams
of a revoked token, a deactivated user, or a session whose password has changed. (Under gunicorn,
which gives the view the connection's socket; elsewhere streams are only checked when they open.)
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import weakref

from flask import current_app, g
from werkzeug.exceptions import TooManyRequests

log = logging.getLogger(__name__)

KEY_PREFIX = "trackopz:streams:"
LOCAL_RETRY_AFTER = 10  # seconds: without Redis there is no expiry to point at

# KEYS[1] the user's set; ARGV: cap, lease seconds, member. Returns {1, count} when taken,
# {0, seconds until the first lease expires} when the user is at the cap.
ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local ttl = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local n = redis.call('ZCARD', KEYS[1])
if n >= tonumber(ARGV[1]) then
  local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {0, math.ceil(tonumber(first[2]) - now)}
end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[3])
redis.call('PEXPIRE', KEYS[1], math.ceil(ttl * 1000))
return {1, n + 1}
"""

# KEYS[1] the user's set; ARGV: lease seconds, then the members this worker still holds.
RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local ttl = tonumber(ARGV[1])
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], now + ttl, ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], math.ceil(ttl * 1000))
return #ARGV - 1
"""


class StreamLimitReached(TooManyRequests):
    """429: the user has STREAMS_PER_USER streams open already."""


class Lease:
    """One open stream's place in its user's count; `release()` gives it back (once)."""

    __slots__ = ("user_id", "member", "shared", "_cap", "_redis", "_forget", "__weakref__")

    def __init__(
        self, cap: StreamCap | None, user_id: int | None, member: str, shared: bool, redis=None
    ):
        self.user_id = user_id
        self.member = member
        self.shared = shared  # counted in Redis (else only in this process)
        self._cap = cap
        # The client it was taken with: `release()` runs in the stream's generator, after the
        # request's app context is gone, so it must not need `current_app`.
        self._redis = redis
        # A stream whose generator never ran (so never reached its `finally`) is dropped without
        # a release: the finalizer forgets it here. No I/O in a finalizer: a Redis lease left
        # behind that way is no longer renewed and expires within STREAM_LEASE_SECONDS.
        self._forget = (
            weakref.finalize(self, cap.forget, user_id, member, shared) if cap is not None else None
        )

    @property
    def released(self) -> bool:
        return self._forget is None or not self._forget.alive

    def watch(self, sock) -> None:
        """The stream's connection is now `sock` (the hub took it over): hang that up if the
        stream's credential stops being valid."""
        watched = self._cap.watched if self._cap is not None else {}
        if self.member in watched:
            watched[self.member] = (watched[self.member][0], sock)

    def release(self) -> None:
        if self.released:
            return
        self._forget()
        if self.shared:
            self._cap.remove_shared(self._redis, self.user_id, self.member)


class StreamCap:
    """The per-app state: this process's leases, and the greenlet that renews the Redis ones."""

    def __init__(self, app):
        self.limit = int(app.config.get("STREAMS_PER_USER", 20))
        self.lease_seconds = float(app.config.get("STREAM_LEASE_SECONDS", 60))
        self.prefix = app.config.get("STREAMS_KEY_PREFIX") or KEY_PREFIX
        self.recheck_seconds = float(app.config.get("STREAM_AUTH_RECHECK_SECONDS", 15))
        self.local: dict[int, set[str]] = {}  # every lease this process holds, by user
        self.shared: dict[int, set[str]] = {}  # the ones counted in Redis, to renew
        self.watched: dict[str, tuple[tuple, object]] = {}  # member: (credential, socket)
        self._app = app
        self._client = None  # the Redis client of the shared leases
        self._lock = threading.Lock()
        self._renewer = None
        self._renewer_pid = None
        self._scripts = None

    def key(self, user_id: int) -> str:
        return f"{self.prefix}{user_id}"

    # --- the Redis client and its scripts -----------------------------------------------------

    @staticmethod
    def redis():
        broker = current_app.extensions.get("trackopz_broker")
        return broker.redis if broker is not None else None

    def _script(self, client, name: str):
        if self._scripts is None or self._scripts[0] is not client:
            self._scripts = (
                client,
                {
                    "acquire": client.register_script(ACQUIRE),
                    "renew": client.register_script(RENEW),
                },
            )
        return self._scripts[1][name]

    # --- taking and giving back ---------------------------------------------------------------

    def acquire(self, user_id: int, *, credential: tuple | None = None, sock=None) -> Lease:
        lease = self._take(user_id)
        if credential is not None and sock is not None:
            self.watched[lease.member] = (credential, sock)
            self._ensure_renewer()
        return lease

    def _take(self, user_id: int) -> Lease:
        member = f"{os.getpid()}:{secrets.token_hex(8)}"
        client = self.redis() if self.limit > 0 else None
        if client is not None:
            try:
                taken, value = self._script(client, "acquire")(
                    keys=[self.key(user_id)],
                    args=[self.limit, self.lease_seconds, member],
                )
            except Exception as err:  # noqa: BLE001 - Redis down: count in this process
                log.warning("stream cap: Redis does not answer (%s); counting in this worker", err)
            else:
                if not int(taken):
                    self._refuse(retry_after=max(1, int(value)))
                self._hold(user_id, member, shared=True)
                self._client = client
                self._ensure_renewer()
                return Lease(self, user_id, member, shared=True, redis=client)
        with self._lock:
            held = self.local.get(user_id)
            if self.limit > 0 and held is not None and len(held) >= self.limit:
                self._refuse(retry_after=LOCAL_RETRY_AFTER)
            self._hold(user_id, member, shared=False)
        return Lease(self, user_id, member, shared=False)

    def _hold(self, user_id: int, member: str, *, shared: bool) -> None:
        self.local.setdefault(user_id, set()).add(member)
        if shared:
            self.shared.setdefault(user_id, set()).add(member)

    def _refuse(self, *, retry_after: int):
        raise StreamLimitReached(
            f"You have {self.limit} live streams open already, the most one user may have; "
            "close one (another tab or window) and try again.",
            retry_after=retry_after,
        )

    def forget(self, user_id: int, member: str, shared: bool) -> None:
        """Drop a lease from this process's books (no I/O: also runs as a finalizer)."""
        self.watched.pop(member, None)
        for books in (self.local, self.shared) if shared else (self.local,):
            held = books.get(user_id)
            if held is not None:
                held.discard(member)
                if not held:
                    books.pop(user_id, None)

    def remove_shared(self, client, user_id: int, member: str) -> None:
        try:
            client.zrem(self.key(user_id), member)
        except Exception as err:  # noqa: BLE001 - it expires on its own
            log.warning("stream cap: could not give a lease back (%s); it expires by itself", err)

    def open_streams(self, user_id: int) -> int:
        """This user's open streams: across every worker with Redis, else in this process."""
        client = self.redis()
        if client is not None:
            try:
                seconds, micros = client.time()  # Redis's clock, as the scores
                return int(client.zcount(self.key(user_id), seconds + micros / 1e6, "+inf"))
            except Exception:  # noqa: BLE001
                pass
        return len(self.local.get(user_id, ()))

    # --- renewing the Redis leases ------------------------------------------------------------

    def renew(self, client) -> int:
        """Push back the expiry of every lease this process holds in Redis; how many renewed."""
        try:
            snapshot = {uid: list(members) for uid, members in list(self.shared.items())}
        except RuntimeError:  # changed under us (a finalizer); next round
            return 0
        renewed = 0
        script = self._script(client, "renew")
        for user_id, members in snapshot.items():
            if members:
                renewed += int(
                    script(keys=[self.key(user_id)], args=[self.lease_seconds, *members])
                )
        return renewed

    # --- checking the open streams' credentials again -----------------------------------------

    def recheck(self) -> int:
        """Hang up the streams whose credential would be refused now; how many."""
        watched = list(self.watched.items())
        if not watched:
            return 0
        from app.auth import service
        from app.extensions import db

        with self._app.app_context():
            try:
                valid = service.still_valid(
                    [credential for credential, _ in dict(watched).values()]
                )
            finally:
                db.session.remove()
        hung_up = 0
        for member, (credential, sock) in watched:
            if credential not in valid:
                self.watched.pop(member, None)
                _hang_up(sock)
                hung_up += 1
        if hung_up:
            log.info("hung up %d stream(s) whose token or user is no longer let in", hung_up)
        return hung_up

    # --- the background greenlet of each worker -----------------------------------------------

    def _ensure_renewer(self) -> None:
        pid = os.getpid()
        if self._renewer is not None and self._renewer_pid == pid and not self._renewer.dead:
            return
        import gevent

        self._renewer_pid = pid
        self._renewer = gevent.spawn(self._background)

    def _background(self) -> None:
        """Renew the Redis leases every third of their life; re-check credentials."""
        import time

        import gevent

        renew_every = max(0.5, self.lease_seconds / 3)
        check_every = max(0.5, self.recheck_seconds)
        renewed = checked = time.monotonic()
        while True:
            gevent.sleep(min(renew_every, check_every))
            now = time.monotonic()
            if now - renewed >= renew_every * 0.99:
                renewed = now
                if self.shared and self._client is not None:
                    try:
                        self.renew(self._client)
                    except Exception as err:  # noqa: BLE001 - Redis down: retried next round
                        log.warning("stream cap: could not renew the stream leases (%s)", err)
            if now - checked >= check_every * 0.99:
                checked = now
                try:
                    self.recheck()
                except Exception as err:  # noqa: BLE001 - database down: streams stay, retried
                    log.warning("stream cap: could not re-check the open streams (%s)", err)


def _hang_up(sock) -> None:
    """End a stream from outside its greenlet: its disconnect watcher sees the socket close."""
    import socket

    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already gone


def cap() -> StreamCap:
    app = current_app._get_current_object()
    state = app.extensions.get("trackopz_streams")
    if state is None:
        state = app.extensions["trackopz_streams"] = StreamCap(app)
    return state


def acquire() -> Lease:
    """A place for one more open stream of the signed-in user; 429 past STREAMS_PER_USER."""
    from flask import request

    from app.auth.guard import credential

    user = g.get("user")
    if user is None:
        return Lease(None, None, "", shared=False)
    return cap().acquire(
        user.id, credential=credential(), sock=request.environ.get("gunicorn.socket")
    )
