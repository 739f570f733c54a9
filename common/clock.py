"""Wall clock and epoch-millisecond conversions shared by every process (all times UTC, never naive)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Final

#: 1970-01-01T00:00:00Z
EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def now_ms() -> int:
    """Wall clock in epoch milliseconds."""
    return time.time_ns() // 1_000_000


def from_ms(ms: int) -> datetime:
    """Exact UTC datetime of an epoch-millisecond integer (no float rounding)."""
    return EPOCH + timedelta(milliseconds=ms)
