"""``/stats/{ticker}``: the seed's summary statistics over 1h, 1d, 7d or 30d."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, Final

from fastapi import APIRouter, Query

from api import schemas
from api.convert import dec
from api.deps import API_PREFIX, StoreDep, TickerInPath, TickersDep

router = APIRouter(prefix=API_PREFIX, tags=["stats"])

PERIODS: Final[dict[str, timedelta]] = {
    "1h": timedelta(hours=1),
    "1d": timedelta(days=1),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
}
#: periods up to this long are computed from raw ticks, longer ones from final 1-minute bars (bounded work)
TICKS_UP_TO: Final = timedelta(hours=1)

ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": schemas.ErrorResponse, "description": "unknown ticker"},
    422: {"model": schemas.ErrorResponse, "description": "bad period"},
}


@router.get("/stats/{ticker}", responses=ERRORS)
async def get_stats(
    ticker: TickerInPath,
    tickers: TickersDep,
    store: StoreDep,
    period: Annotated[schemas.Period, Query(description="look-back window")] = "1d",
) -> schemas.Envelope[schemas.Stats]:
    """Tick count, range, open/close, average price, volume and volatility over a period."""
    ticker = await tickers.require(ticker)  # in the handler: after the 422s of the query (api.deps, TickerInPath)
    end = datetime.now(UTC)
    span = PERIODS[period]
    if span <= TICKS_UP_TO:
        row = await store.stats_from_ticks(ticker, end - span, end)
    else:
        row = await store.stats_from_bars(ticker, end - span, end)
    change: float | None = None
    change_pct: float | None = None
    if row.open is not None and row.close is not None:
        diff = row.close - row.open
        change = float(diff.quantize(Decimal("0.01")))
        change_pct = float((diff / row.open * 100).quantize(Decimal("0.01"))) if row.open else None
    return schemas.Envelope(
        data=schemas.Stats(
            ticker=ticker,
            tick_count=row.tick_count,
            low=_d(row.low),
            high=_d(row.high),
            open=_d(row.open),
            close=_d(row.close),
            avg_price=_d(row.avg_price),
            total_volume=row.total_volume,
            volatility=None if row.volatility is None else f"{row.volatility:.2f}",
            change=change,
            change_pct=change_pct,
            period=period,
        )
    )


def _d(value: Decimal | None) -> str | None:
    return None if value is None else dec(value)
