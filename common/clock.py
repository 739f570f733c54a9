"""Wall clock, epoch-millisecond conversions and ISO-8601 text shared by every process (all times UTC, never naive)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Final

from common.errors import ConfigError

#: 1970-01-01T00:00:00Z
EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def now_ms() -> int:
    """Wall clock in epoch milliseconds."""
    return time.time_ns() // 1_000_000


def to_ms(value: datetime) -> int:
    """Epoch milliseconds of a tz-aware datetime, exact (``int(value.timestamp() * 1000)`` is 1 ms low for about
    1 % of times with milliseconds); sub-millisecond parts are floored. A naive datetime is a ``ConfigError``."""
    if value.tzinfo is None:
        msg = f"naive datetime {value!r}: pass a tz-aware datetime"
        raise ConfigError(msg)
    return (value - EPOCH) // timedelta(milliseconds=1)


def as_utc(value: datetime) -> datetime:
    """``value`` with naive taken as UTC (the rule for times users type: CLI options, query parameters)."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def from_ms(ms: int) -> datetime:
    """Exact UTC datetime of an epoch-millisecond integer (no float rounding)."""
    return EPOCH + timedelta(milliseconds=ms)


def iso_ms(value: datetime) -> str:
    """``2024-01-15T10:30:45.123Z``: UTC, millisecond precision (RFC 3339, as the REST API prints timestamps)."""
    v = value.astimezone(UTC)  # not strftime: "%Y" prints year 167 as "167", which is not RFC 3339
    date = f"{v.year:04d}-{v.month:02d}-{v.day:02d}"
    return f"{date}T{v.hour:02d}:{v.minute:02d}:{v.second:02d}.{v.microsecond // 1000:03d}Z"


def iso_from_ms(ms: int) -> str:
    """:func:`iso_ms` of epoch milliseconds, faster (the gateway's hot path); exact for years 1000-9999, which
    covers every timestamp the contracts accept."""
    return f"{EPOCH + timedelta(milliseconds=ms):%Y-%m-%dT%H:%M:%S}.{ms % 1000:03d}Z"
