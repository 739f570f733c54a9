"""Rate limiting per API key (or client IP) with the ``limits`` library on Redis, shared by all workers.

The identity of a key is :func:`api.auth.key_identity` (a digest): Redis key names never contain an API key.

Sliding-window counters in Redis so several gateway processes enforce one budget. If Redis is unreachable the
limiter fails open and logs: an outage of the limiter must not become an outage of the API. "Unreachable"
includes a Redis that accepts connections but stops answering (``CLIENT PAUSE``, a stalled host): the client has
socket timeouts and every check is bounded by ``timeout_s`` (the gateway's ``API_READY_TIMEOUT_S``), after which
the request is allowed, as on a connection error.

Token pre-fetch (why): one ``limits`` hit is a Redis script round trip, about as much CPU as the whole rest of a
``/quote``. A busy identity therefore takes ``chunk`` units from the shared Redis budget in one hit and spends
them locally, one per request, for at most the limit's window. Trade-off, bounded by ``chunk`` (at most 1/64 of
the limit, setting ``API_RATE_LIMIT_PREFETCH``): a unit counts in Redis when a worker takes it, not when it is
spent, and a worker may hold up to ``chunk - 1`` units. So with W workers a client can be refused up to
``W * (chunk - 1)`` requests early (units held by workers it no longer reaches), and served up to
``W * (chunk - 1)`` requests more than the limit within one window: units taken just before a window ends are
spent after it, where the sliding window counts them only in part (measured: 1024/10 s, two workers taking 16
at the end of a window, 26 more requests than without pre-fetch in the next 10 s). When a whole chunk no longer
fits, hits fall back to one unit each, so the edge of the budget is exact within a window. Small limits
(WebSocket connects, ``10/second``) get ``chunk = 1``: no change.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass

from limits import RateLimitItem, parse_many
from limits.aio.storage import RedisStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from redis.exceptions import RedisError

from api.errors import ApiError
from api.metrics import RATE_LIMITED

log = logging.getLogger("api.ratelimit")

#: local token entries kept before expired ones are swept (bounds memory under many distinct clients)
MAX_LOCAL_ENTRIES = 10_000


@dataclass(slots=True)
class _Tokens:
    """Units already taken from Redis and not yet spent by this process."""

    left: int
    expires: float  # monotonic


class RateLimiter:
    """Checks ``identity`` against the configured limits; raises a 429 :class:`ApiError` with Retry-After."""

    def __init__(
        self, redis_url: str, http_limit: str, ws_limit: str, prefetch: int = 16, timeout_s: float = 2.0
    ) -> None:
        uri = "async+" + redis_url if not redis_url.startswith("async+") else redis_url
        # socket timeouts so a silent Redis fails the command instead of holding the request forever
        self.storage = RedisStorage(
            uri, implementation="redispy", socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        self.timeout_s = timeout_s
        self.strategy = SlidingWindowCounterRateLimiter(self.storage)
        self.http: list[RateLimitItem] = parse_many(http_limit) if http_limit else []
        self.ws: list[RateLimitItem] = parse_many(ws_limit) if ws_limit else []
        self.prefetch = prefetch
        self._local: dict[tuple[str, str, int], _Tokens] = {}

    def chunk(self, item: RateLimitItem) -> int:
        """Units taken per Redis hit for ``item``: ``prefetch``, at most 1/64 of the limit, at least 1."""
        return max(1, min(self.prefetch, item.amount // 64))

    async def check(self, identity: str, kind: str = "http") -> None:
        """Consume one unit for ``identity``; 429 when any limit is exhausted."""
        items = self.http if kind == "http" else self.ws
        for index, item in enumerate(items):
            key = (kind, identity, index)
            now = time.monotonic()
            tokens = self._local.get(key)
            if tokens is not None and tokens.left > 0 and now < tokens.expires:
                tokens.left -= 1
                continue
            chunk = self.chunk(item)
            try:
                async with asyncio.timeout(self.timeout_s):  # the whole exchange, whatever the socket does
                    if chunk > 1 and await self.strategy.hit(item, kind, identity, cost=chunk):
                        self._keep(key, _Tokens(chunk - 1, now + item.get_expiry()))
                        continue
                    if await self.strategy.hit(item, kind, identity):
                        continue
                    stats = await self.strategy.get_window_stats(item, kind, identity)
            except (RedisError, OSError, ConnectionError, TimeoutError) as err:
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

    def _keep(self, key: tuple[str, str, int], tokens: _Tokens) -> None:
        local = self._local
        if len(local) >= MAX_LOCAL_ENTRIES:
            now = time.monotonic()
            for k in [k for k, t in local.items() if t.left <= 0 or t.expires <= now]:
                del local[k]
            if len(local) >= MAX_LOCAL_ENTRIES:  # all still live: forget the oldest half (they just re-fetch)
                for k in list(local)[: MAX_LOCAL_ENTRIES // 2]:
                    del local[k]
        local[key] = tokens
