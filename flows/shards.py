"""Ticker shards: the unit of keyed state of the bars flow (many tickers per Bytewax key).

Bytewax pays about 2 us per key and activation in ``stateful_batch``; with one key per ticker that cost is
paid for every ticker in every batch and dominates at 1,000+ tickers. The flow therefore keys its state by a
*shard* -- a stable hash of the ticker modulo ``shards`` -- and one :class:`ShardBars` holds the
:class:`~flows.aggregation.TickerBars` of every ticker of its shard. The per-ticker logic is unchanged, so
bars, late ticks and exactly-once finals are the same as with one key per ticker.

The shard of a ticker must be the same in every process of a cluster (``-i/-a``) and across restarts
(recovery snapshots are stored per key), so it is ``crc32(ticker) % shards``, never Python's salted ``hash``.

A shard's recovery snapshot records, next to its tickers' states, the settings that shaped them
(:meth:`AggregationConfig.state_shape <flows.aggregation.AggregationConfig.state_shape>`: timeframes and
indicator settings) and the number of shards. Restoring it under other values raises
:class:`SnapshotMismatchError` naming each setting that differs: the states cannot continue (windows and
indicator sums of another shape; with another shard count, tickers whose state sits under another key), and
silently mixing old and new would give restored and new tickers different indicator periods. Such a change
needs a fresh recovery store. ``grace_ms``, the mode and the live-bar settings may change across a restart
(a grace or mode change re-closes windows of the replayed span under the new value: docs/flows.md).

Snapshots written before the settings were recorded (a bare ``{ticker: TickerState}``) are still accepted
when every state agrees with the current settings as far as a state records them: its number of timeframes
and its whole indicator config. Their timeframe *names* and the shard count are not recorded; a change of
only those since such a snapshot cannot be detected (reset the store when changing them in the same upgrade).
"""

from __future__ import annotations

import pickle
import zlib
from collections.abc import Iterable
from typing import cast

from common.errors import ConfigError
from contracts.bar import Bar
from flows.aggregation import (
    NOTHING,
    AggregationConfig,
    Emitted,
    TickChunk,
    TickerBars,
    TickerState,
    shape_differences,
    state_shape_differences,
)
from flows.decode import DeadLetter
from flows.logclock import LogClock

#: Default number of shards: enough to spread over the workers of a few processes, few enough that each
#: activation of a 10,000-tick batch carries many tickers.
DEFAULT_SHARDS = 64

#: first element of a snapshot ``(tag, shape, {ticker: TickerState})``; older snapshots were the bare dict
SNAPSHOT_TAG = "flows.shards.ShardBars/2"


class SnapshotMismatchError(ConfigError):
    """A recovery snapshot was written under settings that shape the state differently from the current ones."""


class ShardKeys:
    """``ticker -> shard key`` (a short string: Bytewax keys are strings), cached per name."""

    __slots__ = ("_cache", "_limit", "shards")

    def __init__(self, shards: int = DEFAULT_SHARDS, limit: int = 1_000_000) -> None:
        if shards < 1:
            msg = f"shards={shards!r} must be >= 1"
            raise ValueError(msg)
        self.shards = shards
        self._cache: dict[str, str] = {}
        self._limit = limit  # bounds memory if a producer invents endless ticker names

    def key(self, ticker: str) -> str:
        """The shard key of ``ticker``: ``"s{n}"`` with ``n = crc32(ticker) % shards`` (stable everywhere)."""
        cached = self._cache.get(ticker)
        if cached is None:
            if len(self._cache) >= self._limit:
                self._cache.clear()
            cached = self._cache[ticker] = f"s{zlib.crc32(ticker.encode()) % self.shards}"
        return cached

    def all_keys(self) -> list[str]:
        """Every shard key, ``s0`` to ``s{shards-1}``."""
        return [f"s{n}" for n in range(self.shards)]

    def grouped(self, chunks: Iterable[tuple[str, TickChunk]]) -> list[tuple[str, list[TickChunk]]]:
        """``(ticker, chunk)`` pairs as one ``(shard key, chunks)`` item per shard (arrival order kept).

        One dataflow item per shard and batch instead of one per ticker: Bytewax costs a few microseconds per
        item and operator, which at 1,000 tickers per batch was a tenth of the flow's time.
        """
        key = self.key
        groups: dict[str, list[TickChunk]] = {}
        for ticker, chunk in chunks:
            shard = key(ticker)
            same = groups.get(shard)
            if same is None:
                groups[shard] = [chunk]
            else:
                same.append(chunk)
        return list(groups.items())


