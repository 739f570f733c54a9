"""PostgreSQL binary ``COPY`` payloads of decoded tick batches, built with NumPy (no per-row Python).

The tick archive writes ``market_ticks`` rows with ``COPY ... FROM STDIN (FORMAT binary)`` and one
``copy.write`` per batch. Every field is encoded in the column's own binary type, so the server does no parsing
and no casts: ``timestamptz`` as microseconds since 2000-01-01, ``numeric(14, 2)`` prices as exact base-10000
digits computed from integer cents (never through a float), ``integer``/``bigint`` sizes and the ticker as UTF-8.

A binary row is a fixed-size record once the ticker's byte length is fixed, so the rows of each ticker length
are laid out as one NumPy structured array (big-endian fields) and dumped with ``tobytes``. Row order inside a
payload is therefore by ticker length, not arrival order — irrelevant for a table.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt

from flows.decode import DecodedBatch

#: Column order of every payload built here (``COPY market_ticks (COLUMNS) FROM STDIN (FORMAT binary)``).
COLUMNS = "time, ticker, seq, price, bid, ask, bid_size, ask_size, volume"

_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"  # signature, flags, no extension
_TRAILER = b"\xff\xff"
_PG_EPOCH_MS = 946_684_800_000  # 2000-01-01T00:00:00Z, PostgreSQL's timestamp epoch
#: ``numeric(14, 2)`` holds at most 12 integer digits: three base-10000 digits plus one for the cents.
_NUMERIC_DIGITS = 4
MAX_CENTS = 10**14 - 1

_NUMERIC = [("len", ">i4"), ("ndigits", ">i2"), ("weight", ">i2"), ("sign", ">u2"), ("dscale", ">i2"),
            ("digits", ">i2", (_NUMERIC_DIGITS,))]  # fmt: skip


def _row_dtype(ticker_bytes: int) -> np.dtype[Any]:
    """The packed binary-COPY record of one row whose ticker is ``ticker_bytes`` long."""
    return np.dtype(
        [
            ("nfields", ">i2"),
            ("time_len", ">i4"), ("time", ">i8"),
            ("ticker_len", ">i4"), ("ticker", f"S{ticker_bytes}"),
            ("seq_len", ">i4"), ("seq", ">i8"),
            ("price", _NUMERIC), ("bid", _NUMERIC), ("ask", _NUMERIC),
            ("bid_size_len", ">i4"), ("bid_size", ">i4"),
            ("ask_size_len", ">i4"), ("ask_size", ">i4"),
            ("volume_len", ">i4"), ("volume", ">i8"),
        ]
    )  # fmt: skip


class TickColumns(msgspec.Struct, frozen=True, gc=False):
    """The ``market_ticks`` columns of a list of ticks: tickers as codes into ``names``, prices in cents."""

    names: list[str]
    codes: npt.NDArray[np.int64]
    timestamps: npt.NDArray[np.int64]
    seqs: npt.NDArray[np.int64]
    cents: npt.NDArray[np.int64]
    bid_cents: npt.NDArray[np.int64]
    ask_cents: npt.NDArray[np.int64]
    bid_sizes: npt.NDArray[np.int64]
    ask_sizes: npt.NDArray[np.int64]
    volumes: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.codes)


def _cents(prices: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
    # prices passed the decoder's $0.01-grid check, so rounding recovers the exact cents
    return np.rint(prices * 100.0).astype(np.int64)


def tick_columns(batches: Sequence[DecodedBatch]) -> TickColumns:
    """The columns of every tick of ``batches``, in arrival order (the decoder's own columns)."""
    if len(batches) == 1:
        b = batches[0]
        return TickColumns(
            b.names, b.codes, b.timestamps, b.seqs, b.cents, _cents(b.bids), _cents(b.asks), b.bid_sizes,
            b.ask_sizes, b.volumes,
        )  # fmt: skip
    index: dict[str, int] = {}
    codes = []
    for b in batches:  # each batch numbers its tickers from 0: renumber into one table
        remap = np.array([index.setdefault(name, len(index)) for name in b.names], dtype=np.int64)
        codes.append(remap[b.codes])

    def joined(name: str) -> npt.NDArray[Any]:
        return np.concatenate([getattr(b, name) for b in batches])

    return TickColumns(
        names=list(index),
        codes=np.concatenate(codes),
        timestamps=joined("timestamps"),
        seqs=joined("seqs"),
        cents=joined("cents"),
        bid_cents=_cents(joined("bids")),
        ask_cents=_cents(joined("asks")),
        bid_sizes=joined("bid_sizes"),
        ask_sizes=joined("ask_sizes"),
        volumes=joined("volumes"),
    )


def _set_numeric(field: np.ndarray[Any, Any], cents: npt.NDArray[np.int64]) -> None:
    """Positive cents as ``numeric`` scale 2: base-10000 digits of the units (3) and the cents times 100 (1)."""
    units, rest = np.divmod(cents, 100)
    field["len"] = 8 + 2 * _NUMERIC_DIGITS
    field["ndigits"] = _NUMERIC_DIGITS
    field["weight"] = _NUMERIC_DIGITS - 2  # the first digit counts 10000^2
    field["sign"] = 0  # NUMERIC_POS; prices are > 0 (checked by the decoder and by the table)
    field["dscale"] = 2
    digits = field["digits"]
    digits[:, 0] = units // 100_000_000
    digits[:, 1] = (units // 10_000) % 10_000
    digits[:, 2] = units % 10_000
    digits[:, 3] = rest * 100


def _check_ranges(cols: TickColumns) -> None:
    for name, column in (("price", cols.cents), ("bid", cols.bid_cents), ("ask", cols.ask_cents)):
        if len(column) and (column.min() <= 0 or column.max() > MAX_CENTS):
            msg = f"{name} out of numeric(14, 2) range: {column.min()}..{column.max()} cents"
            raise ValueError(msg)
    for name, column in (("bid_size", cols.bid_sizes), ("ask_size", cols.ask_sizes)):
        if len(column) and column.max() > np.iinfo(np.int32).max:
            msg = f"{name} {column.max()} does not fit the integer column"
            raise ValueError(msg)


def copy_payload(cols: TickColumns) -> bytes:
    """The complete binary ``COPY`` stream (signature, rows, trailer) of ``cols`` in :data:`COLUMNS` order.

    Raises ``ValueError`` for a value the column types cannot hold (the decoder rules these out already).
    """
    _check_ranges(cols)
    encoded = [name.encode() for name in cols.names]
    name_lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
    row_lengths = name_lengths[cols.codes]
    lengths = np.unique(row_lengths).tolist()
    names = np.array(encoded, dtype=f"S{max([1, *lengths])}")
    parts = [_SIGNATURE]
    for length in lengths:
        rows: Any = np.flatnonzero(row_lengths == length) if len(lengths) > 1 else slice(None)
        codes = cols.codes[rows]
        out = np.empty(len(codes), dtype=_row_dtype(length))
        out["nfields"] = 9
        out["time_len"], out["seq_len"], out["volume_len"] = 8, 8, 8
        out["ticker_len"] = length
        out["bid_size_len"], out["ask_size_len"] = 4, 4
        out["time"] = (cols.timestamps[rows] - _PG_EPOCH_MS) * 1000
        out["ticker"] = names[codes]
        out["seq"] = cols.seqs[rows]
        _set_numeric(out["price"], cols.cents[rows])
        _set_numeric(out["bid"], cols.bid_cents[rows])
        _set_numeric(out["ask"], cols.ask_cents[rows])
        out["bid_size"] = cols.bid_sizes[rows]
        out["ask_size"] = cols.ask_sizes[rows]
        out["volume"] = cols.volumes[rows]
        parts.append(out.tobytes())
    parts.append(_TRAILER)
    return b"".join(parts)
