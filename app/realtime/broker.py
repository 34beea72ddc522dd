"""Where committed events go after the commit: Redis pub/sub, or straight to this process's hub.

The Redis broker publishes on one channel; every worker's hub holds one subscription to it. A
publish that fails (Redis down) does not fail the write: the messages wait in this worker's
relay queue and go out in id order once Redis answers again; until then no request waits on
Redis. Hubs also fill id gaps from the events table, so a worker that dies with unpublished
events loses nobody anything.
"""

from __future__ import annotations

import logging
from collections import deque

log = logging.getLogger(__name__)

RELAY_MAX = 100_000  # beyond this the oldest waiting messages are dropped: the hubs read them


class Broker:
    """The facade the app talks to; `init_app` picks Redis or the in-process broker."""

    def __init__(self) -> None:
        self.redis = None
        self.url = None
        self.channel = "trackopz:events"
        self.unpublished: deque[tuple[int, str]] = deque()
        self.published_total = 0
        self.publish_failures = 0
        self.healthy = True
        self._flushing = False
        self._relay = None
        self._hub = None

    def init_app(self, app, hub) -> None:
        self._hub = hub
        self.channel = app.config["REDIS_CHANNEL"]
        self.url = app.config.get("REDIS_URL") or None
        self.unpublished = deque()
        self.healthy = True
        self._flushing = False
        self._relay = None
        if self.url:
            import redis
            from redis.backoff import NoBackoff
            from redis.retry import Retry

            # A blocking pool: a burst of greenlets (page loads taking stream leases, publishes)
            # waits a moment for a connection instead of failing with "Too many connections"
            # past redis-py's default of 100. One quick retry: a write never waits long on
            # Redis, the relay retries later.
            pool = redis.BlockingConnectionPool.from_url(
                self.url,
                max_connections=int(app.config.get("REDIS_MAX_CONNECTIONS", 50)),
                timeout=2,
                socket_connect_timeout=1,
                socket_timeout=2,
                health_check_interval=10,
                retry=Retry(NoBackoff(), 1),
            )
            self.redis = redis.Redis(connection_pool=pool)
        else:
            self.redis = None
        app.extensions["trackopz_broker"] = self

    @property
    def kind(self) -> str:
        return "redis" if self.redis is not None else "in-process"

    def publish(self, messages: list[tuple[int, str]]) -> None:
        """Hand committed events on; never raises, and never waits on a Redis known to be down."""
        if self.redis is None:
            self._hub.on_messages(messages)
            self.published_total += len(messages)
            return
        self.unpublished.extend(messages)
        while len(self.unpublished) > RELAY_MAX:
            self.unpublished.popleft()
        if not self.healthy:
            self._wake_relay()
            return
        self._flush()

    def _flush(self) -> bool:
        """Publish what waits, oldest first. One flusher at a time: a publish that finds one at
        work leaves its messages to it (it loops until the queue is empty)."""
        import redis

        if self._flushing:
            return True
        self._flushing = True
        try:
            while self.unpublished:
                batch = [self.unpublished[i] for i in range(min(100, len(self.unpublished)))]
                pipe = self.redis.pipeline(transaction=False)
                for event_id, body in batch:
                    pipe.publish(self.channel, f"{event_id}|{body}")
                pipe.execute()
                for _ in batch:
                    self.unpublished.popleft()
                self.published_total += len(batch)
            self.healthy = True
            return True
        except (redis.RedisError, OSError) as err:
            self.publish_failures += 1
            if self.healthy:
                log.warning(
                    "redis publish failed (%s); %d event(s) wait for the relay",
                    err,
                    len(self.unpublished),
                )
            self.healthy = False
            self._wake_relay()
            return False
        finally:
            self._flushing = False

    def _wake_relay(self) -> None:
        import gevent

        if self._relay is None or self._relay.dead:
            self._relay = gevent.spawn(self._run_relay)

    def _run_relay(self) -> None:
        """Retry the waiting events, oldest first, until Redis takes them."""
        import gevent

        delay = 0.2
        while self.unpublished or not self.healthy:
            gevent.sleep(delay)
            if self._flushing:
                continue
            if self._flush():
                log.info("redis is back: relayed the waiting events")
                return
            delay = min(delay * 2, 2.0)
