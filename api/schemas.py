"""Response models of the REST API (the OpenAPI contract), separate from table rows and wire messages.

Shapes follow the seeds: prices and other PostgreSQL ``numeric``/``bigint`` aggregates as decimal strings,
timestamps ISO-8601 UTC with milliseconds and a ``Z`` (``2024-01-15T10:30:45.123Z``). Every success body is
``{"success": true, "data": ..., "meta": ...}``; every error body is :class:`ErrorResponse`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, WithJsonSchema

from common.clock import iso_ms
from contracts.anomaly import AnomalyType, Severity
from contracts.bar import INDICATOR_NAMES

Timeframe = Literal["1m", "5m", "15m", "1h", "1d"]
Period = Literal["1h", "1d", "7d", "30d"]
Window = Literal["1min", "5min", "15min", "1h", "1d"]


UtcDatetime = Annotated[
    datetime,
    PlainSerializer(iso_ms, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]
#: A decimal number written as a string (``"150.25"``), as PostgreSQL ``numeric`` columns are served.
DecimalStr = Annotated[str, Field(pattern=r"^-?\d+(\.\d+)?$", examples=["150.25"])]

T = TypeVar("T")
M = TypeVar("M")


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ErrorDetail(_Model):
    """What went wrong: a stable ``code`` and a human ``message`` naming the parameter."""

    code: str = Field(examples=["invalid_parameter"])
    message: str = Field(examples=["limit: Input should be less than or equal to 10000"])


class ErrorResponse(_Model):
    """Body of every 4xx/5xx answer."""

    success: Literal[False] = False
    error: ErrorDetail


class Envelope(_Model, Generic[T]):
    """A success body without metadata."""

    success: Literal[True] = True
    data: T


class PagedEnvelope(_Model, Generic[T, M]):
    """A success body with metadata (range, count, cursor)."""

    success: Literal[True] = True
    data: T
    meta: M


# ---- service ---------------------------------------------------------------------------------------------------


class Health(_Model):
    """Liveness: the process answers."""

    status: Literal["healthy"] = "healthy"
    timestamp: UtcDatetime
    uptime: float = Field(description="seconds since the process started")


class ReadyChecks(_Model):
    """``ok`` or the reason each dependency is unreachable."""

    kafka: str
    redis: str
    database: str


class Ready(_Model):
    """Readiness: Kafka, Redis and the database are reachable (HTTP 503 otherwise)."""

    success: bool
    status: Literal["ready", "not_ready"]
    checks: ReadyChecks
    error: ErrorDetail | None = None


class ApiInfo(_Model):
    """What this API is and where its endpoints are."""

    name: str
    version: str
    description: str
    endpoints: dict[str, dict[str, str]]


# ---- market data -----------------------------------------------------------------------------------------------


class TickerInfo(_Model):
    """One ticker of the simulated universe."""

    ticker: str
    name: str
    sector: str
    initial_price: DecimalStr
    created_at: UtcDatetime


class Quote(_Model):
    """A tick: trade price, size and the quote around it."""

    time: UtcDatetime
    ticker: str
    price: DecimalStr
    volume: int
    bid: DecimalStr
    ask: DecimalStr
    bid_size: int
    ask_size: int
    seq: int


class LatestPrice(Quote):
    """Seed-002 ``/latest``: the newest tick, with the ticker also named ``symbol``."""

    symbol: str


class RangeMeta(_Model):
    """The range a list answer covers and how to fetch the neighbouring pages.

    Without `start` a list holds the newest `limit` rows of [start, end] (ascending) and `prev_cursor` walks
    back; with `start` it holds the oldest rows from `start` on and `next_cursor` walks forward."""

    ticker: str
    start: UtcDatetime
    end: UtcDatetime
    count: int
    next_cursor: str | None = Field(
        description=(
            "pages forward (oldest-first listings, i.e. `start` given): pass as `cursor` to get the page right"
            " after this one; null on the last page and on newest-first listings"
        )
    )
    prev_cursor: str | None = Field(
        description=(
            "pages backward (newest-first listings, i.e. no `start`): pass as `cursor` (with the same `end`) to"
            " get the page right before this one, still ascending; null once a page reaches `start` and on"
            " oldest-first listings"
        )
    )


class Bar(_Model):
    """An OHLCV bar starting at ``time``; ``final`` is false for the live (still open) bar."""

    time: UtcDatetime
    ticker: str
    timeframe: Timeframe
    open: DecimalStr
    high: DecimalStr
    low: DecimalStr
    close: DecimalStr
    volume: int
    vwap: DecimalStr
    trades: int
    final: bool


class BarsMeta(RangeMeta):
    """Range metadata of ``/bars``."""

    timeframe: Timeframe
    live_included: bool = Field(
        description="the last bar is the live one (final = false); in a newest-first listing it counts toward `limit`"
    )


class AggregatedBar(Bar):
    """Seed-002 ``/aggregated``: the newest final bar of a window."""

    symbol: str
    window: Window


class Stats(_Model):
    """Summary of a ticker's ticks over ``period``; price fields are null when there were no ticks."""

    ticker: str
    tick_count: int
    low: DecimalStr | None
    high: DecimalStr | None
    open: DecimalStr | None
    close: DecimalStr | None
    avg_price: DecimalStr | None
    total_volume: int
    volatility: DecimalStr | None = Field(description="standard deviation of the price")
    change: float | None
    change_pct: float | None
    period: Period


class IndicatorValues(_Model):
    """Technical indicators of the newest final bar of ``timeframe`` (TA-Lib definitions; null until defined)."""

    ticker: str
    symbol: str
    timeframe: Timeframe
    time: UtcDatetime = Field(description="start of the bar the values were computed on")
    close: DecimalStr
    sma_20: float | None
    sma_50: float | None
    sma_200: float | None
    ema_12: float | None
    ema_26: float | None
    rsi_14: float | None
    macd: float | None
    macd_signal: float | None
    macd_hist: float | None
    bb_upper: float | None
    bb_middle: float | None
    bb_lower: float | None


#: the indicator fields of :class:`IndicatorValues` (written out above for OpenAPI), in wire order
INDICATOR_FIELDS: tuple[str, ...] = INDICATOR_NAMES


class AnomalyOut(_Model):
    """One detected anomaly; ``value`` and ``threshold`` are in the unit of its type (see docs/anomalies.md)."""

    time: UtcDatetime = Field(description="start of the bar it was detected on")
    ticker: str
    type: AnomalyType
    timeframe: Timeframe
    severity: Severity
    value: float
    threshold: float
    reference: float | None = Field(description="baseline compared with (average close or volume), if any")
    message: str
    detected_at: UtcDatetime


class AnomaliesMeta(_Model):
    """What the list covers."""

    ticker: str | None
    since: UtcDatetime
    until: UtcDatetime
    min_severity: Severity | None
    count: int
    limit: int
