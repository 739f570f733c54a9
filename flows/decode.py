"""Batch decoding of raw ``market-ticks`` values into columns of valid ticks plus dead-letter records.

:func:`decode_batch` never raises on bad input: a value that is not JSON, misses or mistypes a field, has a
non-positive or off-grid price, ``bid >= ask``, an out-of-range timestamp or an unknown schema version becomes
a :class:`DeadLetter` carrying the original bytes, its Kafka origin when known and the reason.

Speed: values in the canonical layout (what :func:`contracts.tick.encode_tick` and the simulator write) are
scanned straight into columns by the Rust extension :mod:`tickscan` (``native/tickscan``; ~0.15 us per value,
GIL released), and a tick's msgspec struct is decoded only when asked for (the newest tick per ticker, a
rejected or late tick). The values the scanner declines (another layout, or a bad value) are decoded by a slim
msgspec struct whose per-field constraints (ranges, lengths, the version literal) are checked in C, and fill
their rows; the scanner accepts nothing msgspec would reject, with the same numbers
(``tests/unit/flows/test_tickscan.py``). The cross-field and $0.01-grid checks then run on the columns,
vectorised with NumPy over the whole batch. The reason text of a rejected tick comes from
:func:`contracts.tick.tick_problem`, so it reads exactly like the contract's own validation.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Sequence
from typing import Annotated, Any, Literal, NamedTuple, cast, overload

import msgspec
import numpy as np
import numpy.typing as npt
import tickscan

from contracts.codec import DECODE_ERRORS, problem
from contracts.tick import (
    MAX_INT32,
    MAX_INT64,
    MAX_PRICE,
    MAX_TIMESTAMP_MS,
    MAX_VOLUME,
    MIN_TIMESTAMP_MS,
    TICK_SCHEMA_VERSION,
    Tick,
    Ticker,
    tick_problem,
)
from flows.logclock import log_columns

#: the contract's bounds (``MAX_PRICE`` also rules out ``inf`` from an overflowing JSON number)
_Price = Annotated[float, msgspec.Meta(gt=0, lt=MAX_PRICE)]
_Size = Annotated[int, msgspec.Meta(ge=0, le=MAX_VOLUME)]
#: bid/ask sizes are ``integer`` columns of ``market_ticks`` (the contract's storage limit)
_QuoteSize = Annotated[int, msgspec.Meta(ge=0, le=MAX_INT32)]


class WireTick(msgspec.Struct, frozen=True, gc=False):
    """A decoded ``market-ticks`` value (contract v1) before the cross-field checks; no ``__post_init__``."""

    ticker: Ticker
    seq: Annotated[int, msgspec.Meta(ge=0, le=MAX_INT64)]
    timestamp: Annotated[int, msgspec.Meta(ge=MIN_TIMESTAMP_MS, le=MAX_TIMESTAMP_MS)]
    price: _Price
    bid: _Price
    ask: _Price
    bid_size: _QuoteSize
    ask_size: _QuoteSize
    volume: _Size
    version: Literal[1]  # contract v1, required (no default); a test pins this to TICK_SCHEMA_VERSION


class RawBatch(msgspec.Struct, frozen=True, gc=False):
    """Raw values consumed from one Kafka partition, in offset order (what a source partition emits)."""

    topic: str
    partition: int
    offsets: list[int]
    values: list[bytes]
    #: live mode: the partition's log time at each value (:mod:`flows.logclock`); None when not read
    log_times: Any = None
    #: the partition's log time after this batch; an empty batch carries only this (an idle partition's clock)
    log_end: int | None = None


class Origin(msgspec.Struct, frozen=True, gc=False, array_like=True):
    """Where a value was read from."""

    topic: str
    partition: int
    offset: int


class DeadLetter(msgspec.Struct, frozen=True, gc=False):
    """A rejected input: ``kind`` is ``"malformed"`` (never a valid tick) or ``"late"`` (valid but too late)."""

    kind: Literal["malformed", "late"]
    reason: str
    raw: bytes
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None


class DecodedBatch(msgspec.Struct, gc=False):
    """The valid ticks of a batch in arrival order, as columns (NumPy arrays) plus the ticks themselves."""

    #: the ticks as structs (a :class:`LazyTicks` decodes one only when it is asked for)
    ticks: Sequence[WireTick]
    raws: list[bytes]
    origins: Sequence[Origin | None] | None
    #: the distinct tickers, in order of first appearance; ``codes`` index them, one per tick
    names: list[str]
    codes: npt.NDArray[np.int64]
    seqs: npt.NDArray[np.int64]
    timestamps: npt.NDArray[np.int64]
    cents: npt.NDArray[np.int64]
    volumes: npt.NDArray[np.int64]
    #: best bid and ask as decoded (on the $0.01 grid); the tick archive turns them into cents
    bids: npt.NDArray[np.float64]
    asks: npt.NDArray[np.float64]
    bid_sizes: npt.NDArray[np.int64]
    ask_sizes: npt.NDArray[np.int64]
    #: live mode only (``read_ms`` given): the log time of each tick and the log it was read from (None: the
    #: read clock stands in), and each log's time after this batch (:mod:`flows.logclock`)
    log_times: npt.NDArray[np.int64] | None = None
    log_sources: list[str | None] | None = None
    log_ends: dict[str, int] | None = None

    def __len__(self) -> int:
        return len(self.codes)

    @property
    def tickers(self) -> list[str]:
        """Each tick's ticker."""
        return list(map(self.names.__getitem__, self.codes.tolist()))

    def tally(self) -> tuple[list[str], list[int]]:
        """Ticks per ticker: the names with at least one tick, and their counts."""
        counts = np.bincount(self.codes, minlength=len(self.names))
        present = np.flatnonzero(counts)
        return list(map(self.names.__getitem__, present.tolist())), counts[present].tolist()


