"""Resuming ``run`` where the ticks topic ends: the pure part (no Kafka, no clock).

A restarted simulator must continue the history it left in the topic instead of producing a second,
overlapping one. :class:`LastTicks` keeps, from decoded messages, the last tick (highest ``seq``, then latest
timestamp) of every ticker of the universe; :func:`plan_resume` turns those last ticks into the engine's start
state (:class:`ResumeState`: next ``seq`` and start price per ticker) and the simulated time to start from.
The Kafka scan that feeds :class:`LastTicks` lives in :mod:`simulator.topic_tail`.

What carries over per ticker: ``seq`` (the next one is ``last + 1``) and the price (the model's log price
restarts at the last traded price). What does not: the market variance multiplier ``h`` restarts at its mean
(1), the regime at calm, and the random streams are derived from the seed *and the resume point*
(:func:`resume_seed`), so a resumed run does not replay the shocks of the run it continues, and the same
config, seed and resume point give a byte-identical stream.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from common.errors import ContractError
from contracts.tick import Tick, decode_tick
from simulator.models import SeedLike, child_sequence

#: spawn-key element that marks the seed sequence of a resumed run (away from make_streams' children 0 and 1)
RESUME_SPAWN_KEY = 0x5E5


def resume_seed(seed: SeedLike, start_ms: int) -> np.random.SeedSequence:
    """The seed sequence of a run resumed at ``start_ms``: a child of ``seed``'s keyed by the resume point."""
    if start_ms < 0:
        msg = f"resume point must be a non-negative epoch-ms timestamp, got {start_ms!r}"
        raise ValueError(msg)
    return child_sequence(child_sequence(seed, RESUME_SPAWN_KEY), start_ms)


@dataclass(frozen=True)
class ResumeState:
    """Start state of every ticker (universe order): the next ``seq`` and the start price in dollars."""

    next_seq: NDArray[np.int64]
    prices: NDArray[np.float64]

    def __post_init__(self) -> None:
        if self.next_seq.shape != self.prices.shape or self.next_seq.ndim != 1:
            msg = f"resume state shapes differ: next_seq {self.next_seq.shape!r}, prices {self.prices.shape!r}"
            raise ValueError(msg)
        bad = np.flatnonzero(self.next_seq < 0)
        if bad.size:
            i = int(bad[0])
            msg = f"resume state: next seq must be >= 0, got {int(self.next_seq[i])!r} at index {i} ({bad.size} bad)"
            raise ValueError(msg)
        bad = np.flatnonzero(~(np.isfinite(self.prices) & (self.prices > 0.0)))
        if bad.size:
            i = int(bad[0])
            price = float(self.prices[i])
            msg = f"resume state: start prices must be positive, got {price!r} at index {i} ({bad.size} bad)"
            raise ValueError(msg)


@dataclass
class LastTicks:
    """The last tick of each ticker of ``symbols`` among the messages fed to :meth:`add`."""

    symbols: frozenset[str]
    last: dict[str, Tick] = field(default_factory=dict)
    scanned: int = 0
    undecodable: int = 0
    foreign: int = 0  # decodable ticks of tickers outside the universe

    def add(self, values: Iterable[bytes | None]) -> None:
        """Decode message values and keep each ticker's last tick; undecodable values are counted and skipped."""
        last = self.last
        for raw in values:
            self.scanned += 1
            try:
                tick = decode_tick(raw if raw is not None else b"")
            except ContractError:
                self.undecodable += 1
                continue
            if tick.ticker not in self.symbols:
                self.foreign += 1
                continue
            seen = last.get(tick.ticker)
            if seen is None or (tick.seq, tick.timestamp) > (seen.seq, seen.timestamp):
                last[tick.ticker] = tick

    @property
    def complete(self) -> bool:
        """True when every ticker of the universe has been found."""
        return len(self.last) == len(self.symbols)

    @property
    def missing(self) -> list[str]:
        """Tickers of the universe not found (sorted)."""
        return sorted(self.symbols - self.last.keys())


@dataclass(frozen=True)
class ResumePlan:
    """Where and how ``run`` continues the topic's history."""

    start_ms: int  # first step of the resumed stream (on the engine's step grid)
    state: ResumeState
    found: int  # tickers continued from the topic
    fresh: list[str]  # tickers of the universe not in the topic: start from their configured price, seq 0
    latest_ms: int  # latest last-tick timestamp over all tickers
    gap_ms: int  # simulated time produced as fast as possible before real time (start -> now)
    skipped_ms: int  # simulated time not produced because the gap exceeded the backfill window
    future_ms: int  # how far the latest tick is ahead of the wall clock (0 when it is not)


def next_step_ms(ts_ms: int, tick_ms: int) -> int:
    """First step of the ``tick_ms`` grid strictly after the step holding ``ts_ms``.

    Steps are multiples of ``tick_ms`` from the epoch (24/7 blocks are epoch-aligned; exchange sessions open
    on whole minutes, which ``tick_ms`` divides), and a tick's slice offset is below ``tick_ms``, so every tick
    of the next step is later than ``ts_ms``.
    """
    return (ts_ms // tick_ms + 1) * tick_ms


def plan_resume(
    last: dict[str, Tick],
    symbols: Sequence[str],
    start_prices: NDArray[np.float64],
    tick_ms: int,
    now_ms: int,
    max_gap_ms: int | None = None,
) -> ResumePlan | None:
    """The resume plan from the last tick of each ticker, or None when the topic holds none of the universe.

    Every ticker found continues at ``seq + 1`` from its last price; the others start at seq 0 from their
    configured ``start_prices``. The stream starts at the step after the latest last tick of all tickers (a
    ticker whose last tick is older just has a gap). When ``max_gap_ms`` is given and the time from there to
    ``now_ms`` is longer, the clock jumps to ``now_ms - max_gap_ms`` (the step after it): the backfill window
    bounds the history produced at start in both cases.
    """
    universe = set(symbols)
    found = {s: t for s, t in last.items() if s in universe}
    if not found:
        return None
    seqs = np.zeros(len(symbols), dtype=np.int64)
    prices = np.asarray(start_prices, dtype=np.float64).copy()
    for i, sym in enumerate(symbols):
        tick = found.get(sym)
        if tick is not None:
            seqs[i] = tick.seq + 1
            prices[i] = tick.price
    latest = max(t.timestamp for t in found.values())
    start = next_step_ms(latest, tick_ms)
    skipped = 0
    if max_gap_ms is not None and now_ms - start > max_gap_ms:
        jumped = -(-(now_ms - max_gap_ms) // tick_ms) * tick_ms
        skipped, start = jumped - start, jumped
    return ResumePlan(
        start_ms=start,
        state=ResumeState(next_seq=seqs, prices=prices),
        found=len(found),
        fresh=[s for s in symbols if s not in found],
        latest_ms=latest,
        gap_ms=max(0, now_ms - start),
        skipped_ms=skipped,
        future_ms=max(0, latest - now_ms),
    )


def describe_gap(ms: int) -> str:
    """A short human duration: ``850 ms``, ``3.2 s``, ``3.2 min``, ``5.1 h``, ``2.0 d``."""
    if ms < 1000:
        return f"{ms} ms"
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("min", 60_000)):
        if ms >= size:
            return f"{ms / size:.1f} {unit}"
    return f"{math.floor(ms / 100) / 10:.1f} s"
