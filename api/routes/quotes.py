"""``/quote/{ticker}`` (seed 000) and ``/latest/{symbol}`` (seed 002): the newest tick, Redis first."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api import schemas
from api.convert import quote_from_row, quote_from_tick
from api.deps import API_PREFIX, CacheDep, StoreDep, SymbolPath, TickerPath
from api.errors import not_found

router = APIRouter(prefix=API_PREFIX, tags=["quotes"])

NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": schemas.ErrorResponse, "description": "unknown ticker or no tick yet"}
}


async def latest_quote(ticker: str, cache: CacheDep, store: StoreDep) -> schemas.Quote:
    """Newest tick from Redis, else from the archive; 404 when the ticker never traded."""
    tick = await cache.latest_tick(ticker)
    if tick is not None:
        return quote_from_tick(tick)
    row = await store.latest_tick(ticker)
    if row is None:
        raise not_found(what=f"no tick for {ticker!r} yet")
    return quote_from_row(row)


@router.get("/quote/{ticker}", responses=NOT_FOUND)
async def get_quote(ticker: TickerPath, cache: CacheDep, store: StoreDep) -> schemas.Envelope[schemas.Quote]:
    """Latest quote of a ticker (Redis, falling back to the database)."""
    return schemas.Envelope(data=await latest_quote(ticker, cache, store))


@router.get("/latest/{symbol}", responses=NOT_FOUND)
async def get_latest(symbol: SymbolPath, cache: CacheDep, store: StoreDep) -> schemas.Envelope[schemas.LatestPrice]:
    """Latest price of a symbol (seed-002 path)."""
    quote = await latest_quote(symbol, cache, store)
    return schemas.Envelope(data=schemas.LatestPrice(**quote.model_dump(), symbol=symbol))
