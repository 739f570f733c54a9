"""The ``market-bars`` message, version 1: an OHLCV bar of one ticker and timeframe.

Key: the ticker. Value: JSON, see ``contracts/schemas/bar.v1.json``. A bar covers the half-open event-time
window ``[start, end)`` aligned to the UTC epoch (``1d`` starts at UTC midnight). ``final`` is false for the
live (still open) bar, which may be published many times, and true exactly once per
``(ticker, timeframe, start)``. ``indicators`` is present on final bars; each value is null until the
indicator is defined (TA-Lib's lookback), e.g. ``sma_200`` is null for the first 199 bars.
"""

from __future__ import annotations

import math
from typing import Final

import msgspec

from common.errors import ContractError
from contracts.codec import decode_message
from contracts.tick import ticker_problem

BAR_SCHEMA_VERSION: Final = 1

#: Supported timeframes and their length in milliseconds, shortest first.
TIMEFRAMES: Final[dict[str, int]] = {
    "1m": 60_000,
    "5m": 300_000,
    "15m": 900_000,
    "1h": 3_600_000,
    "1d": 86_400_000,
}


def timeframe_ms(timeframe: str) -> int:
    """Length of ``timeframe`` in ms; raises :class:`ContractError` naming the value if unknown."""
    try:
        return TIMEFRAMES[timeframe]
    except KeyError:
        msg = f"unknown timeframe {timeframe!r}; expected one of {list(TIMEFRAMES)}"
        raise ContractError(msg) from None


class Indicators(msgspec.Struct, frozen=True, gc=False, omit_defaults=False):
    """Technical indicators computed on final bars' closes (TA-Lib definitions and seeding)."""

    sma_20: float | None = None
    sma_50: float | None = None
    sma_200: float | None = None
    ema_12: float | None = None
    ema_26: float | None = None
    rsi_14: float | None = None
    macd: float | None = None
    macd_signal: float | None = None
    macd_hist: float | None = None
    bb_upper: float | None = None
    bb_middle: float | None = None
    bb_lower: float | None = None


#: the indicator names in wire order (also the ``market_bars`` column names)
INDICATOR_NAMES: tuple[str, ...] = Indicators.__struct_fields__


class Bar(msgspec.Struct, frozen=True, gc=False):
    """One OHLCV bar; construction checks ``low <= open, close <= high`` and ``low <= vwap <= high``."""

    ticker: str
    timeframe: str
    start: int
    end: int
    open: float
    high: float
    low: float
    close: float
    volume: int
    vwap: float
    trades: int
    first_tick: int
    last_tick: int
    final: bool
    indicators: Indicators | None = None
    version: int = BAR_SCHEMA_VERSION
    #: live bars only: processing lag of the newest tick merged into the bar, ms (the bars flow's clock when it
    #: merged it minus its event time); absent (UNSET, not encoded) on final bars, which replay byte for byte
    lag_ms: int | msgspec.UnsetType = msgspec.UNSET

    def __post_init__(self) -> None:
        problem = bar_problem(self)
        if problem is not None:
            msg = f"invalid bar {self.ticker!r} {self.timeframe!r} start={self.start!r}: {problem}"
            raise ContractError(msg)


def bar_problem(b: Bar) -> str | None:
    """The first broken invariant of ``b`` as a short reason, or None when the bar is valid."""
    if b.version != BAR_SCHEMA_VERSION:
        return f"unsupported version {b.version!r}"
    problem = ticker_problem(b.ticker)
    if problem is not None:
        return problem
    length = TIMEFRAMES.get(b.timeframe)
    if length is None:
        return f"unknown timeframe {b.timeframe!r}"
    if b.start % length != 0 or b.end - b.start != length:
        return f"window [{b.start!r}, {b.end!r}) is not an aligned {b.timeframe} window"
    if not all(math.isfinite(v) for v in (b.open, b.high, b.low, b.close, b.vwap)):
        return "prices must be finite"
    if not (b.low > 0 and b.vwap > 0):  # with low <= open, close <= high below: every price > 0 (bar.v1.json)
        return f"prices must be > 0, got low={b.low} vwap={b.vwap}"
    if not (b.low <= min(b.open, b.close) and max(b.open, b.close) <= b.high):
        return f"need low <= open, close <= high, got o={b.open} h={b.high} l={b.low} c={b.close}"
    # VWAP is an average of trade prices within [low, high]; allow float rounding of the division
    eps = 1e-9 * max(1.0, b.high)
    if not b.low - eps <= b.vwap <= b.high + eps:
        return f"vwap {b.vwap!r} outside [low, high] = [{b.low}, {b.high}]"
    if b.volume < 0 or b.trades < 1:
        return f"need volume >= 0 and trades >= 1, got volume={b.volume} trades={b.trades}"
    if not b.start <= b.first_tick <= b.last_tick < b.end:
        return f"tick times [{b.first_tick}, {b.last_tick}] outside the window"
    if b.lag_ms is not msgspec.UNSET and (b.final or b.lag_ms < 0):
        return f"lag_ms is for live bars and >= 0, got {b.lag_ms!r} on a {'final' if b.final else 'live'} bar"
    return None


_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(Bar)


def encode_bar(bar: Bar) -> bytes:
    """The JSON value of ``bar`` as published on ``market-bars``."""
    return _ENCODER.encode(bar)


def decode_bar(raw: bytes) -> Bar:
    """Decode and validate one ``market-bars`` value; raises :class:`ContractError` with the reason."""
    return decode_message(_DECODER, raw, "bar", BAR_SCHEMA_VERSION)
