"""Event-time OHLCV bars per ticker: the per-ticker bar state machine.

Pure logic, no Bytewax import (``flows.bars`` wires it). :func:`flows.partial.partial_bars` (re-exported here)
turns one decoded batch into per-ticker :class:`TickChunk` s of partial 1m bars; :class:`TickerBars` merges a
ticker's chunks into its open 1m windows, closes windows as the watermark (or, in live mode, the system clock)
passes ``end + grace``, rolls closed 1m bars up into the higher timeframes, computes indicators on every final
bar and throttles live (partial) bars. :class:`FlowBar` is the contract's ``Bar`` built without re-checking
invariants that hold by construction here.

Semantics (see ``docs/flows.md``): windows are half-open ``[start, end)`` aligned to the UTC epoch; prices are
whole cents inside (OHLC exact); ``vwap = sum(cents * volume) / sum(volume) / 100`` or the close when the bar
has no volume; the watermark of a ticker is the greatest event time it has accepted; a tick whose base window
satisfies ``end + grace <= watermark`` (or that the system clock already closed) is *late*: it becomes a
dead letter and never changes a final bar; empty windows produce no bar; a final bar is emitted at most once
per ``(ticker, timeframe, start)`` -- each timeframe remembers the start of its last final bar.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import NamedTuple

from msgspec import UNSET

from common.errors import ConfigError
from contracts.bar import TIMEFRAMES, Bar
from contracts.tick import MAX_INT64
from flows.accumulator import Acc, FlowBar, merged_bar
from flows.decode import DeadLetter, dead_letter
from flows.indicators import DEFAULT_INDICATORS, IndicatorConfig, IndicatorState
from flows.partial import BatchResult, Segment, TickChunk, late_reason, partial_bars

__all__ = [
    "NOTHING",
    "AggregationConfig",
    "BatchResult",
    "Emitted",
    "FlowBar",
    "Segment",
    "TickChunk",
    "TickerBars",
    "TickerState",
    "partial_bars",
    "shape_differences",
    "state_shape_differences",
]

#: recovery snapshots written before the accumulator moved to flows.accumulator name it ``flows.aggregation._Acc``
_Acc = Acc

_NEVER = -(2**62)
_NO_WINDOW = 2**62


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

    def state_shape(self) -> dict[str, object]:
        """The settings that shape the per-ticker state, as plain values by setting name (for snapshots).

        The timeframes fix the windows (their number, lengths and the base) and the indicator settings the ring
        buffers and sums of every :class:`IndicatorState`, which also keeps its own config: a state built with
        other values cannot continue under these. ``grace_ms``, the mode and the live-bar throttle only steer
        when windows close and live bars go out, so they may change across a restart and are not included.
        """
        return {"timeframes": self.timeframes, **_indicator_shape(self.indicators)}


def _indicator_shape(config: IndicatorConfig) -> dict[str, object]:
    return {f.name: getattr(config, f.name) for f in fields(config)}


def shape_differences(saved: dict[str, object], current: dict[str, object]) -> dict[str, tuple[object, object]]:
    """``{setting: (saved, current)}`` for each setting whose value differs (absent on one side: "(not recorded)")."""
    differences: dict[str, tuple[object, object]] = {}
    for name in [*current, *(n for n in saved if n not in current)]:
        old, new = saved.get(name, "(not recorded)"), current.get(name, "(not recorded)")
        if old != new:
            differences[name] = (old, new)
    return differences


@dataclass(slots=True)
class TickerState:
    """Everything :class:`TickerBars` keeps for one ticker; picklable (Bytewax recovery snapshots)."""

    ticker: str
    watermark: int = _NEVER
    #: log time (ms) at which ``watermark`` last advanced: live mode extrapolates the watermark from it
    #: (:mod:`flows.logclock`; the system time for a ticker whose values come without a log)
    watermark_log: int = _NEVER
    #: every window with ``end <= frontier`` is closed (by the watermark minus grace or by the clock)
    frontier: int = _NEVER
    open_base: dict[int, Acc] = field(default_factory=dict)
    rollups: list[Acc | None] = field(default_factory=list)
    last_final: list[int] = field(default_factory=list)
    indicators: list[IndicatorState] = field(default_factory=list)
    #: the earliest end among open windows (base and rollups); nothing closes before the frontier reaches it
    next_due: int = _NO_WINDOW
    live_dirty: bool = False
    last_live_ms: int = _NEVER
    ticks_since_live: int = 0
    #: the log whose time closes this ticker's windows (a Kafka partition's key); None: the system clock
    source: str | None = None
    #: processing lag (ms) of the newest tick of the last merge: clock at the merge minus its event time; -1 none
    lag_ms: int = -1

    def __setstate__(self, state: tuple[None, dict[str, object]]) -> None:
        """Restore a pickled state, also one written before a field existed or was renamed (defaults)."""
        _, slots = state
        renamed = {"watermark_wall": "watermark_log"}
        for f in fields(self):
            default = f.default_factory() if callable(f.default_factory) else f.default
            object.__setattr__(self, f.name, default)
        for name, value in slots.items():
            object.__setattr__(self, renamed.get(name, name), value)


def state_shape_differences(config: AggregationConfig, state: TickerState) -> dict[str, tuple[object, object]]:
    """Where ``state`` was built with other settings than ``config``: ``{setting: (state's, config's)}``.

    A state records only the *number* of its timeframes (not their names) and, in each indicator state, the
    whole indicator config; that is what this compares (snapshots from before the shape was recorded).
    """
    differences: dict[str, tuple[object, object]] = {}
    count = len(state.last_final)
    if count != len(config.timeframes) or len(state.indicators) != count:
        differences["timeframes"] = (f"{count} timeframe(s)", config.timeframes)
    wanted = config.indicators
    for indicators in state.indicators:
        if indicators.config != wanted:
            differences.update(shape_differences(_indicator_shape(indicators.config), _indicator_shape(wanted)))
            break
    return differences


class Emitted(NamedTuple):
    """The output of one :class:`TickerBars` call (read-only: :data:`NOTHING` is shared)."""

    finals: Sequence[Bar]
    lives: Sequence[Bar]
    late: Sequence[DeadLetter]
    duplicates_suppressed: int


#: what most calls emit (no window closed, no live bar due, nothing late): one shared instance, so callers can
#: skip it by identity
NOTHING = Emitted((), (), (), 0)


class TickerBars:
    """Bars of one ticker across all timeframes: feed chunks with :meth:`on_chunks`, tick the clock with
    :meth:`on_time`."""

    __slots__ = ("config", "lengths", "state", "volume_cap")

    def __init__(self, config: AggregationConfig, ticker: str, state: TickerState | None = None) -> None:
        self.config = config
        self.lengths = config.lengths
        #: largest volume of a base bar: the longest timeframe's bar sums at most ``longest / base`` of them, and
        #: every bar's volume must fit the 64-bit column of ``market_bars`` (and 64-bit integers of consumers)
        self.volume_cap = MAX_INT64 // (self.lengths[-1] // self.lengths[0])
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
        """The bars of a ticker as :meth:`snapshot` saved them (our own Bytewax recovery data).

        A state built with other timeframes or indicator settings than ``config`` raises ``ConfigError``.
        """
        state = pickle.loads(snapshot)  # noqa: S301 -- written by snapshot() above, read from our recovery db
        if not isinstance(state, TickerState):
            msg = f"recovery snapshot holds a {type(state).__name__!r}, expected TickerState"
            raise TypeError(msg)
        differences = state_shape_differences(config, state)
        if differences:
            msg = f"state of {state.ticker!r} was built with other settings: {differences!r}"
            raise ConfigError(msg)
        return cls(config, state.ticker, state)

    def on_chunks(self, chunks: list[TickChunk], now_ms: int) -> Emitted:
        """Merge this ticker's chunks in arrival order, then close what is due and publish the live bar."""
        # the hot path of the flow (once per ticker and batch): locals instead of attributes, Acc.add inlined
        st, base, config = self.state, self.lengths[0], self.config
        grace, cap = config.grace_ms, self.volume_cap
        if config.close_on_system_time and st.source is None:
            self._advance_by_clock(now_ms)  # the clock first: a tick past end + grace is late, timer or not
        late: list[DeadLetter] = []
        open_base = st.open_base
        last_final = st.last_final[0]
        next_due = st.next_due
        ticks = 0
        newest = _NEVER  # the newest event time merged by this call (its processing lag goes on live bars)
        for chunk in chunks:
            frontier, watermark = st.frontier, st.watermark
            clock = chunk[5]
            first_reach = _NEVER
            # the segments are the rule's result unless a window closes part-way through the chunk (live mode) or
            # the volume limit rejects one of its ticks (a rejected tick raises no watermark, so the ticks after it
            # would be judged differently): then the chunk is redone one tick at a time (rare)
            by_tick = False
            if clock is not None:
                if clock[0] is not None:
                    st.source = clock[0]
                # the frontier at the chunk's first tick; the merge below is exact when that tick raises the
                # watermark and is not late, no window is closed by it, and none part-way through (``smooth``,
                # flows.partial._chunk_clocks); otherwise the chunk is redone one tick at a time (rare)
                first_ts = clock[3]
                if st.watermark_log != _NEVER:
                    first_reach = watermark + max(0, clock[4] - st.watermark_log) - grace
                by_tick = (
                    not clock[6]
                    or first_ts <= watermark
                    or first_ts - first_ts % base + base <= frontier
                    or (first_reach > frontier and chunk[1][0][0] + base <= first_reach)
                )
            segments = chunk[1]
            # the volume limit: a chunk of several segments is checked first, a lone one as it is merged
            if not by_tick and (len(segments) == 1 or self._fits(segments, frontier, last_final)):
                for seg in segments:
                    start = seg[0]
                    if start + base <= frontier or start <= last_final:
                        late.extend(self._late(chunk, seg))
                        continue
                    acc = open_base.get(start)
                    if (seg[5] if acc is None else acc.volume + seg[5]) > cap:
                        break  # a lone segment (see _fits): nothing of the chunk merged yet
                    if acc is None:
                        open_base[start] = Acc(*seg[:10])
                        if start + base < next_due:
                            next_due = start + base
                    else:  # Acc.add: earliest event time opens, latest closes (ties: arrival order)
                        if seg[8] < acc.first_ts:
                            acc.open, acc.first_ts = seg[1], seg[8]
                        if seg[9] >= acc.last_ts:
                            acc.close, acc.last_ts = seg[4], seg[9]
                        if seg[2] > acc.high:
                            acc.high = seg[2]
                        if seg[3] < acc.low:
                            acc.low = seg[3]
                        acc.volume += seg[5]
                        acc.pv += seg[6]
                        acc.trades += seg[7]
                    if seg[9] > newest:
                        newest = seg[9]
                        if newest > watermark:
                            watermark = newest
                else:  # no break: every segment merged or late as a whole
                    if clock is None:
                        if watermark > st.watermark:
                            st.watermark, st.watermark_log = watermark, now_ms
                        if watermark - grace > st.frontier:
                            st.frontier = watermark - grace
                    else:
                        if watermark > st.watermark:
                            st.watermark, st.watermark_log = watermark, clock[2]
                        # the frontier is the greatest reached at any tick of the chunk (the first, the later ones, and
                        # the log at its last tick extrapolated from the new watermark)
                        reached = max(first_reach, clock[5] - grace, self._extrapolated(clock[1]))
                        if reached > st.frontier:
                            st.frontier = reached
                    held = chunk[7]
                    if held is not None:  # the ticks late against earlier ones of the batch: late by the rule too
                        late.extend(held[1])
                    ticks += len(chunk[2])
                    continue
            st.next_due = next_due
            late.extend(self._tick_by_tick(chunk, now_ms))
            next_due = st.next_due
            ticks += len(chunk[2])
            newest = max(newest, *(seg[9] for seg in segments))  # processed now, late ones included
        st.next_due = next_due
        st.ticks_since_live += ticks
        st.live_dirty = True
        if newest != _NEVER:
            st.lag_ms = max(0, now_ms - newest)
        # no second clock advance: a chunk either moved the watermark (its wall time is now, so the clock adds
        # nothing beyond watermark - grace) or left it, and the clock was applied above
        finals, duplicates = self._close_due()
        lives = self._live(now_ms)
        if not (finals or lives or late or duplicates):
            return NOTHING
        return Emitted(finals, lives, late, duplicates)

    def _fits(self, segments: list[Segment], frontier: int, last_final: int) -> bool:
        """Whether every segment the merge of :meth:`on_chunks` does not reject as late fits its window under
        the volume limit (then no tick of them is rejected for volume, taken one at a time either)."""
        open_base, base, cap = self.state.open_base, self.lengths[0], self.volume_cap
        for seg in segments:
            start = seg[0]
            if start + base <= frontier or start <= last_final:
                continue
            acc = open_base.get(start)
            if (seg[5] if acc is None else acc.volume + seg[5]) > cap:
                return False
        return True

    def _tick_by_tick(self, chunk: TickChunk, now_ms: int) -> list[DeadLetter]:
        """Merge a chunk one tick at a time in arrival order, its held ticks included (rare): a window of the
        chunk closes part-way through it (each tick is judged at its own log time), or the volume limit rejects a
        tick of it (a rejected tick raises no watermark). The rule itself; the segment loop of :meth:`on_chunks`
        gives the same result whenever it is used."""
        st, base, grace, cap = self.state, self.lengths[0], self.config.grace_ms, self.volume_cap
        columns, clock, held = chunk[6], chunk[5], chunk[7]
        rows = sorted(chunk[2] + held[0]) if held is not None else sorted(chunk[2])  # batch rows: arrival order
        times = columns.timestamps[rows].tolist()
        cents_l = columns.cents[rows].tolist()
        volumes = columns.volumes[rows].tolist()
        # the log time of each tick (a chunk without a clock: its ticks have no log, the wall clock is ``now_ms``)
        logs = columns.log_times[rows].tolist() if clock is not None and columns.log_times is not None else None
        late: list[DeadLetter] = []
        for k, row in enumerate(rows):
            ts, cents, volume = times[k], cents_l[k], volumes[k]
            if logs is not None:
                log = logs[k]
                reached = self._extrapolated(log)
                if reached > st.frontier:
                    st.frontier = reached
            else:
                log = now_ms
            start = ts - ts % base
            if start + base <= st.frontier or start <= st.last_final[0]:
                late.append(dead_letter("late", self._late_reason(start), *chunk.value(row)))
                continue
            acc = st.open_base.get(start)
            before = 0 if acc is None else acc.volume
            if before + volume > cap:
                late.append(dead_letter("malformed", self._overflow_reason(start, before, volume), *chunk.value(row)))
                continue
            if acc is None:
                st.open_base[start] = Acc(start, cents, cents, cents, cents, volume, cents * volume, 1, ts, ts)
                st.next_due = min(st.next_due, start + base)
            else:
                acc.add(cents, cents, cents, cents, volume, cents * volume, 1, ts, ts)
            if ts > st.watermark:
                st.watermark, st.watermark_log = ts, log
                st.frontier = max(st.frontier, ts - grace)
        return late

    def on_time(self, now_ms: int) -> Emitted:
        """Close windows the frontier has passed (advanced by the clock in live mode unless the ticker's values
        come with a log time); maybe publish live."""
        self._advance_by_clock(now_ms)
        finals, duplicates = self._close_due()
        lives = self._live(now_ms)
        return Emitted(finals, lives, [], duplicates)

    def on_log(self, log_ms: int, now_ms: int) -> Emitted:
        """The ticker's log has reached ``log_ms`` (a :class:`~flows.logclock.LogClock`): close what is due."""
        st = self.state
        reached = self._extrapolated(log_ms)
        if reached > st.frontier:
            st.frontier = reached
        finals, duplicates = self._close_due()
        if not (finals or duplicates):
            return NOTHING
        return Emitted(finals, self._live(now_ms), [], duplicates)

    def _extrapolated(self, log_ms: int) -> int:
        """The frontier once the ticker's log has reached ``log_ms``: its watermark moved on by the log time
        passed since the watermark last rose, minus grace (``_NEVER`` before its first tick)."""
        st = self.state
        if st.watermark_log == _NEVER:
            return _NEVER
        return st.watermark + max(0, log_ms - st.watermark_log) - self.config.grace_ms

    def _advance_by_clock(self, now_ms: int) -> None:
        """Live mode without a log: the watermark moves on with the system clock since the ticker's newest tick
        arrived.

        Event time and system time only meet through this extrapolation, so historic ticks (a backfill
        replayed at full speed) close on event time as in backfill mode, while a ticker that goes quiet in
        real time still has its windows closed ``grace`` after their end.
        """
        st = self.state
        if not self.config.close_on_system_time or st.watermark_log == _NEVER or st.source is not None:
            return
        clock_frontier = st.watermark + max(0, now_ms - st.watermark_log) - self.config.grace_ms
        if clock_frontier > st.frontier:
            st.frontier = clock_frontier

    def next_deadline_ms(self) -> int | None:
        """System time (ms) at which :meth:`on_time` has something to do, or None (backfill mode, or nothing
        but log-closed windows: :meth:`next_log_deadline`)."""
        if not self.config.close_on_system_time:
            return None
        st = self.state
        deadline = None
        if st.source is None and st.next_due != _NO_WINDOW and st.watermark_log != _NEVER:
            # system time at which the extrapolated watermark reaches the earliest open window's end + grace
            deadline = st.watermark_log + max(0, st.next_due + self.config.grace_ms - st.watermark)
        if self.config.live_enabled and st.live_dirty:
            live_at = st.last_live_ms + self.config.live_interval_ms
            deadline = live_at if deadline is None else min(deadline, live_at)
        return deadline

    def next_log_deadline(self) -> int | None:
        """Log time at which :meth:`on_log` closes a window (None: nothing open, or no log)."""
        st = self.state
        if st.source is None or st.next_due == _NO_WINDOW or st.watermark_log == _NEVER:
            return None
        return st.watermark_log + max(0, st.next_due + self.config.grace_ms - st.watermark)

    def _late(self, chunk: TickChunk, seg: Segment) -> list[DeadLetter]:
        """Dead letters (late) for the ticks of ``seg``: its window is closed or already has a final bar."""
        reason = self._late_reason(seg[0])
        return [dead_letter("late", reason, *chunk.raw(i)) for i in range(seg[10], seg[11])]

    def _late_reason(self, start: int) -> str:
        st = self.state
        timeframe, base, grace = self.config.timeframes[0], self.lengths[0], self.config.grace_ms
        return late_reason(st.ticker, timeframe, start, base, st.watermark, grace, st.frontier)

    def _overflow_reason(self, start: int, before: int, volume: int) -> str:
        """Why a tick of ``volume`` is a dead letter (malformed): its window, holding ``before``, would pass the cap."""
        return (
            f"volume overflow {self.state.ticker!r}: {self.config.timeframes[0]} window [{start}, "
            f"{start + self.lengths[0]}) holds volume {before} and the tick adds {volume}; a bar's volume must stay "
            f"<= {self.volume_cap} so that its {self.config.timeframes[-1]} bar fits a signed 64-bit integer"
        )

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

    def _finalize(self, i: int, acc: Acc, out: list[Bar]) -> int:
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
        open_base, lengths, timeframes, ticker = st.open_base, self.lengths, cfg.timeframes, st.ticker
        starts = sorted(open_base)  # usually one or two open 1m windows
        newest = starts[-1]
        lag = st.lag_ms if st.lag_ms >= 0 else UNSET
        lives: list[Bar] = [open_base[newest].to_bar(ticker, timeframes[0], lengths[0], False, None, lag)]
        for i in range(1, len(lengths)):
            length = lengths[i]
            window = newest - newest % length
            # every open 1m window from `window` on lies inside [window, window + length): newest is the last
            parts = [open_base[start] for start in starts if start >= window]
            rollup = st.rollups[i]
            if rollup is not None and rollup.start == window:  # closed 1m bars of this window come first
                parts.insert(0, rollup)
            lives.append(merged_bar(parts, ticker, timeframes[i], window, length, lag))
        return lives
