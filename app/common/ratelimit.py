"""The write limit's counters in Redis, at one round trip per write instead of three.

Flask-Limiter counts a write with one call to Redis (limits' INCR-and-EXPIRE script), then, for
the X-RateLimit headers of the same response, reads the counter and its expiry back with two
more. Here the counting script also answers the expiry, and the same request's header reads are
given what it answered: the counter as this write left it, which is what they would have read
unless another write of the same user landed in between.
"""

from __future__ import annotations

import time

from flask import has_request_context, request
from limits.storage import RedisStorage

SCHEME_PREFIX = "trackopz+"

_INCR_EXPIRE_TTL = """
local current = redis.call("incrby", KEYS[1], tonumber(ARGV[2]))
if tonumber(current) == tonumber(ARGV[2]) then
    redis.call("expire", KEYS[1], ARGV[1])
end
return {current, redis.call("ttl", KEYS[1])}
"""


def storage_uri(uri: str) -> str:
    """RATELIMIT_STORAGE_URI as Flask-Limiter is to be given it: Redis through RedisCounters."""
    if uri.startswith(("redis://", "rediss://")):
        return SCHEME_PREFIX + uri
    return uri


class RedisCounters(RedisStorage):
    STORAGE_SCHEME = [SCHEME_PREFIX + "redis", SCHEME_PREFIX + "rediss"]

    def __init__(self, uri: str, **options) -> None:
        super().__init__(uri.removeprefix(SCHEME_PREFIX), **options)

    def initialize_storage(self, uri: str) -> None:
        super().initialize_storage(uri)
        self.lua_incr_expire_ttl = self.get_connection().register_script(_INCR_EXPIRE_TTL)

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        count, ttl = self.lua_incr_expire_ttl([self.prefixed_key(key)], [expiry, amount])
        _answered()[key] = (int(count), max(int(ttl), 0) + time.time())
        return int(count)

    def get(self, key: str) -> int:
        known = _answered().get(key)
        return known[0] if known is not None else super().get(key)

    def get_expiry(self, key: str) -> float:
        known = _answered().get(key)
        return known[1] if known is not None else super().get_expiry(key)

    def clear(self, key: str) -> None:
        _answered().pop(key, None)
        super().clear(key)


def _answered() -> dict:
    """What this request's counting calls answered, by key (kept in the request itself: an
    app context may outlive it); outside a request, nothing."""
    if not has_request_context():
        return {}
    return request.environ.setdefault("trackopz.rate_limit_counts", {})