_DECODER = msgspec.json.Decoder(WireTick)


class LazyTicks(Sequence[WireTick]):
    """The ticks of scanned values, each decoded by msgspec only when it is asked for."""

    __slots__ = ("_raws",)

    def __init__(self, raws: list[bytes]) -> None:
        self._raws = raws

    def __len__(self) -> int:
        return len(self._raws)

    @overload
    def __getitem__(self, i: int) -> WireTick: ...
    @overload
    def __getitem__(self, i: slice) -> LazyTicks: ...
    def __getitem__(self, i: int | slice) -> WireTick | LazyTicks:
        if isinstance(i, slice):
            return LazyTicks(self._raws[i])
        return _DECODER.decode(self._raws[i])

    def take(self, rows: Iterable[int]) -> LazyTicks:
        """The ticks of ``rows`` only, in that order."""
        return LazyTicks([self._raws[r] for r in rows])


class Origins(Sequence[Origin | None]):
    """Where each value of a batch was read from, as compact columns; an :class:`Origin` is built only when
    asked for (a dead letter), not for every tick (that cost ~0.3 us per tick)."""

    __slots__ = ("_offsets", "_part", "_parts")

    def __init__(self, parts: list[tuple[str, int] | None], part: list[int], offsets: list[int]) -> None:
        self._parts = parts  # (topic, partition) per source batch; None for plain values
        self._part = part  # index into parts, per value
        self._offsets = offsets  # per value

    def __len__(self) -> int:
        return len(self._part)

    @overload
    def __getitem__(self, i: int) -> Origin | None: ...
    @overload
    def __getitem__(self, i: slice) -> Origins: ...
    def __getitem__(self, i: int | slice) -> Origin | None | Origins:
        if isinstance(i, slice):
            return Origins(self._parts, self._part[i], self._offsets[i])
        where = self._parts[self._part[i]]
        return None if where is None else Origin(where[0], where[1], self._offsets[i])

    def take(self, rows: Iterable[int]) -> Origins:
        """The origins of ``rows`` only, in that order."""
        rows = list(rows)
        return Origins(self._parts, [self._part[r] for r in rows], [self._offsets[r] for r in rows])


def flatten(items: Iterable[bytes | RawBatch]) -> tuple[list[bytes], Origins | None]:
    """All values of ``items`` in order, with their origins (None when no item is a :class:`RawBatch`)."""
    values: list[bytes] = []
    parts: list[tuple[str, int] | None] = [None]
    part: list[int] = []
    offsets: list[int] = []
    for item in items:
        if isinstance(item, RawBatch):
            parts.append((item.topic, item.partition))
            values.extend(item.values)
            part.extend([len(parts) - 1] * len(item.values))  # C-level, no per-value Python
            offsets.extend(item.offsets)
        else:  # a plain value among batches (tests): no origin
            values.append(item)
            part.append(0)
            offsets.append(-1)
    return values, Origins(parts, part, offsets) if len(parts) > 1 else None


