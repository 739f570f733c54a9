"""Event-time OHLCV bars per ticker: batch pre-aggregation with NumPy and a per-ticker bar state machine.

Pure logic, no Bytewax import (``flows.bars`` wires it). Two halves:

1. :func:`partial_bars` turns one decoded batch (all tickers mixed) into, per ticker, a :class:`TickChunk`:
   the partial base-timeframe (1m) bars of that ticker in this batch, computed with NumPy. It also rejects
   ticks that are late relative to earlier ticks *of the same batch* and returns each ticker's newest tick.
2. :class:`TickerBars` merges a ticker's chunks into its open 1m windows, closes windows as the watermark (or,
   in live mode, the system clock) passes ``end + grace``, rolls closed 1m bars up into the higher timeframes,
   computes indicators on every final bar and throttles live (partial) bars.

Semantics (see ``docs/flows.md``): windows are half-open ``[start, end)`` aligned to the UTC epoch; prices are
whole cents inside (OHLC exact); ``vwap = sum(cents * volume) / sum(volume) / 100`` or the close when the bar
has no volume; the watermark of a ticker is the greatest event time it has accepted; a tick whose base window
satisfies ``end + grace <= watermark`` (or that the system clock already closed) is *late*: it becomes a
dead letter and never changes a final bar; empty windows produce no bar; a final bar is emitted at most once
per ``(ticker, timeframe, start)`` -- each timeframe remembers the start of its last final bar.
"""

from __future__ import annotations

import operator
import pickle
import threading
from dataclasses import dataclass, field
from itertools import repeat
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from contracts.bar import TIMEFRAMES, Bar
from flows.decode import DeadLetter, DecodedBatch, Origin, WireTick, dead_letter
from flows.indicators import DEFAULT_INDICATORS, IndicatorConfig, IndicatorState

_NEVER = -(2**62)
_TICKER = operator.attrgetter("ticker")
_NO_WINDOW = 2**62
_INT64_SAFE = 2**62

#: A partial base bar of one ticker in one batch:
#: (start, open, high, low, close, volume, cents*volume, trades, first_ts, last_ts, raw_lo, raw_hi);
#: prices in cents, times in epoch ms; ``chunk.raw(i)`` for ``raw_lo <= i < raw_hi`` are its ticks' values.
Segment = tuple[int, int, int, int, int, int, int, int, int, int, int, int]


_ChunkFields = tuple[str, list[Segment], list[int], list[bytes], list[Origin | None] | None]


class TickChunk(_ChunkFields):
    """The ticks of one ticker in one batch, pre-aggregated into base-timeframe segments (ascending start).

    A tuple ``(ticker, segments, rows, raws, origins)`` so a whole batch of chunks is built by C-level
    ``map``/``zip``. The original values are only needed when a segment turns out late, so a chunk refers to
    the batch's value list by row numbers instead of copying; pickling (an exchange between workers)
    materialises just this chunk's own values.
    """

    __slots__ = ()

    @property
    def ticker(self) -> str:
        return self[0]

    @property
    def segments(self) -> list[Segment]:
        return self[1]

    @property
    def ticks(self) -> int:
        return len(self[2])

    def raw(self, i: int) -> tuple[bytes, Origin | None]:
        """The original value of the chunk's ``i``-th tick (segment order) and where it came from."""
        row = self[2][i]
        origins = self[4]
        return self[3][row], origins[row] if origins is not None else None

    def __reduce__(self) -> tuple[type[TickChunk], tuple[_ChunkFields]]:
        ticker, segments, rows, raws, origins = self
        own_raws = [raws[r] for r in rows]
        own_origins = [origins[r] for r in rows] if origins is not None else None
        return TickChunk, ((ticker, segments, list(range(len(rows))), own_raws, own_origins),)


