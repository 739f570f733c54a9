"""``/quote/{ticker}`` (seed 000) and ``/latest/{symbol}`` (seed 002): the newest tick, Redis first.

Normally answered by :mod:`api.fastpath` inside the gateway middleware before FastAPI routing; these routes
document the answers in OpenAPI and serve them when ``API_FAST_ROUTES`` is off (same function, same bytes).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from api import schemas
from api.convert import json_response
from api.deps import API_PREFIX, StateDep, SymbolPath, TickerPath
from api.fastpath import latest_quote

router = APIRouter(prefix=API_PREFIX, tags=["quotes"])

NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": schemas.ErrorResponse, "description": "unknown ticker or no tick yet"}
}


@router.get("/quote/{ticker}", responses=NOT_FOUND, response_model=schemas.Envelope[schemas.Quote])
async def get_quote(ticker: TickerPath, state: StateDep) -> Response:
    """Latest quote of a ticker (Redis, falling back to the database)."""
    return json_response({"success": True, "data": await latest_quote(state, ticker)})


@router.get("/latest/{symbol}", responses=NOT_FOUND, response_model=schemas.Envelope[schemas.LatestPrice])
async def get_latest(symbol: SymbolPath, state: StateDep) -> Response:
    """Latest price of a symbol (seed-002 path)."""
    quote = await latest_quote(state, symbol)
    quote["symbol"] = symbol
    return json_response({"success": True, "data": quote})
