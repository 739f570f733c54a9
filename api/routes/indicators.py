"""``/indicators/{ticker}?timeframe=`` (seeds 000 and 002): indicators of the newest final bar."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Query

from api import schemas
from api.cache import read_through
from api.convert import cents, dec
from api.deps import API_PREFIX, CacheDep, StoreDep, TickerInPath, TickersDep
from api.store import BarRow
from common.clock import from_ms
from contracts.bar import Bar

router = APIRouter(prefix=API_PREFIX, tags=["indicators"])

ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": schemas.ErrorResponse, "description": "unknown ticker or no final bar yet"},
    422: {"model": schemas.ErrorResponse, "description": "bad timeframe"},
}


@router.get("/indicators/{ticker}", responses=ERRORS)
async def get_indicators(
    ticker: TickerInPath,
    tickers: TickersDep,
    cache: CacheDep,
    store: StoreDep,
    timeframe: Annotated[schemas.Timeframe, Query(description="bar length the indicators are computed on")] = "1m",
) -> schemas.Envelope[schemas.IndicatorValues]:
    """SMA, EMA, RSI, MACD and Bollinger values of the newest final bar (Redis, falling back to the database)."""
    ticker = await tickers.require(ticker)  # in the handler: after the 422s of the query (api.deps, TickerInPath)

    async def cached() -> Bar | None:
        wire = await cache.indicator_bar(ticker, timeframe)
        return wire if wire is not None and wire.indicators is not None else None

    async def stored() -> BarRow | None:
        row = await store.latest_bar(ticker, timeframe)
        return row if row is not None and row.indicators is not None else None

    missing = f"no final {timeframe} bar for {ticker!r} yet"
    values, time, close = await read_through(cached(), stored, missing, _from_wire, _from_row)
    return schemas.Envelope(
        data=schemas.IndicatorValues(
            ticker=ticker, symbol=ticker, timeframe=timeframe, time=time, close=close, **values
        )
    )


#: an answer's indicator values, bar start and close
_Values = tuple[dict[str, Any], datetime, str]


def _from_wire(wire: Bar) -> _Values:
    indicators = wire.indicators
    assert indicators is not None  # get_indicators' cached() passes only bars that have them
    return msgspec.structs.asdict(indicators), from_ms(wire.start), cents(wire.close)


def _from_row(row: BarRow) -> _Values:
    assert row.indicators is not None  # get_indicators' stored() passes only rows that have them
    return row.indicators, row.time, dec(row.close)
