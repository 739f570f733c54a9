"""``/indicators/{ticker}?timeframe=`` (seeds 000 and 002): indicators of the newest final bar."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Query

from api import schemas
from api.convert import cents, dec
from api.deps import API_PREFIX, CacheDep, StoreDep, TickerPath
from api.errors import not_found
from common.clock import from_ms

router = APIRouter(prefix=API_PREFIX, tags=["indicators"])

ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": schemas.ErrorResponse, "description": "unknown ticker or no final bar yet"},
    422: {"model": schemas.ErrorResponse, "description": "bad timeframe"},
}


@router.get("/indicators/{ticker}", responses=ERRORS)
async def get_indicators(
    ticker: TickerPath,
    cache: CacheDep,
    store: StoreDep,
    timeframe: Annotated[schemas.Timeframe, Query(description="bar length the indicators are computed on")] = "1m",
) -> schemas.Envelope[schemas.IndicatorValues]:
    """SMA, EMA, RSI, MACD and Bollinger values of the newest final bar (Redis, falling back to the database)."""
    wire = await cache.indicator_bar(ticker, timeframe)
    if wire is not None and wire.indicators is not None:
        values = msgspec.structs.asdict(wire.indicators)
        time, close = from_ms(wire.start), cents(wire.close)
    else:
        row = await store.latest_bar(ticker, timeframe)
        if row is None or row.indicators is None:
            raise not_found(what=f"no final {timeframe} bar for {ticker!r} yet")
        values = row.indicators
        time, close = row.time, dec(row.close)
    return schemas.Envelope(
        data=schemas.IndicatorValues(
            ticker=ticker, symbol=ticker, timeframe=timeframe, time=time, close=close, **values
        )
    )
