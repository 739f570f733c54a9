"""``/quote/{ticker}`` (seed 000) and ``/latest/{symbol}`` (seed 002): the newest tick, Redis first.

The hot path answers with pre-serialised bytes (see :mod:`api.convert`); the models document the shape.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from api import schemas
from api.convert import json_response, quote_from_row, quote_json_from_tick
from api.deps import API_PREFIX, CacheDep, StoreDep, SymbolPath, TickerPath
from api.errors import not_found

router = APIRouter(prefix=API_PREFIX, tags=["quotes"])

NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": schemas.ErrorResponse, "description": "unknown ticker or no tick yet"}
}


async def latest_quote(ticker: str, cache: CacheDep, store: StoreDep) -> dict[str, Any]:
    """JSON of the newest tick from Redis, else from the archive; 404 when the ticker never traded."""
    tick = await cache.latest_tick(ticker)
    if tick is not None:
        return quote_json_from_tick(tick)
    row = await store.latest_tick(ticker)
    if row is None:
        raise not_found(what=f"no tick for {ticker!r} yet")
    return quote_from_row(row).model_dump(mode="json")


@router.get("/quote/{ticker}", responses=NOT_FOUND, response_model=schemas.Envelope[schemas.Quote])
async def get_quote(ticker: TickerPath, cache: CacheDep, store: StoreDep) -> Response:
    """Latest quote of a ticker (Redis, falling back to the database)."""
    return json_response({"success": True, "data": await latest_quote(ticker, cache, store)})


@router.get("/latest/{symbol}", responses=NOT_FOUND, response_model=schemas.Envelope[schemas.LatestPrice])
async def get_latest(symbol: SymbolPath, cache: CacheDep, store: StoreDep) -> Response:
    """Latest price of a symbol (seed-002 path)."""
    quote = await latest_quote(symbol, cache, store)
    quote["symbol"] = symbol
    return json_response({"success": True, "data": quote})