class ShardBars:
    """The bars of every ticker of one shard; picklable through :meth:`snapshot` / :meth:`restore`.

    In live mode a ticker whose ticks come with a log time (:mod:`flows.logclock`) has its windows closed by
    its partition's :class:`~flows.logclock.LogClock` items, which arrive mixed with the chunks; the others
    (and live bars) by the system clock through :meth:`on_time`.
    """

    __slots__ = ("_by_log", "_log_due", "_logs", "_next", "_scanned", "config", "shards", "tickers")

    def __init__(
        self, config: AggregationConfig, tickers: dict[str, TickerBars] | None = None, shards: int | None = None
    ) -> None:
        self.config = config
        self.tickers: dict[str, TickerBars] = tickers if tickers is not None else {}
        #: the number of shards of the flow, recorded in snapshots and checked on restore (None: not known)
        self.shards = shards
        #: the earliest ticker deadline (None: none) once ``_scanned``; an early bound is harmless (on_time
        #: rescans), so on_chunks only ever lowers it
        self._next: int | None = None
        self._scanned = False
        #: tickers by the log that closes them, each log's newest time, and the earliest log time at which a
        #: ticker of it closes a window (absent: rescan when its clock next moves)
        self._by_log: dict[str, dict[str, TickerBars]] = {}
        self._logs: dict[str, int] = {}
        self._log_due: dict[str, int | None] = {}
        for ticker, bars in self.tickers.items():
            if bars.state.source is not None:
                self._by_log.setdefault(bars.state.source, {})[ticker] = bars

    def on_chunks(
        self, chunks: Iterable[TickChunk | LogClock], now_ms: int
    ) -> tuple[list[Bar], list[Bar], list[DeadLetter], int]:
        """Feed each ticker its chunks (in arrival order), then move the log clocks that came with them;
        returns ``(finals, lives, late, duplicates)``."""
        per: dict[str, list[TickChunk]] = {}
        clocks: dict[str, int] = {}
        for chunk in chunks:
            if type(chunk) is LogClock:
                if chunk[1] > clocks.get(chunk[0], chunk[1] - 1):
                    clocks[chunk[0]] = chunk[1]
                continue
            same = per.get(chunk[0])
            if same is None:
                per[chunk[0]] = [cast(TickChunk, chunk)]
            else:
                same.append(cast(TickChunk, chunk))
        finals: list[Bar] = []
        lives: list[Bar] = []
        late: list[DeadLetter] = []
        duplicates = 0
        tickers, config = self.tickers, self.config
        for ticker, own in per.items():
            bars = tickers.get(ticker)
            if bars is None:
                bars = tickers[ticker] = TickerBars(config, ticker)
            previous = bars.state.source
            emitted = bars.on_chunks(own, now_ms)
            if emitted is not NOTHING:
                duplicates += _collect(emitted, finals, lives, late)
            if config.close_on_system_time:
                self._lower_next(bars.next_deadline_ms())
                if bars.state.source is not None:
                    self._track(ticker, bars, previous)
        for source, log_ms in clocks.items():
            duplicates += self._on_log(source, log_ms, now_ms, finals, lives)
        return finals, lives, late, duplicates

    def _track(self, ticker: str, bars: TickerBars, previous: str | None) -> None:
        """Index a ticker under its log (moving it if its ticks now come from another) and lower that log's
        earliest deadline."""
        source = cast(str, bars.state.source)
        if previous != source or ticker not in self._by_log.get(source, ()):
            if previous is not None:
                self._by_log.get(previous, {}).pop(ticker, None)
            self._by_log.setdefault(source, {})[ticker] = bars
        deadline = bars.next_log_deadline()
        due = self._log_due.get(source)
        if deadline is not None and source in self._log_due and (due is None or deadline < due):
            self._log_due[source] = deadline

    def _on_log(self, source: str, log_ms: int, now_ms: int, finals: list[Bar], lives: list[Bar]) -> int:
        """The log ``source`` reached ``log_ms``: close the windows of its tickers that are due."""
        if log_ms <= self._logs.get(source, log_ms - 1):
            return 0
        self._logs[source] = log_ms
        due = self._log_due.get(source, log_ms)
        if due is None or due > log_ms:
            return 0
        duplicates = 0
        earliest: int | None = None
        for bars in self._by_log.get(source, {}).values():
            deadline = bars.next_log_deadline()
            if deadline is not None and deadline <= log_ms:
                emitted = bars.on_log(log_ms, now_ms)
                if emitted is not NOTHING:
                    duplicates += _collect(emitted, finals, lives, [])
                deadline = bars.next_log_deadline()
            if deadline is not None and (earliest is None or deadline < earliest):
                earliest = deadline
        self._log_due[source] = earliest
        return duplicates

    def _lower_next(self, deadline: int | None) -> None:
        if deadline is not None and self._scanned and (self._next is None or deadline < self._next):
            self._next = deadline

    def on_time(self, now_ms: int) -> tuple[list[Bar], list[Bar], list[DeadLetter], int]:
        """Run the clock for the tickers with something due by ``now_ms`` (live mode timers)."""
        finals: list[Bar] = []
        lives: list[Bar] = []
        late: list[DeadLetter] = []
        duplicates = 0
        earliest: int | None = None
        for bars in self.tickers.values():
            deadline = bars.next_deadline_ms()
            if deadline is not None and deadline <= now_ms:
                duplicates += _collect(bars.on_time(now_ms), finals, lives, late)
                deadline = bars.next_deadline_ms()
            if deadline is not None and (earliest is None or deadline < earliest):
                earliest = deadline
        self._next, self._scanned = earliest, True
        return finals, lives, late, duplicates

    def next_deadline_ms(self) -> int | None:
        """The earliest system time (ms) at which a ticker of this shard has something to do (None: never).

        Cached from the last :meth:`on_time` scan and lowered by :meth:`on_chunks`, so it may be early (the
        next :meth:`on_time` then finds nothing due and rescans), never late.
        """
        if not self.config.close_on_system_time:
            return None
        if not self._scanned:
            deadlines = [d for d in (bars.next_deadline_ms() for bars in self.tickers.values()) if d is not None]
            self._next, self._scanned = min(deadlines, default=None), True
        return self._next

    def snapshot(self) -> bytes:
        """The shard's ticker states and the settings that shaped them, pickled (an immutable copy for a
        Bytewax recovery snapshot)."""
        states = {ticker: bars.state for ticker, bars in self.tickers.items()}
        return pickle.dumps((SNAPSHOT_TAG, _shape(self.config, self.shards), states), protocol=pickle.HIGHEST_PROTOCOL)

    @classmethod
    def restore(
        cls, config: AggregationConfig, snapshot: bytes, now_ms: int | None = None, shards: int | None = None
    ) -> ShardBars:
        """The shard as :meth:`snapshot` saved it (our own recovery data), resumed at wall time ``now_ms``.

        Raises :class:`SnapshotMismatchError` if the snapshot was written with other timeframes, indicator
        settings or (both known) shard count than ``config`` and ``shards`` (see the module docstring).

        Live mode extrapolates a ticker's watermark with the clock since its newest tick arrived; the time the
        process was down is not quiet time of the ticker (the ticks since the snapshot, and those produced
        meanwhile, are still to be read), so with ``now_ms`` the extrapolation restarts at the restart.
        """
        data = pickle.loads(snapshot)  # noqa: S301 -- written by snapshot() above, read from our recovery db
        if isinstance(data, tuple) and len(data) == 3 and data[0] == SNAPSHOT_TAG and isinstance(data[1], dict):
            _, saved, states = data
        elif isinstance(data, dict):  # written before the shape was recorded: checked state by state below
            saved, states = None, data
        else:
            msg = f"recovery snapshot holds a {type(data).__name__!r}, expected {SNAPSHOT_TAG!r} shard state"
            raise TypeError(msg)
        if not isinstance(states, dict) or not all(isinstance(s, TickerState) for s in states.values()):
            msg = f"recovery snapshot holds a {type(states).__name__!r}, expected a dict of TickerState per ticker"
            raise TypeError(msg)
        differences = _shape_differences(saved, _shape(config, shards)) if saved is not None else {}
        if saved is None:
            for state in states.values():
                differences = state_shape_differences(config, state)
                if differences:
                    break
        if differences:
            raise SnapshotMismatchError(_mismatch_message(differences))
        if now_ms is not None:
            for state in states.values():
                if state.source is None and state.watermark_log > 0:  # system-clock tickers only
                    state.watermark_log = max(state.watermark_log, now_ms)
        bars = {ticker: TickerBars(config, ticker, state) for ticker, state in states.items()}
        return cls(config, bars, shards)


