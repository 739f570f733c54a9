"""``/quote/{ticker}`` and ``/latest/{symbol}`` answered inside :class:`api.middleware.GatewayMiddleware`.

The hottest read of the API, so its path has no FastAPI routing, no dependency solving, no Pydantic and one
Redis round trip: the ticker is checked against the in-memory set of :class:`api.cache.TickerDirectory`
(reloaded on a miss, bounded), the tick is read with a coalesced GET (one MGET per event-loop iteration for all
concurrent requests), decoded with msgspec and written with orjson. The database fallback (no tick in Redis) is
the same query as before. The FastAPI routes in :mod:`api.routes.quotes` document the same answers in OpenAPI
and serve them when the fast routes are switched off (``API_FAST_ROUTES=false``); the integration tests run
both.

Not served from the relay's in-process tick cache: Redis is the value the bars flow maintains and every worker
reads; the relay's cache sees Kafka earlier than the flow writes Redis, differs between workers and is empty
with the relay off, so two requests could get different answers. One MGET per loop iteration already costs
less than the HTTP handling around it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from api.cache import read_through
from api.convert import quote_json_from_row, quote_json_from_tick
from api.deps import API_PREFIX
from api.errors import invalid
from contracts.tick import MAX_TICKER_CHARS

if TYPE_CHECKING:
    from api.deps import AppState
    from api.middleware import FastHandler

Headers = list[tuple[bytes, bytes]]


async def latest_quote(state: AppState, ticker: str) -> dict[str, Any]:
    """JSON of the newest tick from Redis, else from the archive; 404 when the ticker never traded.

    With Redis down the archive answers; if it has nothing either, that is a 503 (the tick may well be in
    Redis), never a 404.
    """
    return await read_through(
        state.cache.latest_tick(ticker),
        lambda: state.store.latest_tick(ticker),
        f"no tick for {ticker!r} yet",
        quote_json_from_tick,
        quote_json_from_row,
    )


async def _ticker(state: AppState, raw: str, name: str) -> str:
    # what the route's Path(max_length=MAX_TICKER_CHARS) answers: on the value as sent, before blanks are stripped
    if len(raw) > MAX_TICKER_CHARS:
        raise invalid(name, f"String should have at most {MAX_TICKER_CHARS} characters")
    known = state.tickers.canonical(raw)
    if known is not None:
        return known
    return await state.tickers.require(raw)


async def quote(state: AppState, raw: str) -> tuple[int, bytes, Headers]:
    """``GET /api/v1/quote/{ticker}``."""
    data = await latest_quote(state, await _ticker(state, raw, "ticker"))
    return 200, orjson.dumps({"success": True, "data": data}), []


async def latest(state: AppState, raw: str) -> tuple[int, bytes, Headers]:
    """``GET /api/v1/latest/{symbol}``."""
    symbol = await _ticker(state, raw, "symbol")
    data = await latest_quote(state, symbol)
    data["symbol"] = symbol
    return 200, orjson.dumps({"success": True, "data": data}), []


def fast_routes() -> dict[str, tuple[str, FastHandler]]:
    """Path prefix -> (route template for metrics, handler)."""
    return {
        f"{API_PREFIX}/quote/": (f"{API_PREFIX}/quote/{{ticker}}", quote),
        f"{API_PREFIX}/latest/": (f"{API_PREFIX}/latest/{{symbol}}", latest),
    }
