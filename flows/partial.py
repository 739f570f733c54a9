"""Per-batch pre-aggregation with NumPy: one decoded batch (all tickers mixed) into per-ticker partial 1m bars.

:func:`partial_bars` groups a :class:`~flows.decode.DecodedBatch` by ticker and base (1m) window and returns,
per ticker, a :class:`TickChunk`: the partial base bars of that ticker in this batch. It also finds the ticks
that are late relative to earlier ticks *of the same batch* (their dead letters travel with the chunk: whether
they stand depends on the ticker's state, see :class:`TickChunk`) and returns each ticker's newest tick. Pure
logic, no Bytewax import; :mod:`flows.aggregation` merges the chunks into each ticker's open windows.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import repeat
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from contracts.bar import TIMEFRAMES
from flows.decode import DeadLetter, DecodedBatch, Origin, WireTick, dead_letter

_INT64_SAFE = 2**62
#: timeframe name by window length (the base timeframe's name in late-tick reasons)
_TIMEFRAME_OF = {length: name for name, length in TIMEFRAMES.items()}
_UINT16_KEYS = 2**16

#: A partial base bar of one ticker in one batch:
#: (start, open, high, low, close, volume, cents*volume, trades, first_ts, last_ts, raw_lo, raw_hi);
#: prices in cents, times in epoch ms; ``chunk.raw(i)`` for ``raw_lo <= i < raw_hi`` are its ticks' values.
Segment = tuple[int, int, int, int, int, int, int, int, int, int, int, int]


class Columns(NamedTuple):
    """A batch's columns a chunk may need again, by row: event times, cents, volumes, log times (live mode)."""

    timestamps: npt.NDArray[np.int64]
    cents: npt.NDArray[np.int64]
    volumes: npt.NDArray[np.int64]
    log_times: npt.NDArray[np.int64] | None

    def take(self, rows: list[int]) -> Columns:
        logs = self.log_times[rows] if self.log_times is not None else None
        return Columns(self.timestamps[rows], self.cents[rows], self.volumes[rows], logs)


#: live mode, per chunk (:mod:`flows.logclock`): ``(log key or None, log time at its last tick, log time at the
#: tick where its event time last rose, event time of its first tick, log time of its first tick, reach, smooth)``.
#: ``reach`` is the greatest ``watermark + log time since the watermark rose`` over its ticks after the first,
#: taking the watermark as the batch's own (:data:`NO_REACH` for a single tick); ``smooth`` is True when no such
#: tick's window can have been closed by the log before the tick was read (see :func:`_chunk_clocks`).
ChunkClock = tuple[str | None, int, int, int, int, int, bool]
#: ``reach`` of a chunk of one tick
NO_REACH = -(2**62)

#: the ticks of a chunk late against earlier ticks of its batch: their batch rows and their dead letters
Held = tuple[list[int], list[DeadLetter]]

_ChunkFields = tuple[
    str,
    list[Segment],
    list[int],
    list[bytes],
    Sequence[Origin | None] | None,
    ChunkClock | None,
    Columns,
    Held | None,
]