@dataclass(frozen=True, slots=True)
class AggregationConfig:
    """What to aggregate and when to close. ``timeframes[0]`` is the base the others roll up from."""

    timeframes: tuple[str, ...] = ("1m", "5m", "15m", "1h", "1d")
    grace_ms: int = 2_000
    #: live mode also lets the watermark advance with the system clock while a ticker is quiet (so its bars
    #: close); backfill mode closes on event time only
    close_on_system_time: bool = True
    live_enabled: bool = True
    live_interval_ms: int = 250
    #: also publish the live bar after this many ticks of the ticker (0: only the interval counts)
    live_every_ticks: int = 0
    indicators: IndicatorConfig = DEFAULT_INDICATORS

    def __post_init__(self) -> None:
        if not self.timeframes:
            msg = "timeframes=() must name at least one timeframe"
            raise ValueError(msg)
        unknown = [tf for tf in self.timeframes if tf not in TIMEFRAMES]
        if unknown:
            msg = f"timeframes={self.timeframes!r}: unknown {unknown!r}; expected some of {list(TIMEFRAMES)}"
            raise ValueError(msg)
        lengths = [TIMEFRAMES[tf] for tf in self.timeframes]
        for shorter, longer in zip(lengths, lengths[1:], strict=False):
            if longer <= shorter or longer % shorter:
                msg = f"timeframes={self.timeframes!r}: each must be a longer multiple of the previous one"
                raise ValueError(msg)
        if self.grace_ms < 0 or self.live_interval_ms < 0 or self.live_every_ticks < 0:
            msg = (
                f"grace_ms={self.grace_ms!r}, live_interval_ms={self.live_interval_ms!r} and "
                f"live_every_ticks={self.live_every_ticks!r} must be >= 0"
            )
            raise ValueError(msg)

    @property
    def lengths(self) -> tuple[int, ...]:
        """Window length in ms of each timeframe."""
        return tuple(TIMEFRAMES[tf] for tf in self.timeframes)


class BatchResult(NamedTuple):
    """What :func:`partial_bars` makes of one decoded batch."""

    chunks: list[tuple[str, TickChunk]]
    late: list[DeadLetter]
    latest: list[WireTick]


class TickerCodes:
    """Small integer codes for ticker names, kept across batches (lookups run in C via ``map``).

    Bytewax workers of one process are threads sharing a step's closure, so each thread gets its own table.
    """

    __slots__ = ("_local", "limit")

    def __init__(self, limit: int = 1_000_000) -> None:
        self._local = threading.local()
        self.limit = limit  # bounds memory if a producer invents endless ticker names

    def encode(self, tickers: list[str]) -> npt.NDArray[np.int64]:
        """The code of each ticker, unique per name within this thread; new names get the next codes."""
        codes: dict[str, int] | None = getattr(self._local, "codes", None)
        if codes is None:
            codes = self._local.codes = {}
        try:
            return np.fromiter(map(codes.__getitem__, tickers), dtype=np.int64, count=len(tickers))
        except KeyError:
            if len(codes) + len(tickers) > self.limit:
                codes.clear()
            for name in tickers:
                codes.setdefault(name, len(codes))
            return np.fromiter(map(codes.__getitem__, tickers), dtype=np.int64, count=len(tickers))


