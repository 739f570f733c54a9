"""Redis reads of the gateway (layout in :mod:`contracts.redis_keys`) and the in-process known-ticker set.

Values are the Kafka JSON bytes; a value that no longer satisfies the contract is logged and treated as a
miss so the caller falls back to the database instead of failing.

GETs go through :class:`GetCoalescer`: every GET issued in one event-loop iteration (under load, many
concurrent requests) becomes one MGET, so the Redis client's per-command cost (connection checkout, packing,
parsing, timeouts: about half the CPU of a ``/quote`` in the profile) is paid once per batch, not per request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from api.errors import ApiError, not_found, unavailable
from api.store import Store
from common.errors import ContractError
from contracts import redis_keys
from contracts.bar import Bar, decode_bar
from contracts.tick import SYMBOL_RE, Tick, decode_tick

log = logging.getLogger("api.cache")


C = TypeVar("C")
S = TypeVar("S")
T = TypeVar("T")


class CacheUnavailable(Exception):
    """Redis could not be read (as opposed to a key that is absent)."""


class GetCoalescer:
    """Merges the GETs issued during one event-loop iteration into one MGET (a "data loader").

    A GET costs one extra loop iteration of latency (microseconds) and nothing else; errors reach every caller of
    the batch. ``batches``/``keys`` count MGETs and keys asked for (their ratio is the mean batch size).
    """

    def __init__(self, client: aioredis.Redis[bytes], max_batch: int = 512) -> None:
        self.client = client
        self.max_batch = max_batch
        self._pending: dict[str, list[asyncio.Future[bytes | None]]] = {}
        self._scheduled = False
        self._inflight: set[asyncio.Task[None]] = set()
        self.batches = 0
        self.keys = 0

    async def get(self, key: str) -> bytes | None:
        """The value at ``key`` (None when absent); raises what the MGET raised."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bytes | None] = loop.create_future()
        waiters = self._pending.get(key)
        if waiters is None:
            self._pending[key] = [fut]
        else:
            waiters.append(fut)
        if len(self._pending) >= self.max_batch:
            self._flush()
        elif not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return await fut

    def _flush(self) -> None:
        self._scheduled = False
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        task = asyncio.get_running_loop().create_task(self._fetch(pending))
        self._inflight.add(task)  # a reference, or the task may be collected mid-flight
        task.add_done_callback(self._inflight.discard)

    async def _fetch(self, pending: dict[str, list[asyncio.Future[bytes | None]]]) -> None:
        keys = list(pending)
        self.batches += 1
        self.keys += len(keys)
        try:
            values: list[bytes | None] = await self.client.mget(keys)
        except BaseException as err:  # every waiter gets the error (or the cancellation), then it propagates
            for futures in pending.values():
                for fut in futures:
                    if not fut.done():
                        if isinstance(err, Exception):
                            fut.set_exception(err)
                        else:
                            fut.cancel()
            if isinstance(err, Exception):
                return
            raise
        for key, value in zip(keys, values, strict=True):
            for fut in pending[key]:
                if not fut.done():  # the request may have been cancelled meanwhile
                    fut.set_result(value)


class MarketCache:
    """Typed reads of the Redis keys the flows maintain."""

    def __init__(self, client: aioredis.Redis[bytes]) -> None:
        self.client = client
        self.gets = GetCoalescer(client)

    async def _read(self, key: str, field: str | None = None) -> bytes | None:
        """The value at ``key`` (of hash ``key``'s ``field``) or None when absent; :class:`CacheUnavailable` when
        Redis cannot be read."""
        try:
            return await (self.gets.get(key) if field is None else self.client.hget(key, field))
        except (RedisError, OSError) as err:
            log.warning("redis read of %s%s failed: %r", key, f" {field}" if field else "", err)
            raise CacheUnavailable(repr(err)) from err

    # Every read below: None when the value is missing or unreadable, :class:`CacheUnavailable` when Redis is down.
    # The caller tells the two apart: a missing value may be a 404, a Redis outage must not be (:func:`read_through`).

    async def latest_tick(self, ticker: str) -> Tick | None:
        """Newest tick of ``ticker``."""
        key = redis_keys.latest_price(ticker)
        raw = await self._read(key)
        if raw is None:
            return None
        try:
            return decode_tick(raw)
        except ContractError as err:
            log.warning("ignoring bad value at %s: %s", key, err)
            return None

    async def live_bar(self, ticker: str, timeframe: str) -> Bar | None:
        """The open bar, if the flow has one."""
        return await self._bar(redis_keys.live_bar(ticker, timeframe))

    async def final_bar(self, ticker: str, timeframe: str) -> Bar | None:
        """The newest final bar (with indicators)."""
        return await self._bar(redis_keys.final_bar(ticker, timeframe))

    async def indicator_bar(self, ticker: str, timeframe: str) -> Bar | None:
        """The newest final bar of ``timeframe`` from the indicators hash."""
        key = redis_keys.indicators(ticker)
        return self._decode_bar(await self._read(key, timeframe), key)

    async def _bar(self, key: str) -> Bar | None:
        return self._decode_bar(await self._read(key), key)

    @staticmethod
    def _decode_bar(raw: bytes | None, key: str) -> Bar | None:
        if raw is None:
            return None
        try:
            return decode_bar(raw)
        except ContractError as err:
            log.warning("ignoring bad value at %s: %s", key, err)
            return None


def ticker_symbol(raw: str) -> str | None:
    """The canonical (upper-case) form of a ticker as a client wrote it, or None when it cannot be one.

    The one normalisation of REST paths and WebSocket messages. Non-ASCII is refused before case mapping:
    Unicode ``upper()`` maps e.g. ``ſ`` (U+017F) to ``S`` and ``ı`` to ``I``, and ``strip()`` removes Unicode
    spaces, so ``ſynth`` would otherwise be SYNTH.
    """
    if not raw.isascii():
        return None
    ticker = raw.strip().upper()
    return ticker if SYMBOL_RE.fullmatch(ticker) else None


