"""Where committed events go after the commit: Redis pub/sub, or straight to this process's hub.

The Redis broker publishes on one channel; every worker's hub holds one subscription to it. A
publish that fails (Redis down) does not fail the write: the messages wait in this worker's
relay queue and go out in id order once Redis answers again. Hubs also fill id gaps from the
events table, so a worker that dies with unpublished events loses nobody anything.
"""

from __future__ import annotations

import logging
import time
from collections import deque

log = logging.getLogger(__name__)


class Broker:
    """The facade the app talks to; `init_app` picks Redis or the in-process broker."""

    def __init__(self) -> None:
        self.redis = None
        self.channel = "trackopz:events"
        self.unpublished: deque[tuple[int, str]] = deque()
        self.published_total = 0
        self.publish_failures = 0
        self._retry_after = 0.0
        self._relay = None
        self._hub = None

    def init_app(self, app, hub) -> None:
        self._hub = hub
        self.channel = app.config["REDIS_CHANNEL"]
        url = app.config.get("REDIS_URL")
        if url:
            import redis

            self.redis = redis.Redis.from_url(
                url, socket_connect_timeout=1, socket_timeout=2, health_check_interval=10
            )
        else:
            self.redis = None
        app.extensions["trackopz_broker"] = self

    @property
    def kind(self) -> str:
        return "redis" if self.redis is not None else "in-process"

    def publish(self, messages: list[tuple[int, str]]) -> None:
        """Hand committed events on; never raises."""
        if self.redis is None:
            self._hub.on_messages(messages)
            self.published_total += len(messages)
            return
        self.unpublished.extend(messages)
        if time.monotonic() < self._retry_after:
            self._wake_relay()
            return
        self._flush()

    def _flush(self) -> bool:
        import redis

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
            return True
        except (redis.RedisError, OSError) as err:
            self.publish_failures += 1
            self._retry_after = time.monotonic() + 0.5
            log.warning(
                "redis publish failed (%s); %d event(s) wait for the relay",
                err,
                len(self.unpublished),
            )
            self._wake_relay()
            return False

    def _wake_relay(self) -> None:
        import gevent

        if self._relay is None or self._relay.dead:
            self._relay = gevent.spawn(self._run_relay)

    def _run_relay(self) -> None:
        """Retry the waiting events, oldest first, until Redis takes them."""
        import gevent

        delay = 0.2
        while self.unpublished:
            gevent.sleep(max(delay, self._retry_after - time.monotonic()))
            if self._flush():
                log.info("redis is back: relayed the waiting events")
                return
            delay = min(delay * 2, 5.0)