def partial_bars(
    batch: DecodedBatch, base_ms: int, grace_ms: int, codes_cache: TickerCodes | None = None
) -> BatchResult:
    """Group a batch by ticker and base window; reject ticks late against earlier ticks of the batch."""
    n = len(batch)
    if n == 0:
        return BatchResult([], [], [])
    index = codes_cache if codes_cache is not None else TickerCodes()
    codes = index.encode(batch.tickers)
    ts = batch.timestamps
    t_min = int(ts.min())
    rel = ts - t_min
    span = int(rel.max()) + 1
    n_codes = int(codes.max()) + 1
    if n_codes * span >= _INT64_SAFE:  # cannot happen for epoch-ms batches spanning < 40 years
        msg = f"batch spans {span} ms over {n_codes} ticker codes: too wide to sort on one int64 key"
        raise OverflowError(msg)

    # arrival order within each ticker: exclusive running max of event time gives each tick's watermark
    order = np.argsort(codes, kind="stable")
    c_a, r_a = codes[order], rel[order]
    first = np.empty(n, dtype=bool)
    first[0] = True
    np.not_equal(c_a[1:], c_a[:-1], out=first[1:])
    offset = c_a * span
    running = np.maximum.accumulate(r_a + offset) - offset
    prior = np.empty(n, dtype=np.int64)
    prior[0] = -1
    prior[1:] = running[:-1]
    prior[first] = -1
    ends = (ts // base_ms + 1) * base_ms - t_min
    late_a = (prior >= 0) & (ends[order] + grace_ms <= prior)

    late: list[DeadLetter] = []
    if late_a.any():
        for pos in np.flatnonzero(late_a).tolist():
            row = int(order[pos])
            late.append(_late_letter(batch, row, base_ms, grace_ms, int(prior[pos]) + t_min))
        order = order[~late_a]
        c_a, r_a = c_a[~late_a], r_a[~late_a]
        first = np.r_[True, c_a[1:] != c_a[:-1]]
    in_time_order = bool(np.all((r_a[1:] >= r_a[:-1]) | first[1:]))
    if not in_time_order:  # out-of-order ticks within grace: sort by (ticker, event time, arrival)
        order = order[np.argsort(c_a * span + r_a, kind="stable")]
        c_a = codes[order]
    ts_s, cents_s, vol_s = ts[order], batch.cents[order], batch.volumes[order]
    win = ts_s // base_ms * base_ms
    seg_first = np.empty(len(order), dtype=bool)
    seg_first[0] = True
    seg_first[1:] = (c_a[1:] != c_a[:-1]) | (win[1:] != win[:-1])
    lo = np.flatnonzero(seg_first)
    hi = np.r_[lo[1:], len(order)]
    if int(cents_s.max()) * int(vol_s.max()) * int((hi - lo).max()) < _INT64_SAFE:
        pv = np.add.reduceat(cents_s * vol_s, lo).tolist()
    else:  # exact Python integers for absurd sizes instead of a silent int64 overflow
        pv = np.add.reduceat(cents_s.astype(object) * vol_s.astype(object), lo).tolist()
    seg_code = c_a[lo]
    tick_first_seg = np.flatnonzero(np.r_[True, seg_code[1:] != seg_code[:-1]])
    group = np.cumsum(np.r_[True, seg_code[1:] != seg_code[:-1]]) - 1
    row0 = lo[tick_first_seg][group]
    segments: list[Segment] = list(
        zip(
            win[lo].tolist(),
            cents_s[lo].tolist(),
            np.maximum.reduceat(cents_s, lo).tolist(),
            np.minimum.reduceat(cents_s, lo).tolist(),
            cents_s[hi - 1].tolist(),
            np.add.reduceat(vol_s, lo).tolist(),
            pv,
            (hi - lo).tolist(),
            ts_s[lo].tolist(),
            ts_s[hi - 1].tolist(),
            (lo - row0).tolist(),
            (hi - row0).tolist(),
            strict=True,
        )
    )
    order_list = order.tolist()
    seg_bounds = np.r_[tick_first_seg, len(lo)]
    row_bounds = np.r_[lo[tick_first_seg], len(order)]
    # one chunk per ticker, built with C-level map/zip: per-ticker Python code is the cost at many tickers
    latest: list[WireTick] = list(map(batch.ticks.__getitem__, order[row_bounds[1:] - 1].tolist()))
    names = list(map(_TICKER, latest))
    seg_slices = map(segments.__getitem__, map(slice, seg_bounds[:-1].tolist(), seg_bounds[1:].tolist()))
    row_slices = map(order_list.__getitem__, map(slice, row_bounds[:-1].tolist(), row_bounds[1:].tolist()))
    fields = zip(names, seg_slices, row_slices, repeat(batch.raws), repeat(batch.origins), strict=False)
    chunks = list(zip(names, map(TickChunk, fields), strict=True))
    return BatchResult(chunks, late, latest)


def _late_letter(batch: DecodedBatch, row: int, base_ms: int, grace_ms: int, watermark: int) -> DeadLetter:
    tick = batch.ticks[row]
    start = tick.timestamp // base_ms * base_ms
    reason = (
        f"late tick {tick.ticker!r} seq={tick.seq} at {tick.timestamp}: window [{start}, {start + base_ms}) "
        f"closed, watermark {watermark} >= end + grace {grace_ms} ms"
    )
    return dead_letter("late", reason, batch.raws[row], batch.origins[row] if batch.origins else None)


class _Acc:
    """An open bar being accumulated (cents, ms); slotted and picklable."""

    __slots__ = ("close", "first_ts", "high", "last_ts", "low", "open", "pv", "start", "trades", "volume")

    def __init__(self, start: int, o: int, h: int, lo: int, c: int, v: int, pv: int, n: int, t0: int, t1: int):
        self.start, self.open, self.high, self.low, self.close = start, o, h, lo, c
        self.volume, self.pv, self.trades, self.first_ts, self.last_ts = v, pv, n, t0, t1

    def __getstate__(self) -> tuple[int, ...]:
        return (self.start, self.open, self.high, self.low, self.close, self.volume, self.pv, self.trades,
                self.first_ts, self.last_ts)  # fmt: skip

    def __setstate__(self, state: tuple[int, ...]) -> None:
        (self.start, self.open, self.high, self.low, self.close, self.volume, self.pv, self.trades,
         self.first_ts, self.last_ts) = state  # fmt: skip

    def copy(self, start: int) -> _Acc:
        return _Acc(start, self.open, self.high, self.low, self.close, self.volume, self.pv, self.trades,
                    self.first_ts, self.last_ts)  # fmt: skip

    def add(self, o: int, h: int, lo: int, c: int, v: int, pv: int, n: int, t0: int, t1: int) -> None:
        """Merge a later-arrived partial bar: earliest event time opens, latest closes (ties: arrival)."""
        if t0 < self.first_ts:
            self.open, self.first_ts = o, t0
        if t1 >= self.last_ts:
            self.close, self.last_ts = c, t1
        if h > self.high:
            self.high = h
        if lo < self.low:
            self.low = lo
        self.volume += v
        self.pv += pv
        self.trades += n

    def merge(self, other: _Acc) -> None:
        self.add(other.open, other.high, other.low, other.close, other.volume, other.pv, other.trades,
                 other.first_ts, other.last_ts)  # fmt: skip

    def to_bar(self, ticker: str, timeframe: str, length: int, final: bool, indicators: object = None) -> Bar:
        vwap = self.pv / self.volume / 100.0 if self.volume else self.close / 100.0
        return Bar(
            ticker=ticker, timeframe=timeframe, start=self.start, end=self.start + length,
            open=self.open / 100.0, high=self.high / 100.0, low=self.low / 100.0, close=self.close / 100.0,
            volume=self.volume, vwap=vwap, trades=self.trades, first_tick=self.first_ts, last_tick=self.last_ts,
            final=final, indicators=indicators,  # type: ignore[arg-type]
        )  # fmt: skip


@dataclass(slots=True)
class TickerState:
    """Everything :class:`TickerBars` keeps for one ticker; picklable (Bytewax recovery snapshots)."""

    ticker: str
    watermark: int = _NEVER
    #: system time (ms) at which ``watermark`` last advanced: live mode extrapolates the watermark from it
    watermark_wall: int = _NEVER
    #: every window with ``end <= frontier`` is closed (by the watermark minus grace or by the clock)
    frontier: int = _NEVER
    open_base: dict[int, _Acc] = field(default_factory=dict)
    rollups: list[_Acc | None] = field(default_factory=list)
    last_final: list[int] = field(default_factory=list)
    indicators: list[IndicatorState] = field(default_factory=list)
    #: the earliest end among open windows (base and rollups); nothing closes before the frontier reaches it
    next_due: int = _NO_WINDOW
    live_dirty: bool = False
    last_live_ms: int = _NEVER
    ticks_since_live: int = 0


class Emitted(NamedTuple):
    """The output of one :class:`TickerBars` call."""

    finals: list[Bar]
    lives: list[Bar]
    late: list[DeadLetter]
    duplicates_suppressed: int


class TickerBars:
    """Bars of one ticker across all timeframes: feed chunks with :meth:`on_chunks`, tick the clock with
    :meth:`on_time`."""

    __slots__ = ("config", "lengths", "state")

    def __init__(self, config: AggregationConfig, ticker: str, state: TickerState | None = None) -> None:
        self.config = config
        self.lengths = config.lengths
        if state is None:
            k = len(config.timeframes)
            state = TickerState(
                ticker=ticker,
                rollups=[None] * k,
                last_final=[_NEVER] * k,
                indicators=[IndicatorState(config.indicators) for _ in range(k)],
            )
        self.state = state

    def snapshot(self) -> bytes:
        """The state pickled: an immutable copy for a recovery snapshot (~30 us, 10x cheaper than deepcopy)."""
        return pickle.dumps(self.state, protocol=pickle.HIGHEST_PROTOCOL)

    @classmethod
    def restore(cls, config: AggregationConfig, snapshot: bytes) -> TickerBars:
        """The bars of a ticker as :meth:`snapshot` saved them (our own Bytewax recovery data)."""
        state = pickle.loads(snapshot)  # noqa: S301 -- written by snapshot() above, read from our recovery db
        if not isinstance(state, TickerState):
            msg = f"recovery snapshot holds a {type(state).__name__!r}, expected TickerState"
            raise TypeError(msg)
        return cls(config, state.ticker, state)

    def on_chunks(self, chunks: list[TickChunk], now_ms: int) -> Emitted:
        """Merge this ticker's chunks in arrival order, then close what is due and publish the live bar."""
        st, base, grace = self.state, self.lengths[0], self.config.grace_ms
        self._advance_by_clock(now_ms)  # the clock first: a tick past end + grace is late, timer or not
        late: list[DeadLetter] = []
        open_base = st.open_base
        for chunk in chunks:
            frontier, last_final = st.frontier, st.last_final[0]
            watermark = st.watermark
            for seg in chunk.segments:
                start = seg[0]
                if start + base <= frontier or start <= last_final:
                    late.extend(self._late(chunk, seg))
                    continue
                acc = open_base.get(start)
                if acc is None:
                    open_base[start] = _Acc(*seg[:10])
                    if start + base < st.next_due:
                        st.next_due = start + base
                else:
                    acc.add(*seg[1:10])
                if seg[9] > watermark:
                    watermark = seg[9]
            if watermark > st.watermark:
                st.watermark, st.watermark_wall = watermark, now_ms
            if watermark - grace > st.frontier:
                st.frontier = watermark - grace
            st.ticks_since_live += chunk.ticks
            st.live_dirty = True
        emitted = self.on_time(now_ms)
        if late:
            emitted.late.extend(late)
        return emitted

    def on_time(self, now_ms: int) -> Emitted:
        """Close windows the frontier has passed (advanced by the clock in live mode); maybe publish live."""
        self._advance_by_clock(now_ms)
        finals, duplicates = self._close_due()
        lives = self._live(now_ms)
        return Emitted(finals, lives, [], duplicates)

    def _advance_by_clock(self, now_ms: int) -> None:
        """Live mode: the watermark moves on with the system clock since the ticker's newest tick arrived.

        Event time and system time only meet through this extrapolation, so historic ticks (a backfill
        replayed at full speed) close on event time as in backfill mode, while a ticker that goes quiet in
        real time still has its windows closed ``grace`` after their end.
        """
        st = self.state
        if not self.config.close_on_system_time or st.watermark_wall == _NEVER:
            return
        clock_frontier = st.watermark + max(0, now_ms - st.watermark_wall) - self.config.grace_ms
        if clock_frontier > st.frontier:
            st.frontier = clock_frontier

    def next_deadline_ms(self) -> int | None:
        """System time (ms) at which :meth:`on_time` has something to do, or None in backfill mode."""
        if not self.config.close_on_system_time:
            return None
        st = self.state
        deadline = None
        if st.next_due != _NO_WINDOW and st.watermark_wall != _NEVER:
            # system time at which the extrapolated watermark reaches the earliest open window's end + grace
            deadline = st.watermark_wall + max(0, st.next_due + self.config.grace_ms - st.watermark)
        if self.config.live_enabled and st.live_dirty:
            live_at = st.last_live_ms + self.config.live_interval_ms
            deadline = live_at if deadline is None else min(deadline, live_at)
        return deadline

    def _late(self, chunk: TickChunk, seg: Segment) -> list[DeadLetter]:
        st, tf, base = self.state, self.config.timeframes[0], self.lengths[0]
        start = seg[0]
        reason = (
            f"late tick {st.ticker!r}: {tf} window [{start}, {start + base}) already closed "
            f"(watermark {st.watermark}, grace {self.config.grace_ms} ms, closed through {st.frontier})"
        )
        return [dead_letter("late", reason, *chunk.raw(i)) for i in range(seg[10], seg[11])]

    def _close_due(self) -> tuple[list[Bar], int]:
        st, lengths, frontier = self.state, self.lengths, self.state.frontier
        if st.next_due > frontier:
            return [], 0
        finals: list[Bar] = []
        duplicates = 0
        base = lengths[0]
        for start in sorted(s for s in st.open_base if s + base <= frontier):
            acc = st.open_base.pop(start)
            duplicates += self._finalize(0, acc, finals)
            for i in range(1, len(lengths)):
                tf_start = start - start % lengths[i]
                rollup = st.rollups[i]
                if rollup is not None and rollup.start != tf_start:
                    duplicates += self._finalize(i, rollup, finals)
                    rollup = None
                if rollup is None:
                    st.rollups[i] = acc.copy(tf_start)
                else:
                    rollup.merge(acc)
        for i in range(1, len(lengths)):
            rollup = st.rollups[i]
            if rollup is not None and rollup.start + lengths[i] <= frontier:
                duplicates += self._finalize(i, rollup, finals)
                st.rollups[i] = None
        ends = [start + base for start in st.open_base]
        ends.extend(r.start + length for r, length in zip(st.rollups, lengths, strict=True) if r is not None)
        st.next_due = min(ends, default=_NO_WINDOW)
        return finals, duplicates

    def _finalize(self, i: int, acc: _Acc, out: list[Bar]) -> int:
        """Append the final bar of ``acc`` unless this window already had one; return 1 if suppressed."""
        st = self.state
        if acc.start <= st.last_final[i]:
            return 1
        st.last_final[i] = acc.start
        indicators = st.indicators[i].update(acc.close)
        out.append(acc.to_bar(st.ticker, self.config.timeframes[i], self.lengths[i], True, indicators))
        return 0

    def _live(self, now_ms: int) -> list[Bar]:
        cfg, st = self.config, self.state
        if not (cfg.live_enabled and st.live_dirty):
            return []
        if not st.open_base:  # everything closed: nothing live to publish (and no live timer to keep)
            st.live_dirty = False
            return []
        due = now_ms - st.last_live_ms >= cfg.live_interval_ms
        if not due and not (cfg.live_every_ticks and st.ticks_since_live >= cfg.live_every_ticks):
            return []
        st.live_dirty, st.last_live_ms, st.ticks_since_live = False, now_ms, 0
        newest = max(st.open_base)
        lives = [st.open_base[newest].to_bar(st.ticker, cfg.timeframes[0], self.lengths[0], False)]
        for i in range(1, len(self.lengths)):
            length = self.lengths[i]
            window = newest - newest % length
            rollup = st.rollups[i]
            acc = rollup.copy(window) if rollup is not None and rollup.start == window else None
            for start in sorted(st.open_base):
                if window <= start < window + length:
                    if acc is None:
                        acc = st.open_base[start].copy(window)
                    else:
                        acc.merge(st.open_base[start])
            if acc is not None:
                lives.append(acc.to_bar(st.ticker, cfg.timeframes[i], length, False))
        return lives
