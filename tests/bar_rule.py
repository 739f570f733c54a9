"""The bars flow's rule taken one tick at a time: an oracle for the tests that cut records into batches.

A partition's records (:class:`Record`: a tick read at a log time, or an idle step of the source's clock),
:func:`to_batches` to cut them as the Kafka source emits them, and :func:`oracle`: per ticker in arrival order, a
tick is late when its 1m window ends at or before the ticker's frontier (watermark - grace; in live mode the
greatest watermark + log time since it rose - grace, taken at the tick's own log time), else a volume dead letter
when its window's volume plus its own would pass the 1m limit; only accepted ticks add to a window and raise the
watermark. Pure: no Bytewax, no network (import as ``from tests.bar_rule import ...``).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, NamedTuple

import numpy as np

from contracts.bar import TIMEFRAMES, Bar
from contracts.tick import MAX_INT64
from flows.decode import RawBatch
from tests.ticks import tick_bytes

MIN = 60_000
GRACE = 2_000
TOPIC = "market-ticks"
#: the largest volume of a 1m bar with the default timeframes (1m up to 1d): 1,440 of them fit an int64
CAP = MAX_INT64 // (TIMEFRAMES["1d"] // MIN)

#: 1m windows as ``(ticker, start) -> (open, high, low, close, volume, trades)``, prices in cents
Windows = dict[tuple[str, int], tuple[int, int, int, int, int, int]]


class Record(NamedTuple):
    """A record of the partition: a tick (``raw``) read at log time ``stamp``, or (``raw`` None) an idle step."""

    ticker: str
    seq: int
    ts: int
    stamp: int
    cents: int
    volume: int
    raw: bytes | None


def record(ticker: str, seq: int, ts: int, stamp: int, cents: int = 10_000, volume: int = 1) -> Record:
    """A tick of ``ticker`` at event time ``ts`` read at log time ``stamp``."""
    raw = tick_bytes(ticker, seq, ts, cents / 100, volume=volume, bid_size=1, ask_size=1)
    return Record(ticker, seq, ts, stamp, cents, volume, raw)


def idle(stamp: int) -> Record:
    """The source's idle clock moved to ``stamp`` (no record)."""
    return Record("", 0, 0, stamp, 0, 0, None)


class Outcome(NamedTuple):
    """What the rule makes of the records."""

    #: the 1m windows closed by the end
    bars: Windows
    #: ``(kind, raw)`` of every dead letter, sorted
    dead: list[tuple[str, bytes]]
    #: what ``latest_price:{ticker}`` ends up holding: ``ticker -> (timestamp, seq, price)``
    latest: dict[str, tuple[int, int, float]]

    def late(self) -> set[bytes]:
        """The values of the ticks dead-lettered as late."""
        return {raw for kind, raw in self.dead if kind == "late"}


def oracle(records: list[Record], live: bool, grace: int = GRACE, cap: int = CAP) -> Outcome:
    """The rule one tick at a time (module docstring); ``live``: windows close on the log as well."""
    never = -(2**62)
    log = -1
    state: dict[str, list[int]] = {}  # ticker -> [watermark, log when it rose, frontier]
    windows: dict[tuple[str, int], list[tuple[int, int, int]]] = defaultdict(list)
    held: dict[tuple[str, int], int] = defaultdict(int)
    dead: list[tuple[str, bytes]] = []
    newest: dict[str, Record] = {}
    for r in records:
        log = max(log, r.stamp)
        if r.raw is None:
            continue
        best = newest.get(r.ticker)
        if best is None or (r.ts, r.seq) > (best.ts, best.seq):
            newest[r.ticker] = r
        w, lw, f = state.setdefault(r.ticker, [never, never, never])
        if live and lw != never:
            f = max(f, w + max(0, log - lw) - grace)
        start = r.ts - r.ts % MIN
        if start + MIN <= f:
            dead.append(("late", r.raw))
        elif held[r.ticker, start] + r.volume > cap:
            dead.append(("malformed", r.raw))
        else:
            held[r.ticker, start] += r.volume
            windows[r.ticker, start].append((r.ts, r.cents, r.volume))
            if r.ts > w:
                w, lw = r.ts, log
                f = max(f, w - grace)
        state[r.ticker] = [w, lw, f]
    bars = {}
    for (ticker, start), ticks in windows.items():
        w, lw, f = state[ticker]
        frontier = max(f, w + max(0, log - lw) - grace) if live else f
        if start + MIN <= frontier:
            by_time = sorted(ticks, key=lambda t: t[0])  # stable: ties keep arrival order
            cents = [c for _, c, _ in ticks]
            bars[ticker, start] = (
                by_time[0][1], max(cents), min(cents), by_time[-1][1], sum(v for *_, v in ticks), len(ticks)
            )  # fmt: skip
    latest = {name: (r.ts, r.seq, r.cents / 100) for name, r in newest.items()}
    return Outcome(bars, sorted(dead), latest)


def to_batches(records: list[Record], cuts: list[int], live: bool = True) -> list[RawBatch]:
    """The records as the source emits them, cut at ``cuts`` and around idle steps; live mode: with log times
    (the running maximum of the record timestamps), idle steps as empty batches carrying only the log time."""
    logs = np.maximum.accumulate([r.stamp for r in records]).tolist()
    idle_at = [i for i, r in enumerate(records) if r.raw is None]
    bounds = sorted({*cuts, len(records), *idle_at, *(i + 1 for i in idle_at)})
    batches: list[RawBatch] = []
    start = 0
    for end in bounds:
        if end <= start:
            continue
        part = records[start:end]
        if part[0].raw is None:
            if live:
                batches.append(RawBatch(TOPIC, 0, [], [], None, logs[end - 1]))
        else:
            values = [r.raw for r in part if r.raw is not None]
            offsets = list(range(start, end))
            if live:
                batches.append(RawBatch(TOPIC, 0, offsets, values, logs[start:end], logs[end - 1]))
            else:
                batches.append(RawBatch(TOPIC, 0, offsets, values))
        start = end
    return batches


def one_minute(finals: list[Bar]) -> Windows:
    """The final 1m bars as the oracle's windows (each at most once)."""
    out: Windows = {}
    for b in finals:
        if b.timeframe == "1m":
            cents = [round(p * 100) for p in (b.open, b.high, b.low, b.close)]
            assert (b.ticker, b.start) not in out, "a final bar twice"
            out[b.ticker, b.start] = (cents[0], cents[1], cents[2], cents[3], b.volume, b.trades)
    return out


def content(finals: list[Bar]) -> list[tuple[Any, ...]]:
    """Every final bar's identity and values, sorted: equal lists mean equal outputs."""
    return sorted((b.ticker, b.timeframe, b.start, b.open, b.high, b.low, b.close, b.volume, b.trades) for b in finals)