def _take(origins: Sequence[Origin | None], rows: list[int]) -> Sequence[Origin | None]:
    return origins.take(rows) if isinstance(origins, Origins) else [origins[r] for r in rows]


def dead_letter(kind: Literal["malformed", "late"], reason: str, raw: bytes, origin: Origin | None) -> DeadLetter:
    """A :class:`DeadLetter` for ``raw`` with its origin when known."""
    if origin is None:
        return DeadLetter(kind=kind, reason=reason, raw=raw)
    return DeadLetter(
        kind=kind, reason=reason, raw=raw, topic=origin.topic, partition=origin.partition, offset=origin.offset
    )


def _decode_one(raw: object) -> tuple[WireTick | None, str | None]:
    if not isinstance(raw, bytes | bytearray | memoryview):
        return None, f"value is not bytes but {type(raw).__name__}"
    try:
        return _DECODER.decode(raw), None
    except DECODE_ERRORS as err:
        return None, problem(err, "tick", TICK_SCHEMA_VERSION)


#: ``ticker`` of a tick (C-level accessor for ``map``)
TICKER = operator.attrgetter("ticker")


#: the fields of a tick in :class:`_Columns` order after ``names`` and ``codes``
_FIELDS = ("seq", "timestamp", "price", "bid", "ask", "bid_size", "ask_size", "volume")


class _Columns(NamedTuple):
    """A batch's columns, one row per value, before the cross-field checks."""

    names: list[str]
    codes: npt.NDArray[np.int64]
    seqs: npt.NDArray[np.int64]
    timestamps: npt.NDArray[np.int64]
    prices: npt.NDArray[np.float64]
    bids: npt.NDArray[np.float64]
    asks: npt.NDArray[np.float64]
    bid_sizes: npt.NDArray[np.int64]
    ask_sizes: npt.NDArray[np.int64]
    volumes: npt.NDArray[np.int64]

    def put(self, rows: list[int], ticks: list[WireTick]) -> None:
        """Fill ``rows`` with ``ticks`` (values the scanner declined and msgspec decoded), C-level loops."""
        index = {name: i for i, name in enumerate(self.names)}
        tickers = list(map(TICKER, ticks))
        for name in dict.fromkeys(tickers):  # distinct names, C-level
            index.setdefault(name, len(index))
        self.names[len(self.names) :] = list(index)[len(self.names) :]
        at = np.array(rows, dtype=np.intp)
        self.codes[at] = np.fromiter(map(index.__getitem__, tickers), dtype=np.int64, count=len(tickers))
        for name, column in zip(_FIELDS, self[2:], strict=True):
            column[at] = np.fromiter(map(operator.attrgetter(name), ticks), dtype=column.dtype, count=len(ticks))

    def take(self, keep: npt.NDArray[np.bool_]) -> _Columns:
        """Only the rows where ``keep`` is set."""
        return _Columns(self.names, *(column[keep] for column in self[1:]))  # type: ignore[arg-type]


def _scan(values: list[bytes]) -> tuple[_Columns, list[int]]:
    """The columns of ``values`` by :func:`tickscan.scan`, and the rows it declined (zeros in the columns)."""
    names, declined, codes, seqs, timestamps, prices, bids, asks, bid_sizes, ask_sizes, volumes = tickscan.scan(values)

    def i64(column: bytearray) -> npt.NDArray[np.int64]:
        return np.frombuffer(column, dtype=np.int64)

    def f64(column: bytearray) -> npt.NDArray[np.float64]:
        return np.frombuffer(column, dtype=np.float64)

    columns = _Columns(
        names,
        *(i64(codes), i64(seqs), i64(timestamps)),
        *(f64(prices), f64(bids), f64(asks)),
        *(i64(bid_sizes), i64(ask_sizes), i64(volumes)),
    )
    return columns, declined


