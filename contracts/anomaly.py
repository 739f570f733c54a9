"""The ``alerts`` message, version 1: one market or pipeline anomaly detected on a final bar.

Key: the ticker. Value: JSON, see ``contracts/schemas/anomaly.v1.json``. An anomaly is identified by its
natural key ``(ticker, type, timeframe, time)`` where ``time`` is the start of the bar it was detected on
(epoch ms UTC); a consumer that sees the same key twice (a replay after a flow restart) keeps one. ``value``
and ``threshold`` are in the unit of the type (see :data:`ANOMALY_UNITS`), ``reference`` is the baseline the
value was compared with (the 20-period average close or volume) when there is one.
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Final

import msgspec

from common.errors import ContractError
from contracts.bar import TIMEFRAMES
from contracts.codec import decode_message
from contracts.tick import Ticker

ANOMALY_SCHEMA_VERSION: Final = 1


class AnomalyType(StrEnum):
    """What was detected."""

    PRICE_SPIKE = "price_spike"
    VOLUME_SPIKE = "volume_spike"
    RSI_OVERBOUGHT = "rsi_overbought"
    RSI_OVERSOLD = "rsi_oversold"
    HIGH_LATENCY = "high_latency"


class Severity(StrEnum):
    """How far past its threshold the value is, lowest first (see docs/anomalies.md)."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        """0 for ``low`` .. 3 for ``critical``."""
        return SEVERITIES.index(self)


#: Severities in increasing order.
SEVERITIES: Final[tuple[Severity, ...]] = tuple(Severity)

#: Unit of ``value`` and ``threshold`` per type.
ANOMALY_UNITS: Final[dict[AnomalyType, str]] = {
    AnomalyType.PRICE_SPIKE: "percent deviation of the close from the average close",
    AnomalyType.VOLUME_SPIKE: "bar volume as a multiple of the average volume",
    AnomalyType.RSI_OVERBOUGHT: "RSI points",
    AnomalyType.RSI_OVERSOLD: "RSI points",
    AnomalyType.HIGH_LATENCY: "milliseconds",
}


class Anomaly(msgspec.Struct, frozen=True, gc=False):
    """One detected anomaly; construction checks that the numbers are finite."""

    ticker: Ticker
    type: AnomalyType
    severity: Severity
    timeframe: str
    time: int
    value: float
    threshold: float
    detected_at: int
    message: str
    reference: float | None = None
    version: int = ANOMALY_SCHEMA_VERSION

    def __post_init__(self) -> None:
        problem = anomaly_problem(self)
        if problem is not None:
            msg = f"invalid anomaly {self.ticker!r} {self.type!r} time={self.time!r}: {problem}"
            raise ContractError(msg)

    @property
    def natural_key(self) -> tuple[str, str, str, int]:
        """``(ticker, type, timeframe, time)``: what identifies the anomaly across replays."""
        return self.ticker, self.type.value, self.timeframe, self.time


def anomaly_problem(a: Anomaly) -> str | None:
    """The first broken invariant of ``a`` as a short reason, or None when it is valid."""
    if a.version != ANOMALY_SCHEMA_VERSION:
        return f"unsupported version {a.version!r}"
    if a.timeframe not in TIMEFRAMES:
        return f"unknown timeframe {a.timeframe!r}"
    if not (math.isfinite(a.value) and math.isfinite(a.threshold)):
        return "value and threshold must be finite"
    if a.reference is not None and not math.isfinite(a.reference):
        return "reference must be finite"
    if a.time < 0 or a.detected_at < 0:
        return "times must be epoch milliseconds"
    return None


_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(Anomaly)


def encode_anomaly(anomaly: Anomaly) -> bytes:
    """The JSON value of ``anomaly`` as published on ``alerts``."""
    return _ENCODER.encode(anomaly)


def decode_anomaly(raw: bytes) -> Anomaly:
    """Decode and validate one ``alerts`` value; raises :class:`ContractError` with the reason."""
    return decode_message(_DECODER, raw, "anomaly", ANOMALY_SCHEMA_VERSION)
