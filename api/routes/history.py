"""``/history/{ticker}`` (seed 000, paged by cursor) and ``/ticks/{symbol}`` (seed 002, newest N)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from api import schemas
from api.convert import json_response, quote_json_from_row
from api.deps import (
    API_PREFIX,
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

router = APIRouter(prefix=API_PREFIX, tags=["history"])

ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": schemas.ErrorResponse, "description": "unknown ticker"},
    422: {"model": schemas.ErrorResponse, "description": "bad start/end/limit/cursor or too wide a range"},
}

HistoryResponse = schemas.PagedEnvelope[list[schemas.Quote], schemas.RangeMeta]


@router.get("/history/{ticker}", responses=ERRORS, response_model=HistoryResponse)
async def get_history(
    ticker: TickerPath,
    store: StoreDep,
    settings: SettingsDep,
    start: StartQuery = None,
    end: EndQuery = None,
    limit: Annotated[int | None, Query(ge=1, description="max ticks (default 1000, max 10000)")] = None,
    cursor: CursorQuery = None,
) -> Response:
    """Ticks of a ticker in [start, end], ascending (default: the last hour, 1,000 ticks)."""
    n = bounded_limit(limit, settings.history_default_limit, settings.history_max_limit)
    rng = time_range(start, end, timedelta(hours=1), timedelta(seconds=settings.history_max_range_s))
    after = decode_cursor("h", cursor) if cursor else None
    rows = await store.ticks(ticker, rng.start, rng.end, after, n + 1)
    more = len(rows) > n
    rows = rows[:n]
    next_cursor = encode_cursor("h", epoch_us(rows[-1].time), rows[-1].seq) if more else None
    meta = schemas.RangeMeta(ticker=ticker, start=rng.start, end=rng.end, count=len(rows), next_cursor=next_cursor)
    # the JSON of HistoryResponse, built directly (see api.convert)
    data = [quote_json_from_row(r) for r in rows]
    return json_response({"success": True, "data": data, "meta": meta.model_dump(mode="json")})


TicksResponse = schemas.Envelope[list[schemas.Quote]]


@router.get("/ticks/{symbol}", responses=ERRORS, response_model=TicksResponse)
async def get_ticks(
    symbol: SymbolPath,
    store: StoreDep,
    settings: SettingsDep,
    limit: Annotated[int | None, Query(ge=1, description="newest N ticks (default 100, max 10000)")] = None,
) -> Response:
    """The newest ticks of a symbol, ascending (seed-002 path)."""
    n = bounded_limit(limit, settings.ticks_default_limit, settings.history_max_limit)
    rows = await store.recent_ticks(symbol, n)
    return json_response({"success": True, "data": [quote_json_from_row(r) for r in rows]})
