"""Streaming technical indicators on final bars' closes, equal to TA-Lib (to 1e-9) at O(1) per bar.

One :class:`IndicatorState` per ``(ticker, timeframe)`` is updated with each final bar's close and returns
the :class:`contracts.bar.Indicators` of that bar. Definitions and seeding follow TA-Lib's default
("classic") compatibility mode, so a value is ``None`` exactly where TA-Lib outputs nothing (its lookback):

- SMA(p): arithmetic mean of the last ``p`` closes; defined from bar ``p`` (1-based).
- EMA(p): ``k = 2 / (p + 1)``, seeded with the SMA of the first ``p`` closes at bar ``p``, then
  ``ema = (close - ema) * k + ema``.
- RSI(p), Wilder: the first ``p`` close-to-close changes are averaged (gains and losses apart) at bar
  ``p + 1``; then ``avg = (avg * (p - 1) + change) / p``; ``rsi = 100 * gain / (gain + loss)``, 0 only when
  ``gain + loss`` is exactly zero. The installed TA-Lib (C library 0.8) has no epsilon here: after a long
  flat run the averages decay geometrically through the subnormal floats and the RSI keeps its last ratio
  (100 after a rise into a flat run with ``p = 14``, where ``avg * 13 / 14`` stops at the smallest subnormal)
  until the sum underflows to exactly 0 (with ``p = 2`` after ~1,070 flat bars). Older TA-Lib releases
  returned 0 as soon as the sum fell below 1e-14; we follow the installed one, same float operations in the
  same order, so the values are bit-identical.
- MACD(fast, slow, signal): TA-Lib seeds *both* EMAs at bar ``slow`` -- the fast one with the SMA of the
  ``fast`` closes ending at that bar, not at bar ``fast`` as talipp does. The signal line is an EMA of the
  MACD line seeded with the SMA of its first ``signal`` values; TA-Lib outputs MACD, signal and histogram only
  from bar ``slow + signal - 1`` on, and so do we.
- Bollinger(p, k): middle = SMA(p), bands = middle +/- k * population standard deviation of the last ``p``
  closes. The installed TA-Lib, too, has no epsilon here (a variance of 2.5e-25 gives a deviation of 5e-13);
  ours is exact (integer cents), so it is zero exactly on a flat window, where TA-Lib's is zero as well.

Periods follow TA-Lib's own ranges (its ``TA_BAD_PARAM`` limits, checked against the installed library):
SMA and EMA 1..100000, RSI 2..100000, MACD fast and slow 2..100000 and signal 1..100000, BBANDS 2..100000.
A period of 1 makes SMA and EMA (``k = 1``) the close itself and the MACD signal the MACD line (to rounding:
TA-Lib computes ``(x - prev) * 1 + prev`` too, and so do we).
Stricter than TA-Lib, on purpose: MACD fast must be shorter than slow (TA-Lib silently swaps them) and the
Bollinger multiplier must be positive and finite (a negative one would swap the bands).

Closes are whole cents (bars are on the $0.01 grid), so every windowed sum -- SMA, the EMA seeds, the
Bollinger sum of squares -- is an exact Python integer kept with O(1) add/remove on a ring buffer: no drift
after any number of bars (TA-Lib itself keeps float running sums and drifts by ~1e-12 over 100k bars, well
inside the 1e-9 agreement). The state is a slotted dataclass of ints, floats and one int64 array: small
(~1 KB for the default periods) and picklable, as Bytewax recovery snapshots require.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass, field

from contracts.bar import Indicators

#: the longest period TA-Lib accepts for any of these functions
MAX_PERIOD = 100_000

#: per setting: the TA-Lib function it feeds and the shortest period that function accepts
#: (``TA_BAD_PARAM`` below it; measured on the installed library, see the oracle tests)
PERIOD_MINIMUMS: dict[str, tuple[str, int]] = {
    "sma_periods": ("SMA", 1),
    "ema_periods": ("EMA", 1),
    "rsi_period": ("RSI", 2),
    "macd_fast": ("MACD", 2),
    "macd_slow": ("MACD", 2),
    "macd_signal": ("MACD", 1),
    "bb_period": ("BBANDS", 2),
}


@dataclass(frozen=True, slots=True)
class IndicatorConfig:
    """Indicator periods. They map positionally onto the contract's fields (``sma_20`` is the first SMA)."""

    sma_periods: tuple[int, int, int] = (20, 50, 200)
    ema_periods: tuple[int, int] = (12, 26)
    rsi_period: int = 14
    macd_fast: int = 12
    macd_slow: int = 26
    macd_signal: int = 9
    bb_period: int = 20
    bb_nbdev: float = 2.0

    def __post_init__(self) -> None:
        periods = {
            "sma_periods": self.sma_periods,
            "ema_periods": self.ema_periods,
            "rsi_period": (self.rsi_period,),
            "macd_fast": (self.macd_fast,),
            "macd_slow": (self.macd_slow,),
            "macd_signal": (self.macd_signal,),
            "bb_period": (self.bb_period,),
        }
        for name, values in periods.items():
            function, minimum = PERIOD_MINIMUMS[name]
            if any(type(p) is not int or not minimum <= p <= MAX_PERIOD for p in values):
                shown = values if len(values) > 1 else values[0]
                each = "each " if len(values) > 1 else ""
                msg = (
                    f"indicator period {name}={shown!r} must {each}be an integer within {minimum}..{MAX_PERIOD} "
                    f"(TA-Lib's range for {function})"
                )
                raise ValueError(msg)
        if self.macd_fast >= self.macd_slow:
            msg = f"macd_fast={self.macd_fast!r} must be shorter than macd_slow={self.macd_slow!r}"
            raise ValueError(msg)
        if not (math.isfinite(self.bb_nbdev) and self.bb_nbdev > 0):
            msg = f"bb_nbdev={self.bb_nbdev!r} must be a positive number"
            raise ValueError(msg)

    @property
    def window(self) -> int:
        """Length of the ring buffer: the longest window any indicator sums over."""
        return max(*self.sma_periods, *self.ema_periods, self.macd_slow, self.bb_period)

    @property
    def summed_periods(self) -> tuple[int, ...]:
        """Every period whose rolling sum of closes is kept (SMA, EMA and MACD seeds, Bollinger)."""
        return tuple(sorted({*self.sma_periods, *self.ema_periods, self.macd_fast, self.macd_slow, self.bb_period}))


