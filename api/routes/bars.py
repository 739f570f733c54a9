"""``/bars/{ticker}`` (seed 000: final bars plus the live one) and ``/aggregated/{symbol}`` (seed 002)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from api import schemas
from api.convert import bar_from_row, bar_from_wire, json_response
from api.deps import (
    API_PREFIX,
    CacheDep,
    CursorQuery,
    EndQuery,
    SettingsDep,
    StartQuery,
    StoreDep,
    SymbolPath,
    TickerPath,
    bounded_limit,
    decode_cursor,
    encode_cursor,
    epoch_us,
    time_range,
)
from api.errors import not_found
from common.clock import from_ms
from contracts import TIMEFRAMES
from contracts.redis_keys import WINDOW_TO_TIMEFRAME

router = APIRouter(prefix=API_PREFIX, tags=["bars"])

ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": schemas.ErrorResponse, "description": "unknown ticker (or no bar yet)"},
    422: {"model": schemas.ErrorResponse, "description": "bad timeframe/start/end/limit/cursor or too wide a range"},
}

BarsResponse = schemas.PagedEnvelope[list[schemas.Bar], schemas.BarsMeta]


@router.get("/bars/{ticker}", responses=ERRORS, response_model=BarsResponse)
async def get_bars(
    ticker: TickerPath,
    store: StoreDep,
    cache: CacheDep,
    settings: SettingsDep,
    timeframe: Annotated[schemas.Timeframe, Query(description="bar length")] = "1m",
    start: StartQuery = None,
    end: EndQuery = None,
    limit: Annotated[int | None, Query(ge=1, description="max bars (default 500, max 5000)")] = None,
    cursor: CursorQuery = None,
) -> Response:
    """OHLCV bars in [start, end], ascending (default: the last day); the live bar is appended when in range."""
    n = bounded_limit(limit, settings.bars_default_limit, settings.bars_max_limit)
    span = timedelta(milliseconds=TIMEFRAMES[timeframe] * settings.bars_max_range_bars)
    rng = time_range(start, end, timedelta(days=1), span)
    after = decode_cursor("b", cursor)[0] if cursor else None
    rows = await store.bars(ticker, timeframe, rng.start, rng.end, after, n + 1)
    more = len(rows) > n
    rows = rows[:n]
    # the JSON of schemas.Bar, built directly from PostgreSQL's text (see api.convert)
    bars: list[dict[str, Any]] = [
        {
            "time": iso,
            "ticker": ticker,
            "timeframe": timeframe,
            "open": o,
            "high": h,
            "low": lo,
            "close": c,
            "volume": v,
            "vwap": vw,
            "trades": trades,
            "final": True,
        }
        for _, iso, o, h, lo, c, v, vw, trades in rows
    ]
    last_time = rows[-1][0] if rows else None
    live_included = False
    if not more:
        live = await cache.live_bar(ticker, timeframe)
        if live is not None and not live.final:
            live_start = from_ms(live.start)
            newer = last_time is None or live_start > last_time
            if newer and rng.start <= live_start <= rng.end and (after is None or live_start > after):
                if len(bars) < n:
                    bars.append(bar_from_wire(live).model_dump(mode="json"))
                    last_time = live_start
                    live_included = True
                else:
                    more = True  # the live bar is on the next page
    next_cursor = encode_cursor("b", epoch_us(last_time)) if more and last_time is not None else None
    meta = schemas.BarsMeta(
        ticker=ticker,
        timeframe=timeframe,
        start=rng.start,
        end=rng.end,
        count=len(bars),
        next_cursor=next_cursor,
        live_included=live_included,
    )
    return json_response({"success": True, "data": bars, "meta": meta.model_dump(mode="json")})


@router.get("/aggregated/{symbol}", responses=ERRORS)
async def get_aggregated(
    symbol: SymbolPath,
    store: StoreDep,
    cache: CacheDep,
    window: Annotated[schemas.Window, Query(description="aggregation window")] = "1min",
) -> schemas.Envelope[schemas.AggregatedBar]:
    """The newest final bar of a window (seed-002 path; Redis, falling back to the database)."""
    timeframe = WINDOW_TO_TIMEFRAME[window]
    wire = await cache.final_bar(symbol, timeframe)
    if wire is not None:
        bar = bar_from_wire(wire)
    else:
        row = await store.latest_bar(symbol, timeframe)
        if row is None:
            raise not_found(what=f"no {window} bar for {symbol!r} yet")
        bar = bar_from_row(row)
    return schemas.Envelope(data=schemas.AggregatedBar(**bar.model_dump(), symbol=symbol, window=window))