async def read_through(
    cached: Awaitable[C | None],
    stored: Callable[[], Awaitable[S | None]],
    missing: str,
    from_cache: Callable[[C], T],
    from_store: Callable[[S], T],
) -> T:
    """The value from the cache, else the row from the store, each made into the answer by its function; 404
    (``missing``) when neither has it, but 503 when Redis was down: the value may well be there, and a client
    must not take it for absent."""
    try:
        value = await cached
    except CacheUnavailable:
        value, down = None, True
    else:
        down = False
    if value is not None:
        return from_cache(value)
    row = await stored()
    if row is None:
        raise unavailable(what="the cache (Redis)") if down else not_found(what=missing)
    return from_store(row)


class TickerDirectory:
    """Which tickers exist: an in-memory set, reloaded every ``ttl_s`` and on a miss at most every ``miss_refresh_s``.

    A known ticker costs one set look-up. An unknown one reloads the set from the database (the ticker may have
    been added since), but misses are bounded: concurrent misses share one reload, and no reload starts within
    ``miss_refresh_s`` of the previous one, so a client probing random symbols costs at most one small query per
    ``miss_refresh_s`` instead of one per request. A ticker added to the universe answers 200 within
    ``miss_refresh_s`` of being added (or at once after the next periodic reload).

    While the set has never loaded, or its last reload failed (database down), a miss is not evidence that the
    ticker does not exist: it answers 503 (the reload's error, or a 503 without a query inside
    ``miss_refresh_s``), never 404.
    """

    def __init__(self, store: Store, ttl_s: float, miss_refresh_s: float = 1.0) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self.miss_refresh_s = miss_refresh_s
        self._known: frozenset[str] = frozenset()
        self._loaded_at = float("-inf")
        self._current = False  # the set is what the database said at the last attempt (loaded, not failed)
        self._reloading: asyncio.Task[frozenset[str]] | None = None

    async def refresh(self) -> frozenset[str]:
        """Reload the set from the database (concurrent callers share one query)."""
        task = self._reloading
        if task is None:
            task = self._start_reload()
        return await asyncio.shield(task)

    def _start_reload(self) -> asyncio.Task[frozenset[str]]:
        """Start the one reload task that concurrent callers share."""
        task = asyncio.get_running_loop().create_task(self._load())
        self._reloading = task
        task.add_done_callback(self._reloaded)
        return task

    async def _load(self) -> frozenset[str]:
        known = frozenset(await self.store.ticker_names())
        self._known = known
        self._loaded_at = time.monotonic()
        self._current = True
        return known

    def _reloaded(self, task: asyncio.Task[frozenset[str]]) -> None:
        self._reloading = None
        if not task.cancelled() and task.exception() is not None:
            # a failed reload also counts as an attempt: a database outage must not turn every miss into a query
            self._loaded_at = time.monotonic()
            self._current = False

    def _reload_if_stale(self) -> None:
        """Start a background reload when the set is older than ``ttl_s`` (and none is running).

        Every reader of the set calls it (``canonical``, ``known``, ``require``), so a ticker added later is
        found within ``ttl_s`` whichever routes the traffic uses. Outside an event loop it does nothing.
        """
        if self._reloading is None and time.monotonic() - self._loaded_at > self.ttl_s:
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                return
            self._background_reload()

    @property
    def known(self) -> frozenset[str]:
        """The cached set (possibly stale; a stale set starts a background reload)."""
        self._reload_if_stale()
        return self._known

    def canonical(self, raw: str) -> str | None:
        """The upper-case ticker when it is in the cached set (the hot path: no I/O)."""
        ticker = ticker_symbol(raw)
        self._reload_if_stale()
        return ticker if ticker is not None and ticker in self._known else None

    async def require(self, raw: str) -> str:
        """The canonical (upper-case) ticker, or 404 when it is malformed or not in the universe."""
        ticker = ticker_symbol(raw)
        if ticker is None:
            raise not_found(what=f"unknown ticker {raw[:40]!r}")
        if ticker in self._known:
            self._reload_if_stale()
            return ticker
        if self._may_reload_on_miss():
            if ticker in await self.refresh():  # a database outage is a 503 (ApiError from the store)
                return ticker
        elif not self._current:  # never loaded or the last reload failed: the set cannot say "unknown"
            raise unavailable(what="the ticker list")
        raise not_found(what=f"unknown ticker {ticker!r}")

    def _may_reload_on_miss(self) -> bool:
        """A miss may reload the set: one is running (share it), or the last started ``miss_refresh_s`` ago."""
        return self._reloading is not None or time.monotonic() - self._loaded_at >= self.miss_refresh_s

    async def refreshed_on_miss(self) -> frozenset[str]:
        """The set after a look-up missed it: reloaded first, as :meth:`require` does, unless a reload ran within
        ``miss_refresh_s`` (a failed reload leaves the cached set: the caller decides what a miss then means)."""
        if self._may_reload_on_miss():
            try:
                return await self.refresh()
            except ApiError as err:
                log.warning("ticker list reload failed: %r", err)
        return self._known

    def _background_reload(self) -> None:
        """Periodic reload without making the request wait for it."""
        self._start_reload().add_done_callback(_log_failure)


def _log_failure(task: asyncio.Task[frozenset[str]]) -> None:
    if not task.cancelled() and (err := task.exception()) is not None:
        log.warning("ticker list reload failed: %r", err)
