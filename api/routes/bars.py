"""``/bars/{ticker}`` (seed 000: final bars plus the live one) and ``/aggregated/{symbol}`` (seed 002)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from api import schemas
from api.cache import CacheUnavailable, MarketCache, read_through
from api.convert import bar_from_row, bar_from_wire, json_response
from api.deps import API_PREFIX, CacheDep, SettingsDep, StoreDep, TickerInPath, TickersDep, bounded_limit
from api.paging import CursorQuery, EndQuery, PagePlan, StartQuery, encode_next, encode_prev, plan_page, ticker_scope
from api.store import BarText, Store
from common.clock import from_ms
from contracts import TIMEFRAMES
from contracts.bar import Bar
from contracts.redis_keys import WINDOW_TO_TIMEFRAME

router = APIRouter(prefix=API_PREFIX, tags=["bars"])

ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": schemas.ErrorResponse, "description": "unknown ticker (or no bar yet)"},
    422: {"model": schemas.ErrorResponse, "description": "bad timeframe/start/end/limit/cursor or too wide a range"},
}

BarsResponse = schemas.PagedEnvelope[list[schemas.Bar], schemas.BarsMeta]


@router.get("/bars/{ticker}", responses=ERRORS, response_model=BarsResponse)
async def get_bars(
    ticker: TickerInPath,
    tickers: TickersDep,
    store: StoreDep,
    cache: CacheDep,
    settings: SettingsDep,
    timeframe: Annotated[schemas.Timeframe, Query(description="bar length")] = "1m",
    start: StartQuery = None,
    end: EndQuery = None,
    limit: Annotated[
        int | None,
        Query(
            ge=1,
            description=(
                "max bars (default 500, max 5000); without `start` the newest ones, the live bar counting as one"
            ),
        ),
    ] = None,
    cursor: CursorQuery = None,
) -> Response:
    """OHLCV bars, ascending: the newest `limit` of the last day (or before `end`), or from `start` on; the live
    bar is included when in range."""
    n = bounded_limit(limit, settings.bars_default_limit, settings.bars_max_limit)
    span = timedelta(milliseconds=TIMEFRAMES[timeframe] * settings.bars_max_range_bars)
    plan = plan_page("b", ticker_scope(ticker, timeframe), start, end, cursor, timedelta(days=1), span)
    ticker = await tickers.require(ticker)  # after the parameters' 422s (api.deps, TickerInPath)
    if plan.newest:
        page = await _newest_page(store, cache, ticker, timeframe, plan, n)
    else:
        page = await _forward_page(store, cache, ticker, timeframe, plan, n)
    meta = schemas.BarsMeta(
        ticker=ticker,
        timeframe=timeframe,
        start=plan.start,
        end=plan.end,
        count=len(page.bars),
        next_cursor=page.next_cursor,
        prev_cursor=page.prev_cursor,
        live_included=page.live_included,
    )
    return json_response({"success": True, "data": page.bars, "meta": meta.model_dump(mode="json")})


@dataclass(frozen=True, slots=True)
class _Page:
    """One answer of ``/bars``: the bars' JSON and the cursors around them."""

    bars: list[dict[str, Any]]
    live_included: bool
    next_cursor: str | None = None
    prev_cursor: str | None = None


def _final_json(rows: list[BarText], ticker: str, timeframe: str) -> list[dict[str, Any]]:
    """The JSON of schemas.Bar, built directly from PostgreSQL's text (see api.convert)."""
    return [
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


async def _live_in(cache: MarketCache, ticker: str, timeframe: str, plan: PagePlan) -> tuple[Bar, datetime] | None:
    """The live bar and its start when it lies in the plan's range (none while Redis is down: the final bars
    from the database still answer)."""
    try:
        live = await cache.live_bar(ticker, timeframe)
    except CacheUnavailable:
        return None
    if live is None or live.final:
        return None
    live_start = from_ms(live.start)
    return (live, live_start) if plan.start <= live_start <= plan.end else None


async def _newest_page(store: Store, cache: MarketCache, ticker: str, timeframe: str, plan: PagePlan, n: int) -> _Page:
    """The newest ``n`` bars (the live bar, when in range and newer than every final, is the newest and counts).

    The live bar is read BEFORE the finals: if it closes in between, the database already holds it as a final
    and the (older) live copy is dropped below; read after, a bar closing in between would be missing.
    """
    live = await _live_in(cache, ticker, timeframe, plan) if plan.before is None else None
    before = plan.before[0] if plan.before is not None else None
    rows = await store.bars(ticker, timeframe, plan.start, plan.end, before, n + 1, newest=True)
    if live is not None and rows and live[1] <= rows[0][0]:
        live = None  # a stale live copy of a bar that is already final
    room = n - 1 if live is not None else n
    more = len(rows) > room
    rows = rows[:room]
    rows.reverse()
    bars = _final_json(rows, ticker, timeframe)
    if live is not None:
        bars.append(bar_from_wire(live[0]).model_dump(mode="json"))
    oldest = rows[0][0] if rows else (live[1] if live is not None else None)
    prev_cursor = encode_prev("b", plan.scope, oldest, 0, plan.start) if more and oldest is not None else None
    return _Page(bars, live is not None, prev_cursor=prev_cursor)


async def _forward_page(store: Store, cache: MarketCache, ticker: str, timeframe: str, plan: PagePlan, n: int) -> _Page:
    """Bars from ``start`` (or after the cursor) on; the live bar is appended when the page reaches it."""
    after = plan.after[0] if plan.after is not None else None
    rows = await store.bars(ticker, timeframe, plan.start, plan.end, after, n + 1)
    more = len(rows) > n
    rows = rows[:n]
    bars = _final_json(rows, ticker, timeframe)
    last_time = rows[-1][0] if rows else None
    live_included = False
    if not more:
        live = await _live_in(cache, ticker, timeframe, plan)
        if live is not None:
            wire, live_start = live
            newer = last_time is None or live_start > last_time
            if newer and (after is None or live_start > after):
                if len(bars) < n:
                    bars.append(bar_from_wire(wire).model_dump(mode="json"))
                    last_time = live_start
                    live_included = True
                else:
                    more = True  # the live bar is on the next page
    next_cursor = encode_next("b", plan.scope, last_time) if more and last_time is not None else None
    return _Page(bars, live_included, next_cursor=next_cursor)


@router.get("/aggregated/{symbol}", responses=ERRORS)
async def get_aggregated(
    symbol: TickerInPath,
    tickers: TickersDep,
    store: StoreDep,
    cache: CacheDep,
    window: Annotated[schemas.Window, Query(description="aggregation window")] = "1min",
) -> schemas.Envelope[schemas.AggregatedBar]:
    """The newest final bar of a window (seed-002 path; Redis, falling back to the database)."""
    symbol = await tickers.require(symbol)
    timeframe = WINDOW_TO_TIMEFRAME[window]
    bar = await read_through(
        cache.final_bar(symbol, timeframe),
        lambda: store.latest_bar(symbol, timeframe),
        f"no {window} bar for {symbol!r} yet",
        bar_from_wire,
        bar_from_row,
    )
    return schemas.Envelope(data=schemas.AggregatedBar(**bar.model_dump(), symbol=symbol, window=window))
