"""Redis reads of the gateway (layout in :mod:`contracts.redis_keys`) and the in-process known-ticker set.

Values are the Kafka JSON bytes; a value that no longer satisfies the contract is logged and treated as a
miss so the caller falls back to the database instead of failing.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Final

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from api.errors import ApiError, not_found
from api.store import Store
from common.errors import ContractError
from contracts import redis_keys
from contracts.bar import Bar, decode_bar
from contracts.tick import Tick, decode_tick

log = logging.getLogger("api.cache")

#: same rule as the CHECK constraint on ``tickers.ticker``
TICKER_RE: Final = re.compile(r"^[A-Z0-9][A-Z0-9._-]{0,31}$")


class MarketCache:
    """Typed reads of the Redis keys the flows maintain."""

    def __init__(self, client: aioredis.Redis[bytes]) -> None:
        self.client = client

    async def _get(self, key: str) -> bytes | None:
        try:
            value: bytes | None = await self.client.get(key)
        except (RedisError, OSError) as err:
            log.warning("redis GET %s failed: %r", key, err)
            return None
        return value

    async def latest_tick(self, ticker: str) -> Tick | None:
        """Newest tick of ``ticker`` or None (missing, unreadable or Redis down)."""
        raw = await self._get(redis_keys.latest_price(ticker))
        if raw is None:
            return None
        try:
            return decode_tick(raw)
        except ContractError as err:
            log.warning("ignoring bad value at %s: %s", redis_keys.latest_price(ticker), err)
            return None

    async def live_bar(self, ticker: str, timeframe: str) -> Bar | None:
        """The open bar, if the flow has one."""
        return await self._bar(redis_keys.live_bar(ticker, timeframe))

    async def final_bar(self, ticker: str, timeframe: str) -> Bar | None:
        """The newest final bar (with indicators)."""
        return await self._bar(redis_keys.final_bar(ticker, timeframe))

    async def indicator_bar(self, ticker: str, timeframe: str) -> Bar | None:
        """The newest final bar of ``timeframe`` from the indicators hash."""
        try:
            raw: bytes | None = await self.client.hget(redis_keys.indicators(ticker), timeframe)
        except (RedisError, OSError) as err:
            log.warning("redis HGET %s failed: %r", redis_keys.indicators(ticker), err)
            return None
        return self._decode_bar(raw, redis_keys.indicators(ticker))

    async def _bar(self, key: str) -> Bar | None:
        return self._decode_bar(await self._get(key), key)

    @staticmethod
    def _decode_bar(raw: bytes | None, key: str) -> Bar | None:
        if raw is None:
            return None
        try:
            return decode_bar(raw)
        except ContractError as err:
            log.warning("ignoring bad value at %s: %s", key, err)
            return None


class TickerDirectory:
    """Which tickers exist: a set cached for ``ttl_s``, with a database look-up on a miss."""

    def __init__(self, store: Store, ttl_s: float) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self._known: set[str] = set()
        self._loaded_at = float("-inf")

    async def refresh(self) -> set[str]:
        """Reload the set from the database."""
        self._known = await self.store.ticker_names()
        self._loaded_at = time.monotonic()
        return self._known

    @property
    def known(self) -> frozenset[str]:
        """The cached set (possibly stale)."""
        return frozenset(self._known)

    async def require(self, raw: str) -> str:
        """The canonical (upper-case) ticker, or 404 when it is malformed or not in the universe."""
        ticker = raw.strip().upper()
        if not TICKER_RE.match(ticker):
            raise not_found(what=f"unknown ticker {raw[:40]!r}")
        if ticker in self._known:
            return ticker
        if time.monotonic() - self._loaded_at > self.ttl_s:
            await self.refresh()
            if ticker in self._known:
                return ticker
        elif await self.store.ticker_exists(ticker):
            self._known.add(ticker)
            return ticker
        raise not_found(what=f"unknown ticker {ticker!r}")


def redis_error(err: Exception) -> ApiError:
    """503 for Redis outages where no fallback exists."""
    log.warning("redis unavailable: %r", err)
    return ApiError(503, "unavailable", "redis is unavailable, try again shortly")
