"""Trading sessions and the simulated clock: 24/7 or an exchange calendar with an overnight gap.

Year basis (documented in ``docs/simulator.md``): in ``24/7`` mode a year is 365.25 days of 86,400 s, so
``dt = seconds / 31,557,600``. In ``exchange`` mode a year is 252 trading days; each day carries 1/252 of a
year, of which ``overnight_share`` is spent in the gap between close and the next open (applied as one
step at the open, weekends and holidays included) and the rest is spread evenly over the session seconds.
All times are tz-aware; on the wire and inside the engine they are integer epoch milliseconds (UTC).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np

from common.clock import as_utc, from_ms, to_ms
from common.errors import ConfigError

SessionMode = Literal["24/7", "exchange"]
YEAR_SECONDS_CALENDAR = 365.25 * 86_400.0
TRADING_DAYS_PER_YEAR = 252.0
DAY_MS = 86_400_000


def parse_time(text: str) -> datetime:
    """An ISO-8601 date or datetime; naive values are taken as UTC. Raises ``ValueError`` on anything else."""
    return as_utc(datetime.fromisoformat(text))


@dataclass(frozen=True)
class Session:
    """When the market is open and how simulated seconds map to model years."""

    mode: SessionMode = "24/7"
    timezone: str = "America/New_York"
    open_time: time = time(9, 30)
    close_time: time = time(16, 0)
    weekdays: frozenset[int] = frozenset(range(5))
    overnight_share: float = 0.2
    tz: ZoneInfo = field(init=False, repr=False)

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "tz", ZoneInfo(self.timezone))
        except (ZoneInfoNotFoundError, ValueError) as err:
            msg = f"session timezone: unknown time zone {self.timezone!r}"
            raise ConfigError(msg) from err
        if self.mode not in ("24/7", "exchange"):
            msg = f"session mode must be '24/7' or 'exchange', got {self.mode!r}"
            raise ConfigError(msg)
        if self.mode == "exchange":
            if self.close_time <= self.open_time:
                msg = f"session close_time {self.close_time!r} must be after open_time {self.open_time!r}"
                raise ConfigError(msg)
            if not self.weekdays or not self.weekdays <= frozenset(range(7)):
                msg = f"session weekdays must be a non-empty subset of 0..6, got {sorted(self.weekdays)!r}"
                raise ConfigError(msg)
        if not 0.0 <= self.overnight_share < 1.0:
            msg = f"session overnight_share must be in [0, 1), got {self.overnight_share!r}"
            raise ConfigError(msg)

    # -- year basis

    @property
    def session_seconds(self) -> float:
        """Length of one session in seconds (a full day in 24/7 mode)."""
        if self.mode == "24/7":
            return 86_400.0
        o = self.open_time
        c = self.close_time
        return float((c.hour - o.hour) * 3600 + (c.minute - o.minute) * 60 + (c.second - o.second))

    @property
    def days_per_year(self) -> float:
        """Days (sessions) per model year."""
        return TRADING_DAYS_PER_YEAR if self.mode == "exchange" else 365.25

    def years_per_second(self) -> float:
        """Model years per simulated second while the market is open."""
        if self.mode == "24/7":
            return 1.0 / YEAR_SECONDS_CALENDAR
        return (1.0 - self.overnight_share) / (TRADING_DAYS_PER_YEAR * self.session_seconds)

    def gap_years(self) -> float:
        """Model years applied in one overnight gap (0 in 24/7 mode)."""
        return self.overnight_share / TRADING_DAYS_PER_YEAR if self.mode == "exchange" else 0.0

    # -- calendar

    def segments(self, start_ms: int, end_ms: int | None = None) -> Iterator[tuple[int, int | None]]:
        """Open intervals ``[a, b)`` in epoch ms from ``start_ms`` (clipped), in order; ``b`` None = unbounded."""
        if self.mode == "24/7":
            yield start_ms, end_ms
            return
        day = from_ms(start_ms).astimezone(self.tz).date()
        while True:
            if day.weekday() in self.weekdays:
                a, b = self.day_bounds(day)
                if end_ms is not None and a >= end_ms:
                    return
                if b > start_ms:
                    yield max(a, start_ms), b if end_ms is None else min(b, end_ms)
            day += timedelta(days=1)

    def day_bounds(self, day: date) -> tuple[int, int]:
        """Open and close of ``day``'s session in epoch ms (DST-correct)."""
        a = datetime.combine(day, self.open_time, tzinfo=self.tz)
        b = datetime.combine(day, self.close_time, tzinfo=self.tz)
        return to_ms(a), to_ms(b)

    def session_position(self, ts_ms: np.ndarray) -> np.ndarray | None:
        """Fraction ``[0, 1)`` of the session elapsed at each timestamp of one day (None in 24/7 mode)."""
        if self.mode == "24/7":
            return None
        if ts_ms.size == 0:
            return np.zeros(0)
        # the open in UTC moves with DST: use the open of the first timestamp's local day (callers pass one day)
        day = from_ms(int(ts_ms.flat[0])).astimezone(self.tz).date()
        open_ms, _ = self.day_bounds(day)
        pos = (ts_ms - open_ms) / (self.session_seconds * 1000.0)
        return np.clip(pos, 0.0, 1.0 - 1e-9)


def block_starts(
    session: Session, start_ms: int, block_ms: int, *, resume: bool = False, partial: bool = False
) -> Iterator[tuple[int, bool]]:
    """(start ms, overnight gap before it) of consecutive blocks of ``block_ms`` from the first at/after ``start_ms``.

    24/7 blocks are aligned on the epoch; exchange blocks on each session's open (the session length must be a
    whole number of blocks). The gap flag is set on the first block of every session but the first one.

    ``partial=True``: the first block is the one that *holds* ``start_ms`` (the caller skips its steps before
    ``start_ms``), so nothing of ``[start_ms, ...)`` is left out; on a block boundary it is the same block.
    ``resume=True`` (continuing a history that ended before ``start_ms``; implies ``partial``): a first block
    that starts a session gets the gap too, since the history it continues ended before that open.
    """
    partial = partial or resume
    if session.mode == "24/7":
        t = (start_ms // block_ms if partial else -(-start_ms // block_ms)) * block_ms
        while True:
            yield t, False
            t += block_ms
    first = True
    day = from_ms(start_ms).astimezone(session.tz).date()
    while True:
        if day.weekday() in session.weekdays:
            open_ms, close_ms = session.day_bounds(day)
            if start_ms <= open_ms:
                t = open_ms
            elif partial:
                t = open_ms + (start_ms - open_ms) // block_ms * block_ms
            else:
                t = open_ms + -(-(start_ms - open_ms) // block_ms) * block_ms
            gap = not first or (resume and start_ms <= open_ms)
            while t < close_ms:
                yield t, gap
                first, gap = False, False
                t += block_ms
        day += timedelta(days=1)


def intraday_volume_shape(pos: np.ndarray, depth: float = 0.6) -> np.ndarray:
    """U-shaped intraday volume multiplier with mean 1 over the session (heavier at open and close)."""
    u = 1.0 + depth * (12.0 * (pos - 0.5) ** 2 - 1.0)  # mean of 12 (p - 1/2)^2 over [0,1] is 1
    return np.asarray(u)