DEFAULT_INDICATORS = IndicatorConfig()


@dataclass(slots=True)
class IndicatorState:
    """Incremental indicator state of one ticker and timeframe; feed it closes with :meth:`update`."""

    config: IndicatorConfig = DEFAULT_INDICATORS
    count: int = 0
    ring: array[int] = field(default_factory=lambda: array("q"))
    pos: int = 0
    sums: dict[int, int] = field(default_factory=dict)
    sum_sq: int = 0
    ema: list[float | None] = field(default_factory=list)
    prev_close: float | None = None
    gain: float = 0.0
    loss: float = 0.0
    rsi_ready: bool = False
    macd_fast_ema: float | None = None
    macd_slow_ema: float | None = None
    macd_seed: list[float] = field(default_factory=list)
    signal: float | None = None

    def __post_init__(self) -> None:
        if not self.ring:
            self.ring = array("q", bytes(8 * self.config.window))
            self.sums = dict.fromkeys(self.config.summed_periods, 0)
            self.ema = [None] * len(self.config.ema_periods)

    def update(self, close_cents: int) -> Indicators:
        """Add the close (in cents) of the next final bar and return the indicators at that bar."""
        cfg = self.config
        self.count += 1
        n = self.count
        ring, pos, width = self.ring, self.pos, len(self.ring)
        sums = self.sums
        for p in sums:
            s = sums[p] + close_cents
            if n > p:
                s -= ring[(pos - p) % width]
            sums[p] = s
        sq = self.sum_sq + close_cents * close_cents
        if n > cfg.bb_period:
            old = ring[(pos - cfg.bb_period) % width]
            sq -= old * old
        self.sum_sq = sq
        ring[pos] = close_cents
        self.pos = (pos + 1) % width
        close = close_cents / 100.0

        sma = [sums[p] / 100.0 / p if n >= p else None for p in cfg.sma_periods]
        ema = self._update_ema(n, close)
        rsi = self._update_rsi(n, close)
        macd, signal, hist = self._update_macd(n, close)
        upper, middle, lower = self._bollinger(n)
        self.prev_close = close
        return Indicators(
            sma_20=sma[0],
            sma_50=sma[1],
            sma_200=sma[2],
            ema_12=ema[0],
            ema_26=ema[1],
            rsi_14=rsi,
            macd=macd,
            macd_signal=signal,
            macd_hist=hist,
            bb_upper=upper,
            bb_middle=middle,
            bb_lower=lower,
        )

    def _update_ema(self, n: int, close: float) -> list[float | None]:
        values = self.ema
        for i, p in enumerate(self.config.ema_periods):
            prev = values[i]
            if prev is not None:
                values[i] = (close - prev) * (2.0 / (p + 1)) + prev
            elif n == p:
                values[i] = self.sums[p] / 100.0 / p
        return list(values)

    def _update_rsi(self, n: int, close: float) -> float | None:
        p = self.config.rsi_period
        if self.prev_close is None:
            return None
        change = close - self.prev_close
        if self.rsi_ready:
            gain = self.gain * (p - 1)
            loss = self.loss * (p - 1)
            if change < 0:
                loss -= change
            else:
                gain += change
            self.gain, self.loss = gain / p, loss / p
        else:
            if change < 0:
                self.loss -= change
            else:
                self.gain += change
            if n < p + 1:
                return None
            self.gain /= p
            self.loss /= p
            self.rsi_ready = True
        total = self.gain + self.loss
        # exactly zero, no epsilon: the installed TA-Lib (see the module docstring)
        return 100.0 * (self.gain / total) if total != 0.0 else 0.0

    def _update_macd(self, n: int, close: float) -> tuple[float | None, float | None, float | None]:
        cfg = self.config
        fast, slow = self.macd_fast_ema, self.macd_slow_ema
        if fast is None or slow is None:
            if n < cfg.macd_slow:
                return None, None, None
            # TA-Lib seeds both EMAs at the slow EMA's first bar (see the module docstring)
            fast = self.sums[cfg.macd_fast] / 100.0 / cfg.macd_fast
            slow = self.sums[cfg.macd_slow] / 100.0 / cfg.macd_slow
        else:
            fast = (close - fast) * (2.0 / (cfg.macd_fast + 1)) + fast
            slow = (close - slow) * (2.0 / (cfg.macd_slow + 1)) + slow
        self.macd_fast_ema, self.macd_slow_ema = fast, slow
        macd = fast - slow
        signal = self.signal
        if signal is None:
            self.macd_seed.append(macd)
            if len(self.macd_seed) < cfg.macd_signal:
                return None, None, None
            total = 0.0
            for value in self.macd_seed:  # sequential float sum, as TA-Lib's seed loop
                total += value
            signal = total / cfg.macd_signal
            self.macd_seed = []
        else:
            signal = (macd - signal) * (2.0 / (cfg.macd_signal + 1)) + signal
        self.signal = signal
        return macd, signal, macd - signal

    def _bollinger(self, n: int) -> tuple[float | None, float | None, float | None]:
        p = self.config.bb_period
        if n < p:
            return None, None, None
        total = self.sums[p]
        middle = total / 100.0 / p
        # exact population variance in cents^2: (p * sum(x^2) - sum(x)^2) / p^2
        variance = (p * self.sum_sq - total * total) / (p * p) / 10_000.0
        # never negative (exact integers), zero exactly on a flat window; no epsilon, as the installed TA-Lib
        deviation = math.sqrt(variance)
        width = deviation * self.config.bb_nbdev
        return middle + width, middle, middle - width
