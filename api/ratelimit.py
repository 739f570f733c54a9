"""Rate limiting per API key (or client IP) with the ``limits`` library on Redis, shared by all workers.

Sliding-window counters in Redis (one round trip per request) so several gateway processes enforce one
budget. If Redis is unreachable the limiter fails open and logs: an outage of the limiter must not become an
outage of the API.
"""

from __future__ import annotations

import logging
import math
import time

from limits import RateLimitItem, parse_many
from limits.aio.storage import RedisStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from redis.exceptions import RedisError

from api.errors import ApiError
from api.metrics import RATE_LIMITED

log = logging.getLogger("api.ratelimit")


class RateLimiter:
    """Checks ``identity`` against the configured limits; raises a 429 :class:`ApiError` with Retry-After."""

    def __init__(self, redis_url: str, http_limit: str, ws_limit: str) -> None:
        uri = "async+" + redis_url if not redis_url.startswith("async+") else redis_url
        self.storage = RedisStorage(uri, implementation="redispy")
        self.strategy = SlidingWindowCounterRateLimiter(self.storage)
        self.http: list[RateLimitItem] = parse_many(http_limit) if http_limit else []
        self.ws: list[RateLimitItem] = parse_many(ws_limit) if ws_limit else []

    async def check(self, identity: str, kind: str = "http") -> None:
        """Consume one unit for ``identity``; 429 when any limit is exhausted."""
        items = self.http if kind == "http" else self.ws
        for item in items:
            try:
                allowed = await self.strategy.hit(item, kind, identity)
                if allowed:
                    continue
                stats = await self.strategy.get_window_stats(item, kind, identity)
            except (RedisError, OSError, ConnectionError) as err:
                log.warning("rate limiter unavailable, allowing request: %r", err)
                return
            retry_after = max(1, math.ceil(stats.reset_time - time.time()))
            RATE_LIMITED.labels(kind).inc()
            raise ApiError(
                429,
                "rate_limited",
                f"rate limit of {item} exceeded; retry after {retry_after} s",
                headers={"Retry-After": str(retry_after)},
            )