def decode_batch(
    items: Sequence[bytes | RawBatch],
    not_after_ms: int | None = None,
    read_ms: int | None = None,
    max_future_ms: int | None = None,
) -> tuple[DecodedBatch, list[DeadLetter]]:
    """Decode raw values (plain ``bytes`` or whole :class:`RawBatch` es) into valid ticks and dead letters.

    ``not_after_ms``: ticks with a later event time are rejected as malformed (a clock far in the future would
    otherwise push the ticker's watermark ahead and make every later tick of it late). ``read_ms`` (live mode):
    also return each tick's log time (:func:`flows.logclock.log_columns`; ``read_ms`` stands in where a value
    came without one); with ``max_future_ms`` as well, a tick is too far ahead when its event time passes its
    own log time plus ``max_future_ms`` instead (``not_after_ms`` still for a value without a log time, or
    whose log has none yet: -1): a replay of the record judges it the same way, where the clock at reading
    would not (a tick accepted on replay could change a final bar already published).
    """
    dead: list[DeadLetter] = []
    logs = log_columns(items, read_ms) if read_ms is not None else None
    limit: int | npt.NDArray[np.int64] | None = not_after_ms
    by_log = False
    if logs is not None and max_future_ms is not None and not_after_ms is not None:
        # a value without a log time has read_ms there: judged by the clock, as is a log without one yet (-1)
        by_log = True
        limit = np.where(logs[0] >= 0, logs[0] + max_future_ms, not_after_ms).astype(np.int64)
    values: list[Any]
    origins: Sequence[Origin | None] | None
    if items and (isinstance(items[0], RawBatch) or any(isinstance(item, RawBatch) for item in items)):
        values, origins = flatten(items)
    else:  # plain values (tests, benchmarks)
        values, origins = list(items), None
    cols, declined = _scan(values)

    def reject(row: int, reason: str) -> None:
        raw = values[row]
        safe = raw if isinstance(raw, bytes) else repr(raw).encode()
        dead.append(dead_letter("malformed", reason, safe, origins[row] if origins is not None else None))
        keep[row] = False

    keep = np.ones(len(values), dtype=bool)
    if declined:  # another layout (msgspec decodes it) or a bad value (msgspec says why)
        try:
            decoded, rows = list(map(_DECODER.decode, map(values.__getitem__, declined))), declined
        except (*DECODE_ERRORS, TypeError):
            decoded, rows = [], []
            for row in declined:
                tick, reason = _decode_one(values[row])
                if tick is None:
                    reject(row, reason or "undecodable")
                else:
                    decoded.append(tick)
                    rows.append(row)
        if decoded:
            cols.put(rows, decoded)
    ticks = LazyTicks(values)

    bad = cols.bids >= cols.asks
    for column in (cols.prices, cols.bids, cols.asks):  # contracts.tick.on_cent_grid, vectorised: exact
        bad |= np.rint(column * 100.0) / 100.0 != column
    if limit is not None:
        bad |= cols.timestamps > limit
    if declined:
        bad &= keep
    for row in np.flatnonzero(bad).tolist():
        tick = ticks[row]
        reason = tick_problem(cast(Tick, tick))  # duck-typed: the same attributes as the contract's Tick
        if reason is None and limit is not None:
            latest = limit if isinstance(limit, int) else int(limit[row])
            if tick.timestamp > latest:
                timed = by_log and logs is not None and logs[1][row] is not None and logs[0][row] >= 0
                ahead = "its log time" if timed else "the clock"
                reason = f"timestamp {tick.timestamp} is after {latest} (too far ahead of {ahead})"
        if reason is not None:
            reject(row, reason)
    raws: list[bytes] = values
    log_times, log_sources = (logs[0], logs[1]) if logs is not None else (None, None)
    if dead:
        rows = np.flatnonzero(keep).tolist()
        cols = cols.take(keep)
        raws = [values[i] for i in rows]
        ticks = LazyTicks(raws)
        origins = _take(origins, rows) if origins is not None else None
        if log_times is not None and log_sources is not None:
            log_times, log_sources = log_times[keep], [log_sources[i] for i in rows]
    batch = DecodedBatch(
        ticks=ticks,
        raws=raws,
        origins=origins,
        names=cols.names,
        codes=cols.codes,
        seqs=cols.seqs,
        timestamps=cols.timestamps,
        cents=np.rint(cols.prices * 100.0).astype(np.int64),
        volumes=cols.volumes,
        bids=cols.bids,
        asks=cols.asks,
        bid_sizes=cols.bid_sizes,
        ask_sizes=cols.ask_sizes,
        log_times=log_times,
        log_sources=log_sources,
        log_ends=logs[2] if logs is not None else None,
    )
    return batch, dead