def _shape(config: AggregationConfig, shards: int | None) -> dict[str, object]:
    shape = config.state_shape()
    if shards is not None:
        shape["shards"] = shards
    return shape


def _shape_differences(saved: dict[str, object], current: dict[str, object]) -> dict[str, tuple[object, object]]:
    if "shards" not in saved or "shards" not in current:
        # one side does not know its shard count (a unit test, a tool): nothing to compare
        saved, current = dict(saved), dict(current)
        saved.pop("shards", None)
        current.pop("shards", None)
    return shape_differences(saved, current)


def _mismatch_message(differences: dict[str, tuple[object, object]]) -> str:
    named = "; ".join(
        f"{_setting_name(name)} was {old!r} when the snapshot was written, now {new!r}"
        for name, (old, new) in differences.items()
    )
    return (
        f"recovery snapshot of the bars state does not match the settings: {named}. These settings shape the "
        "per-ticker state (open windows, indicator sums), which cannot continue under other values: reset the "
        "bars flow's recovery store (start with a new empty -r directory, `python -m bytewax.recovery DIR N`; "
        "`make clean` deletes all local data) or restore the previous settings"
    )


def _setting_name(name: str) -> str:
    if name == "shards":
        return "the shard count (build_flow(shards=...))"
    return f"FLOW_{name.upper()}"


def _collect(emitted: Emitted, finals: list[Bar], lives: list[Bar], late: list[DeadLetter]) -> int:
    if emitted.finals:
        finals.extend(emitted.finals)
    if emitted.lives:
        lives.extend(emitted.lives)
    if emitted.late:
        late.extend(emitted.late)
    return emitted.duplicates_suppressed
