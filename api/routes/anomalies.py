"""``/anomalies`` (seed 002): what ``flows.anomalies`` detected, newest first, from the ``anomalies`` table."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, Final

from fastapi import APIRouter, Query

from api import schemas
from api.deps import API_PREFIX, StateDep, StoreDep, time_range
from contracts.anomaly import SEVERITIES, AnomalyType, Severity
from contracts.tick import MAX_TICKER_CHARS

router = APIRouter(prefix=API_PREFIX, tags=["anomalies"])

DEFAULT_LIMIT: Final = 100
MAX_LIMIT: Final = 1_000
DEFAULT_SPAN: Final = timedelta(days=1)
MAX_SPAN: Final = timedelta(days=31)

ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": schemas.ErrorResponse, "description": "unknown ticker"},
    422: {"model": schemas.ErrorResponse, "description": "bad ticker/since/severity/type/limit or too wide a range"},
}


AnomaliesResponse = schemas.PagedEnvelope[list[schemas.AnomalyOut], schemas.AnomaliesMeta]


@router.get("/anomalies", responses=ERRORS)
async def get_anomalies(
    state: StateDep,
    store: StoreDep,
    ticker: Annotated[str | None, Query(max_length=MAX_TICKER_CHARS, description="only this ticker")] = None,
    since: Annotated[datetime | None, Query(description="ISO-8601 lower bound (default: until - 24 h)")] = None,
    until: Annotated[datetime | None, Query(description="ISO-8601 upper bound of bar time (default: now)")] = None,
    severity: Annotated[Severity | None, Query(description="minimum severity (high = high and critical)")] = None,
    type: Annotated[AnomalyType | None, Query(description="only this anomaly type")] = None,  # noqa: A002
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description=f"max rows (max {MAX_LIMIT})")] = DEFAULT_LIMIT,
) -> AnomaliesResponse:
    """Detected anomalies with bar time in [since, until] (at most 31 days wide), newest first."""
    rng = time_range(since, until, DEFAULT_SPAN, MAX_SPAN, start_name="since", end_name="until")
    canon = await state.tickers.require(ticker) if ticker is not None else None  # a bad range is a 422 first
    start, end = rng.start, rng.end
    levels = [s.value for s in SEVERITIES if severity is None or s.rank >= severity.rank]
    rows = await store.anomalies(start, end, levels, canon, type.value if type is not None else None, limit)
    data = [schemas.AnomalyOut(**row) for row in rows]
    meta = schemas.AnomaliesMeta(
        ticker=canon, since=start, until=end, min_severity=severity, count=len(data), limit=limit
    )
    return AnomaliesResponse(data=data, meta=meta)
