"""The tick engine: simulated clock + market model + microstructure -> columnar tick batches.

Every ticker ticks once per ``tick_ms`` while the session is open. The engine works in fixed *blocks* of
simulated time (``block_ms``, default one minute): per block it draws all randomness for its ``[steps x
tickers]`` grid in step-major order, updates the market variance and regime at the block end, and applies the
overnight gap before the first block of each session. Because blocks are defined by the simulated clock, the
stream is byte-identical for the same universe, session, seed and start whatever batch sizes or pacing the
caller uses: :meth:`TickEngine.batches` only re-cuts the same rows. Within a block, ticker groups (each with
its own random streams) may run in parallel threads and in row chunks that fit the CPU cache; neither changes
a single number.

*Slices* spread a step's ticks over its interval: with ``slice_ms < tick_ms`` ticker ``i`` of ``n`` ticks at
``step_time + floor(i * S / n) * slice_ms`` (``S = tick_ms / slice_ms``): contiguous runs of about ``n / S``
tickers share a slice, so a step's rows stay in ticker order with non-decreasing timestamps (no reordering of
the generated columns) and a real-time producer sends ``n / S`` ticks every ``slice_ms`` instead of ``n`` ticks
in one burst. Only timestamps depend on it, never a price or the row order.

*The start*: the stream starts exactly at the first step (of the ``tick_ms`` grid) at/after ``start_ms``; when
that is inside a block, the first block is a partial one (its steps before ``start_ms`` are not generated and
draw no random numbers) and the blocks after it are on the usual grid. A start on a block boundary gives the
same stream as always; any other start gives its own stream (the ticks of ``[start, end)`` are all there).
``start_ms`` must be inside the tick contract's timestamp range (2001-09-09 .. 2286-11-20).

*Resuming* (``resume=ResumeState``, see :mod:`simulator.resume`): the engine continues a history that ended
before ``start_ms``: each ticker's ``seq`` continues from its own next value and its log price starts at the
given price; its random streams are derived from the seed and ``start_ms``, so the same seed and resume point
give the same stream again.

*Memory*: a block holds ``tickers x block_ms / tick_ms`` rows of :data:`BYTES_PER_TICK` bytes
(:func:`block_bytes`); a real-time run holds about two (the one being sent and the one prefetched).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from numpy.typing import NDArray

from common.clock import iso_from_ms
from common.errors import ConfigError
from contracts.tick import MAX_TIMESTAMP_MS, MIN_TIMESTAMP_MS, TICK_SCHEMA_VERSION, Tick
from simulator.microstructure import QUOTE_COLUMNS, MicrostructureParams, Quotes, dress_into, ticker_micro
from simulator.models import SeedLike
from simulator.resume import ResumeState, resume_seed
from simulator.session import Session, block_starts, intraday_volume_shape
from simulator.universe import Universe

I64 = NDArray[np.int64]
#: Bytes of one row of a :class:`TickBatch` (int32 ticker, eight int64 columns; a delay column adds 8 more).
BYTES_PER_TICK = 4 + 8 * 8


def block_bytes(n_tickers: int, tick_ms: int, block_ms: int = 60_000) -> int:
    """Bytes of the columns of one engine block of ``n_tickers`` ticking every ``tick_ms``."""
    return n_tickers * (block_ms // tick_ms) * BYTES_PER_TICK


def time_range_problem(name: str, ms: int) -> str | None:
    """Why ``ms`` cannot be a tick's timestamp (outside the contract's range), naming ``name``; else None."""
    if MIN_TIMESTAMP_MS <= ms <= MAX_TIMESTAMP_MS:
        return None
    try:
        shown = iso_from_ms(ms)
    except OverflowError:  # beyond datetime's years 1-9999
        shown = f"{ms} ms"
    return (
        f"{name} {shown} is outside the tick contract's timestamp range"
        f" [{iso_from_ms(MIN_TIMESTAMP_MS)}, {iso_from_ms(MAX_TIMESTAMP_MS)}]"
    )


@dataclass(frozen=True)
class TickBatch:
    """Ticks as parallel columns (step-major: all tickers of step k, then step k+1). Prices in cents."""

    ticker: NDArray[np.int32]
    seq: I64
    ts_ms: I64
    price: I64
    bid: I64
    ask: I64
    bid_size: I64
    ask_size: I64
    volume: I64
    #: per row, how much earlier than ``ts_ms`` the tick is stamped (a ``delay`` event: a feed delivering late);
    #: None when no row is delayed. ``ts_ms`` stays the pacing time, in order.
    delay_ms: I64 | None = None

    def __len__(self) -> int:
        return int(self.ticker.size)

    @property
    def stamp_ms(self) -> I64:
        """The timestamp each tick carries: ``ts_ms`` minus its delay."""
        return self.ts_ms if self.delay_ms is None else self.ts_ms - self.delay_ms

    def take(self, start: int, stop: int) -> TickBatch:
        """Rows ``[start, stop)`` (views, no copy)."""
        cols: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        sliced: dict[str, Any] = {k: None if v is None else v[start:stop] for k, v in cols.items()}
        return TickBatch(**sliced)

    @classmethod
    def concat(cls, parts: list[TickBatch]) -> TickBatch:
        """One batch from several, in order."""
        if len(parts) == 1:
            return parts[0]
        out = {f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls) if f.name != "delay_ms"}
        if any(p.delay_ms is not None for p in parts):
            delays = [np.zeros(len(p), np.int64) if p.delay_ms is None else p.delay_ms for p in parts]
            out["delay_ms"] = np.concatenate(delays)
        return cls(**out)

    def to_ticks(self, symbols: list[str]) -> list[Tick]:
        """Contract objects (validating every invariant); for tests and small exports, not the hot path."""
        names = [f.name for f in fields(self) if f.name != "delay_ms"]
        # the timestamp a tick carries is its stamp, not the pacing time
        cols = [(self.stamp_ms if name == "ts_ms" else getattr(self, name)).tolist() for name in names]
        return [
            Tick(
                ticker=symbols[t],
                seq=s,
                timestamp=ts,
                price=p / 100,
                bid=b / 100,
                ask=a / 100,
                bid_size=bs,
                ask_size=asz,
                volume=v,
                version=TICK_SCHEMA_VERSION,
            )
            for t, s, ts, p, b, a, bs, asz, v in zip(*cols, strict=True)
        ]


class TickEngine:
    """Deterministic multi-ticker tick generator on a simulated clock."""

    def __init__(
        self,
        universe: Universe,
        session: Session,
        seed: SeedLike,
        start_ms: int,
        tick_ms: int = 100,
        block_ms: int = 60_000,
        micro: MicrostructureParams | None = None,
        threads: int = 1,
        chunk_rows: int = 64,
        before_block: Callable[[TickEngine, int], None] | None = None,
        slice_ms: int | None = None,
        resume: ResumeState | None = None,
    ) -> None:
        if tick_ms <= 0 or block_ms % tick_ms:
            msg = f"tick interval {tick_ms!r} ms must be positive and divide the block length {block_ms!r} ms"
            raise ConfigError(msg)
        slice_ms = tick_ms if slice_ms is None else slice_ms
        if slice_ms <= 0 or tick_ms % slice_ms:
            msg = f"slice length {slice_ms!r} ms must be positive and divide the tick interval {tick_ms!r} ms"
            raise ConfigError(msg)
        if session.mode == "exchange" and (session.session_seconds * 1000) % block_ms:
            msg = f"session length {session.session_seconds!r} s must be a whole number of {block_ms!r} ms blocks"
            raise ConfigError(msg)
        problem = time_range_problem("start", start_ms)
        if problem is not None:
            raise ConfigError(problem)
        self.universe = universe
        self.session = session
        #: the requested start: the first tick is at the first step at/after it (scheduled events use it)
        self.start_ms = start_ms
        self.tick_ms = tick_ms
        self.block_ms = block_ms
        self.micro = micro or MicrostructureParams()
        self.n = len(universe)
        if resume is not None and resume.prices.size != self.n:
            msg = f"resume state has {resume.prices.size!r} tickers, the universe {self.n!r}"
            raise ConfigError(msg)
        self.model = universe.model(seed if resume is None else resume_seed(seed, start_ms))
        self.steps_per_block = block_ms // tick_ms
        self._x = np.log(universe.start_prices if resume is None else resume.prices)
        self._sd = self.model.diffusive_sigma
        self._tick_volume = universe.tick_volumes
        #: per ticker, how much earlier its ticks are stamped than produced (``delay`` events; zeros: none)
        self.stamp_delay = np.zeros(self.n, dtype=np.int64)
        self._dt = tick_ms / 1000.0 * session.years_per_second()
        if self.model.heston is not None:  # the variance updates once per block and once per overnight gap
            self.model.heston.check_step(self.steps_per_block * self._dt)
            self.model.heston.check_step(session.gap_years())
        self._steps = 0  # steps generated so far
        # next seq of each ticker at the start (a resumed ticker continues its own numbering)
        self._seq0 = None if resume is None or not resume.next_seq.any() else resume.next_seq.astype(np.int64)
        slices = tick_ms // slice_ms
        # ticker i ticks in slice i * S // n: non-decreasing in i, so rows stay in ticker order (no gather);
        # all zero without slices
        self._slice_offset = np.arange(self.n, dtype=np.int64) * slices // max(1, self.n) * slice_ms
        self._tickers = np.tile(np.arange(self.n, dtype=np.int32), self.steps_per_block)
        self._offsets = np.arange(self.steps_per_block, dtype=np.int64)
        self._starts = block_starts(self.session, start_ms, self.block_ms, resume=resume is not None, partial=True)
        # the engine starts at the step at/after start_ms, possibly inside a block: steps skipped there
        self._skip_before: int | None = start_ms
        self._resumed = resume is not None
        self._next: tuple[int, bool, int] | None = None
        self._pending: TickBatch | None = None
        self.ticks_generated = 0
        self.chunk_rows = max(1, chunk_rows)
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="sim") if threads > 1 else None
        #: called with (engine, block start ms) before each block is generated: scheduled events (simulator.events)
        self.before_block = before_block
        self._ahead_pool: ThreadPoolExecutor | None = None
        self._ahead: Future[TickBatch] | None = None

    # -- clock

    def next_ts_ms(self) -> int:
        """Timestamp of the next tick the engine will emit."""
        if self._pending is not None and len(self._pending):
            return int(self._pending.ts_ms[0])
        if self._ahead is not None:
            return int(self._ahead.result().ts_ms[0])
        t0, _, skip = self._peek_block()
        return t0 + skip * self.tick_ms

    def price_state(self) -> NDArray[np.float64]:
        """The model's current mid price of each ticker in dollars (before the next step is applied)."""
        return np.exp(self._x)

    # -- generation

    def _peek_block(self) -> tuple[int, bool, int]:
        """(start ms, gap before it, leading steps to skip) of the next block."""
        if self._next is None:
            t0, gap = next(self._starts)
            skip = 0
            if self._skip_before is not None:
                skip = max(0, -(-(self._skip_before - t0) // self.tick_ms))
                if skip >= self.steps_per_block:  # start after the block's last step: the next block
                    t0, gap = next(self._starts)
                    gap = gap and self._resumed  # a fresh start's first block never has a night before it
                    skip = 0
                self._skip_before = None
            self._next = (t0, gap, skip)
        return self._next

    def _generate_block(self) -> TickBatch:
        t0, gap, skip = self._peek_block()
        self._next = None
        if self.before_block is not None:
            self.before_block(self, t0)
        model = self.model
        if gap and self.session.gap_years() > 0.0:
            self._x = self._x + model.advance(1, self.session.gap_years()).log_returns[0]
        price0 = np.rint(np.exp(self._x) * 100.0).astype(np.int64)
        m = self.steps_per_block - skip
        block = model.begin(m, self._dt)
        coef = ticker_micro(
            price0,
            block.sigma,
            block.sigma * math.sqrt(self._dt),
            self._tick_volume,
            block.sigma / self._sd,
            self.micro,
        )
        offsets = self._offsets[:m]
        ts = t0 + (skip + offsets) * self.tick_ms
        pos = self.session.session_position(ts)
        shape = None if pos is None else intraday_volume_shape(pos, self.micro.intraday_depth)
        out = Quotes.empty(m, self.n)

        def run_group(g: int) -> None:
            cols = model.groups[g]
            x = self._x[cols].copy()
            gcoef = coef.slice(cols)
            rng = model.group_streams[g]["micro"]
            for r0 in range(0, m, self.chunk_rows):
                r1 = min(m, r0 + self.chunk_rows)
                r = model.chunk_returns(block, g, r0, r1)
                lm = np.cumsum(r, axis=0)
                lm += x
                x = lm[-1]
                dress_into(
                    out.view(slice(r0, r1), cols),
                    lm,
                    r,
                    gcoef,
                    None if shape is None else shape[r0:r1],
                    rng,
                    self.micro,
                )
            self._x[cols] = x

        if self._pool is not None and len(model.groups) > 1:
            list(self._pool.map(run_group, range(len(model.groups))))
        else:
            for g in range(len(model.groups)):
                run_group(g)
        model.end(block)
        if self._seq0 is None:
            seq = np.repeat(self._steps + offsets, self.n)
        else:
            seq = ((self._steps + offsets)[:, None] + self._seq0[None, :]).ravel()
        self._steps += m
        self.ticks_generated += m * self.n
        tickers = self._tickers if m == self.steps_per_block else self._tickers[: m * self.n]
        return TickBatch(
            ticker=tickers,
            seq=seq,
            ts_ms=(ts[:, None] + self._slice_offset[None, :]).ravel(),
            **{k: getattr(out, k).ravel() for k in QUOTE_COLUMNS},
            delay_ms=self.stamp_delay[tickers] if self.stamp_delay.any() else None,
        )

    def close(self) -> None:
        """Stop the worker threads (if any)."""
        for pool in (self._ahead_pool, self._pool):
            if pool is not None:
                pool.shutdown(wait=True)
        self._pool = self._ahead_pool = None

    def prefetch(self) -> None:
        """Start computing the next block in a background thread (keeps real-time slices free of generation).

        Blocks are still generated one after another in stream order, so the output does not change.
        """
        if self._ahead is None:
            if self._ahead_pool is None:
                self._ahead_pool = ThreadPoolExecutor(1, thread_name_prefix="sim-ahead")
            self._ahead = self._ahead_pool.submit(self._generate_block)

    def _next_block(self) -> TickBatch:
        if self._ahead is not None:
            block, self._ahead = self._ahead.result(), None
            return block
        return self._generate_block()

    def blocks(self, end_ms: int | None = None) -> Iterator[TickBatch]:
        """Ticks with ``ts < end_ms`` (unbounded when None), one simulated block at a time.

        Stopping early keeps the rest of a cut block for the next call, so consecutive calls continue the
        same stream seamlessly.
        """
        while True:
            if self._pending is not None:
                block, self._pending = self._pending, None
            else:
                if end_ms is not None and self.next_ts_ms() >= end_ms:
                    return
                block = self._next_block()
            if end_ms is not None and int(block.ts_ms[-1]) >= end_ms:
                cut = int(np.searchsorted(block.ts_ms, end_ms, side="left"))
                if cut < len(block):
                    self._pending = block.take(cut, len(block))
                if cut:
                    yield block.take(0, cut)
                return
            yield block

    def batches(self, max_ticks: int, end_ms: int | None = None) -> Iterator[TickBatch]:
        """The same stream as :meth:`blocks`, re-cut into batches of at most ``max_ticks`` rows."""
        if max_ticks <= 0:
            msg = f"batch size must be positive, got {max_ticks!r}"
            raise ConfigError(msg)
        buf: list[TickBatch] = []
        size = 0
        for block in self.blocks(end_ms):
            start = 0
            while start < len(block):
                take = min(max_ticks - size, len(block) - start)
                buf.append(block.take(start, start + take))
                size += take
                start += take
                if size == max_ticks:
                    yield TickBatch.concat(buf)
                    buf, size = [], 0
        if buf:
            yield TickBatch.concat(buf)