class TickChunk(_ChunkFields):
    """The ticks of one ticker in one batch, pre-aggregated into base-timeframe segments (ascending start).

    A tuple ``(ticker, segments, rows, raws, origins, clock, columns, held)`` so a whole batch of chunks is built
    by C-level ``map``/``zip``. The original values are only needed when a tick turns out late or too big, so a
    chunk refers to the batch's value list by row numbers instead of copying; pickling (an exchange between
    workers) materialises just this chunk's own values. In live mode ``clock`` summarises the chunk's log times.

    ``held`` (None: none) are the ticks late against an earlier tick of the batch, left out of the segments with
    their dead letters. Those letters stand when the shard merges the segments as they are (every tick of them
    accepted, the rule's result then); when it cannot -- a tick the volume limit rejects, which must not raise
    the watermark, or a window the log closes part-way through -- it redoes the chunk one tick at a time from
    ``columns``, the held ticks included, and judges every tick itself.
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
        return self.value(self[2][i])

    def value(self, row: int) -> tuple[bytes, Origin | None]:
        """The original value of the tick in batch row ``row`` (a segment's or a held one) and where it came from."""
        origins = self[4]
        return self[3][row], origins[row] if origins is not None else None

    @property
    def clock(self) -> ChunkClock | None:
        return self[5]

    @property
    def held(self) -> Held | None:
        return self[7]

    def __reduce__(self) -> tuple[type[TickChunk], tuple[_ChunkFields]]:
        ticker, segments, rows, raws, origins, clock, columns, held = self
        # renumbered 0.. in arrival order, so row order still tells arrival order
        arrival = sorted(rows + held[0]) if held is not None else sorted(rows)
        position = {row: i for i, row in enumerate(arrival)}
        own_raws = [raws[r] for r in arrival]
        own_origins = [origins[r] for r in arrival] if origins is not None else None
        own_rows = [position[r] for r in rows]
        own_held = ([position[r] for r in held[0]], held[1]) if held is not None else None
        own = (ticker, segments, own_rows, own_raws, own_origins, clock, columns.take(arrival), own_held)
        return TickChunk, (own,)


class BatchResult(NamedTuple):
    """What :func:`partial_bars` makes of one decoded batch."""

    #: per ticker its chunk; a tick late against an earlier tick of its batch is held in it
    #: (:attr:`TickChunk.held`) until the ticker's state decides
    chunks: list[tuple[str, TickChunk]]
    #: the newest tick of each ticker by ``(timestamp, seq)``, the order of the Redis compare-and-set (ties:
    #: the first to arrive, which that compare-and-set keeps too)
    latest: list[WireTick]
    #: every valid tick of the batch (late ones included) tallied by ticker: ``(names, counts)``, for metrics
    tally: tuple[list[str], list[int]]


def partial_bars(batch: DecodedBatch, base_ms: int, grace_ms: int) -> BatchResult:
    """Group a batch by ticker and base window; hold back ticks late against earlier ticks of the batch."""
    n = len(batch)
    if n == 0:
        return BatchResult([], [], ([], []))
    codes = batch.codes
    ts = batch.timestamps
    t_min = int(ts.min())
    rel = ts - t_min
    span = int(rel.max()) + 1
    n_codes = len(batch.names)
    if n_codes * span >= _INT64_SAFE:  # cannot happen for epoch-ms batches spanning < 40 years
        msg = f"batch spans {span} ms over {n_codes} ticker codes: too wide to sort on one int64 key"
        raise OverflowError(msg)

    # arrival order within each ticker: exclusive running max of event time gives each tick's watermark
    # a stable sort of 16-bit keys is a radix sort in NumPy: ~10x faster than its timsort of int64 keys
    order = np.argsort(codes.astype(np.uint16) if n_codes <= _UINT16_KEYS else codes, kind="stable")
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
    slack = ends[order] + grace_ms - prior  # > 0: the window was still open at the batch's watermark before
    late_a = (prior >= 0) & (slack <= 0)
    clocks = (
        _chunk_clocks(batch, order, first, r_a, prior, t_min, slack, late_a) if batch.log_times is not None else None
    )
    # the tally for metrics comes free with the sort by ticker: ticks per ticker (late ones included) in code
    # order; the names are those of the chunks below (a ticker's first tick is never late, so none drops out)
    counts = np.diff(np.r_[np.flatnonzero(first), n]).tolist()

    # late against an earlier tick of the batch as if every tick were accepted: the shard keeps these letters
    # when it accepts every other tick, and judges the chunk tick by tick when not (a tick over the volume limit)
    held: dict[int, Held] = {}
    if late_a.any():
        for pos in np.flatnonzero(late_a).tolist():
            row = int(order[pos])
            rows, letters = held.setdefault(int(c_a[pos]), ([], []))
            rows.append(row)
            letters.append(_late_letter(batch, row, base_ms, grace_ms, int(prior[pos]) + t_min))
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
    # exact Python integers for absurd sizes instead of a silent int64 overflow (a volume sum of 1,024 ticks
    # of the largest accepted volume, 2**53, already wraps)
    widest = int((hi - lo).max())
    max_volume = int(vol_s.max())
    if max_volume * widest < _INT64_SAFE:
        volumes = np.add.reduceat(vol_s, lo).tolist()
    else:
        volumes = np.add.reduceat(vol_s.astype(object), lo).tolist()
    if int(cents_s.max()) * max_volume * widest < _INT64_SAFE:
        pv = np.add.reduceat(cents_s * vol_s, lo).tolist()
    else:
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
            volumes,
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
    latest: list[WireTick] = list(map(batch.ticks.__getitem__, _newest_rows(batch, order, ts_s, row_bounds)))
    codes_list = c_a[row_bounds[:-1]].tolist()
    names = list(map(batch.names.__getitem__, codes_list))
    seg_slices = map(segments.__getitem__, map(slice, seg_bounds[:-1].tolist(), seg_bounds[1:].tolist()))
    row_slices = map(order_list.__getitem__, map(slice, row_bounds[:-1].tolist(), row_bounds[1:].tolist()))
    columns = Columns(batch.timestamps, batch.cents, batch.volumes, batch.log_times)
    fields = zip(
        names,
        seg_slices,
        row_slices,
        repeat(batch.raws),
        repeat(batch.origins),
        clocks if clocks is not None else repeat(None),
        repeat(columns),
        map(held.get, codes_list) if held else repeat(None),
        strict=False,
    )
    chunks = list(zip(names, map(TickChunk, fields), strict=True))
    return BatchResult(chunks, latest, (names, counts))


def _newest_rows(
    batch: DecodedBatch, order: npt.NDArray[np.intp], ts_s: npt.NDArray[np.int64], bounds: npt.NDArray[np.intp]
) -> list[int]:
    """The batch row of each ticker's newest tick by ``(timestamp, seq)``, the first to arrive on a tie.

    ``order`` holds the rows sorted by (ticker, event time, arrival), ``ts_s`` their event times and ``bounds``
    where each ticker's rows begin (and, last, where they end). A ticker's last row has the greatest event time;
    only when the row before it has the same one (rare) do the seqs of those rows decide.
    """
    last = bounds[1:] - 1
    newest = order[last]
    tied = np.flatnonzero((last > bounds[:-1]) & (ts_s[last - 1] == ts_s[last]))
    if len(tied):
        seqs = batch.seqs
        for k in tied.tolist():
            hi = int(last[k]) + 1
            lo = hi - 1
            while lo > bounds[k] and ts_s[lo - 1] == ts_s[hi - 1]:
                lo -= 1
            same = order[lo:hi]  # the ticker's ticks at its newest event time, in arrival order
            newest[k] = same[int(np.argmax(seqs[same]))]  # argmax: the first of equal seqs
    return newest.tolist()  # type: ignore[no-any-return]


def _chunk_clocks(
    batch: DecodedBatch,
    order: npt.NDArray[np.intp],
    first: npt.NDArray[np.bool_],
    rel_a: npt.NDArray[np.int64],
    prior: npt.NDArray[np.int64],
    t_min: int,
    slack: npt.NDArray[np.int64],
    late_a: npt.NDArray[np.bool_],
) -> list[ChunkClock]:
    """Each ticker's :data:`ChunkClock`, from the batch sorted by (ticker, arrival) before late ticks are cut.

    ``rel_a`` is event time minus ``t_min`` and ``prior`` its exclusive running maximum per ticker (-1 at a
    ticker's first tick), so ``rel_a > prior`` marks the ticks where the ticker's event time rose; ``slack`` is
    each tick's window end + grace - ``prior`` and ``late_a`` marks the ticks late against earlier ticks of the
    batch.

    In live mode a tick ``i`` is judged at the frontier ``watermark + (log_i - log at the rise)^+ - grace``,
    maximised over the ticker's history (:mod:`flows.aggregation`). If the chunk's first tick raises the
    ticker's watermark and is not late (the shard checks both), every later rise of the chunk is a rise of the
    ticker, so for each later tick ``D_i = (log_i - log at the chunk's last rise before i)^+`` and
    ``prior_i + D_i`` (``reach``) are exact without the ticker's state, and the tick can only have been closed
    by the log part-way through the chunk when its ``slack`` is at most the greatest ``D`` so far (then
    ``smooth`` is False and the shard redoes the chunk tick by tick).
    """
    assert batch.log_times is not None
    assert batch.log_sources is not None
    n = len(order)
    log_a = batch.log_times[order]
    starts = np.flatnonzero(first)
    last = np.r_[starts[1:], n] - 1
    # the last rise up to each tick (a ticker's first tick is a rise, so this stays within its ticker)
    last_rise = np.maximum.accumulate(np.where(rel_a > prior, np.arange(n), -1))
    rose_at = last_rise[last]
    # each later tick's log gain since its ticker's last rise before it
    gain = np.zeros(n, dtype=np.int64)
    if n > 1:
        np.subtract(log_a[1:], log_a[last_rise[:-1]], out=gain[1:])
        np.maximum(gain, 0, out=gain)
        gain[first] = 0
    reach = np.maximum.reduceat(np.where(first, NO_REACH - t_min, prior + gain), starts) + t_min
    # the greatest gain so far within each ticker (a running maximum per ticker: offset by ticker number)
    span = int(gain.max()) + 1
    group = np.cumsum(first) - 1
    if len(starts) * span < _INT64_SAFE:
        offset = group * span
        running = np.maximum.accumulate(gain + offset) - offset
        closed = ~first & ~late_a & (slack <= running)
        smooth = ~np.logical_or.reduceat(closed, starts)
    else:  # log gains of centuries: no summary, every chunk tick by tick
        smooth = np.zeros(len(starts), dtype=bool)
    sources = batch.log_sources
    return list(
        zip(
            [sources[i] for i in order[last].tolist()],
            log_a[last].tolist(),
            log_a[rose_at].tolist(),
            (rel_a[starts] + t_min).tolist(),
            log_a[starts].tolist(),
            reach.tolist(),
            smooth.tolist(),
            strict=True,
        )
    )


def late_reason(
    ticker: str,
    timeframe: str,
    start: int,
    length: int,
    watermark: int,
    grace_ms: int,
    closed_through: int | None = None,
    tick: WireTick | None = None,
) -> str:
    """The reason text of a late tick's dead letter (one wording wherever a tick turns out late)."""
    which = f" seq={tick.seq} at {tick.timestamp}" if tick is not None else ""
    through = f", closed through {closed_through}" if closed_through is not None else ""
    return (
        f"late tick {ticker!r}{which}: {timeframe} window [{start}, {start + length}) already closed "
        f"(watermark {watermark}, grace {grace_ms} ms{through})"
    )


def _late_letter(batch: DecodedBatch, row: int, base_ms: int, grace_ms: int, watermark: int) -> DeadLetter:
    tick = batch.ticks[row]
    start = tick.timestamp // base_ms * base_ms
    timeframe = _TIMEFRAME_OF.get(base_ms, f"{base_ms} ms")
    reason = late_reason(tick.ticker, timeframe, start, base_ms, watermark, grace_ms, tick=tick)
    return dead_letter("late", reason, batch.raws[row], batch.origins[row] if batch.origins is not None else None)
