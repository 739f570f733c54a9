"""``/history/{ticker}`` (seed 000: newest first, or from ``start``; paged by cursor) and ``/ticks/{symbol}``
(seed 002: the newest N, ascending)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from api import schemas
from api.convert import json_response, quote_json_from_row
from api.deps import API_PREFIX, SettingsDep, StoreDep, TickerInPath, TickersDep, bounded_limit
from api.paging import CursorQuery, EndQuery, StartQuery, encode_next, encode_prev, plan_page, ticker_scope

router = APIRouter(prefix=API_PREFIX, tags=["history"])

ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": schemas.ErrorResponse, "description": "unknown ticker"},
    422: {"model": schemas.ErrorResponse, "description": "bad start/end/limit/cursor or too wide a range"},
}

HistoryResponse = schemas.PagedEnvelope[list[schemas.Quote], schemas.RangeMeta]


@router.get("/history/{ticker}", responses=ERRORS, response_model=HistoryResponse)
async def get_history(
    ticker: TickerInPath,
    tickers: TickersDep,
    store: StoreDep,
    settings: SettingsDep,
    start: StartQuery = None,
    end: EndQuery = None,
    limit: Annotated[
        int | None,
        Query(ge=1, description="max ticks (default 1000, max 10000); without `start` the newest ones"),
    ] = None,
    cursor: CursorQuery = None,
) -> Response:
    """Ticks of a ticker, ascending: the newest `limit` of the last hour (or before `end`), or from `start` on."""
    n = bounded_limit(limit, settings.history_default_limit, settings.history_max_limit)
    max_span = timedelta(seconds=settings.history_max_range_s)
    plan = plan_page("h", ticker_scope(ticker), start, end, cursor, timedelta(hours=1), max_span)
    ticker = await tickers.require(ticker)  # after the parameters' 422s (api.deps, TickerInPath)
    next_cursor = prev_cursor = None
    if plan.newest:
        rows = await store.ticks(ticker, plan.start, plan.end, plan.before, n + 1, newest=True)
        more = len(rows) > n
        rows = rows[:n]
        rows.reverse()
        if more:  # rows[0] is the oldest served; ties on its time continue by seq
            prev_cursor = encode_prev("h", plan.scope, rows[0].time, rows[0].seq, plan.start)
    else:
        rows = await store.ticks(ticker, plan.start, plan.end, plan.after, n + 1)
        more = len(rows) > n
        rows = rows[:n]
        if more:
            next_cursor = encode_next("h", plan.scope, rows[-1].time, rows[-1].seq)
    meta = schemas.RangeMeta(
        ticker=ticker,
        start=plan.start,
        end=plan.end,
        count=len(rows),
        next_cursor=next_cursor,
        prev_cursor=prev_cursor,
    )
    # the JSON of HistoryResponse, built directly (see api.convert)
    data = [quote_json_from_row(r) for r in rows]
    return json_response({"success": True, "data": data, "meta": meta.model_dump(mode="json")})


TicksResponse = schemas.Envelope[list[schemas.Quote]]


@router.get("/ticks/{symbol}", responses=ERRORS, response_model=TicksResponse)
async def get_ticks(
    symbol: TickerInPath,
    tickers: TickersDep,
    store: StoreDep,
    settings: SettingsDep,
    limit: Annotated[int | None, Query(ge=1, description="newest N ticks (default 100, max 10000)")] = None,
) -> Response:
    """The newest ticks of a symbol, ascending (seed-002 path)."""
    n = bounded_limit(limit, settings.ticks_default_limit, settings.history_max_limit)
    symbol = await tickers.require(symbol)
    rows = await store.recent_ticks(symbol, n)
    return json_response({"success": True, "data": [quote_json_from_row(r) for r in rows]})
