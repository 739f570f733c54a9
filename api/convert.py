"""Conversions from wire messages (``contracts``) and table rows (``api.store``) to REST response models.

Prices leave as exact decimal strings: wire floats are on the $0.01 grid and formatted with two decimals,
``numeric`` columns are printed as PostgreSQL stores them.

Hot routes (``/quote``, ``/bars``, ``/history``, ``/ticks``) skip the response models: they build plain dicts
of exactly the models' JSON shape and return :func:`json_response` bytes (orjson), because FastAPI would
otherwise validate and serialise every model again (a quarter of a 500-bar ``/bars``, half of a 1,000-tick
``/history``). The models stay the routes' ``response_model`` for OpenAPI; the unit tests, the integration tests
and the schemathesis run check the dicts and bytes against them.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import orjson
from fastapi import Response

from api import schemas
from api.store import BarRow, TickRow
from common.clock import from_ms, iso_from_ms, iso_ms
from contracts.bar import Bar
from contracts.tick import Tick

_CENT = Decimal("0.01")


def cents(value: float) -> str:
    """A grid price as ``"150.25"``."""
    return f"{value:.2f}"


def dec(value: Decimal, places: Decimal = _CENT) -> str:
    """A decimal rounded to ``places`` as a plain string (never exponent notation)."""
    return format(value.quantize(places, rounding=ROUND_HALF_EVEN), "f")


def json_response(payload: Any, status_code: int = 200) -> Response:
    """``payload`` serialised once with orjson, bypassing FastAPI's response-model pass."""
    return Response(orjson.dumps(payload), status_code=status_code, media_type="application/json")


def quote_json_from_tick(t: Tick) -> dict[str, Any]:
    """The :class:`api.schemas.Quote` JSON of a wire tick, built as a plain dict (hot path of ``/quote``)."""
    return {
        "time": iso_from_ms(t.timestamp),
        "ticker": t.ticker,
        "price": cents(t.price),
        "volume": t.volume,
        "bid": cents(t.bid),
        "ask": cents(t.ask),
        "bid_size": t.bid_size,
        "ask_size": t.ask_size,
        "seq": t.seq,
    }


def quote_json_from_row(r: TickRow) -> dict[str, Any]:
    """The :class:`api.schemas.Quote` JSON of an archived tick (``/history``, ``/ticks``, the ``/quote`` fallback)."""
    return {
        "time": iso_ms(r.time),
        "ticker": r.ticker,
        "price": format(r.price, "f"),
        "volume": r.volume,
        "bid": format(r.bid, "f"),
        "ask": format(r.ask, "f"),
        "bid_size": r.bid_size,
        "ask_size": r.ask_size,
        "seq": r.seq,
    }


def bar_from_wire(b: Bar) -> schemas.Bar:
    """REST bar of a wire bar (live or final)."""
    return schemas.Bar(
        time=from_ms(b.start),
        ticker=b.ticker,
        timeframe=b.timeframe,  # validated by the contract
        open=cents(b.open),
        high=cents(b.high),
        low=cents(b.low),
        close=cents(b.close),
        volume=b.volume,
        vwap=f"{b.vwap:.6f}",
        trades=b.trades,
        final=b.final,
    )


def bar_from_row(r: BarRow) -> schemas.Bar:
    """REST bar of a ``market_bars`` row (always final)."""
    return schemas.Bar(
        time=r.time,
        ticker=r.ticker,
        timeframe=r.timeframe,  # CHECK constraint on the column
        open=format(r.open, "f"),
        high=format(r.high, "f"),
        low=format(r.low, "f"),
        close=format(r.close, "f"),
        volume=r.volume,
        vwap=format(r.vwap, "f"),
        trades=r.trades,
        final=True,
    )
