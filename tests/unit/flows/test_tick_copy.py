"""The NumPy-built binary COPY payload reads back, through psycopg's own binary loaders, as the ticks it encodes."""

from __future__ import annotations

import struct
from datetime import UTC, datetime
from decimal import Decimal

import msgspec
import numpy as np
import pytest
from psycopg.types.datetime import TimestamptzBinaryLoader
from psycopg.types.numeric import NumericBinaryLoader

from flows.decode import DecodedBatch, WireTick, decode_batch
from flows.tick_copy import COLUMNS, copy_payload, tick_columns
from tests.ticks import wire_tick

_TIMESTAMPTZ_OID, _NUMERIC_OID = 1184, 1700
_TS = TimestamptzBinaryLoader(_TIMESTAMPTZ_OID)
_NUM = NumericBinaryLoader(_NUMERIC_OID)
Row = tuple[datetime, str, int, Decimal, Decimal, Decimal, int, int, int]


def parse_copy(payload: bytes) -> list[Row]:
    """Decode a complete binary COPY stream of :data:`COLUMNS` (an oracle independent of NumPy)."""
    assert payload[:11] == b"PGCOPY\n\xff\r\n\x00"
    flags, ext = struct.unpack_from(">ii", payload, 11)
    assert (flags, ext) == (0, 0)
    pos, rows = 19, []
    while True:
        (nfields,) = struct.unpack_from(">h", payload, pos)
        pos += 2
        if nfields == -1:
            break
        assert nfields == len(COLUMNS.split(","))
        fields = []
        for _ in range(nfields):
            (size,) = struct.unpack_from(">i", payload, pos)
            fields.append(payload[pos + 4 : pos + 4 + size])
            pos += 4 + size
        time, ticker, seq, price, bid, ask, bid_size, ask_size, volume = fields
        rows.append(
            (_TS.load(time), ticker.decode(), struct.unpack(">q", seq)[0], _NUM.load(price), _NUM.load(bid),
             _NUM.load(ask), struct.unpack(">i", bid_size)[0], struct.unpack(">i", ask_size)[0],
             struct.unpack(">q", volume)[0])
        )  # fmt: skip
    assert pos == len(payload), "bytes after the trailer"
    return rows


def expected(ticks: list[WireTick]) -> list[Row]:
    return [
        (datetime.fromtimestamp(t.timestamp / 1000, tz=UTC), t.ticker, t.seq, Decimal(f"{t.price:.2f}"),
         Decimal(f"{t.bid:.2f}"), Decimal(f"{t.ask:.2f}"), t.bid_size, t.ask_size, t.volume)
        for t in ticks
    ]  # fmt: skip


def _batch(ticks: list[WireTick]) -> DecodedBatch:
    batch, dead = decode_batch([msgspec.json.encode(t) for t in ticks])
    assert not dead
    return batch


def _tick(ticker: str, seq: int, cents: int, ts: int = 1_767_225_600_123, **kw: int) -> WireTick:
    return wire_tick(ticker, seq, ts, cents / 100, **({"bid_size": 100, "ask_size": 200, "volume": 7} | kw))


def _sorted(rows: list[Row]) -> list[Row]:
    return sorted(rows, key=lambda r: (r[1], r[0], r[2]))


def test_payload_round_trips_every_field_exactly() -> None:
    rng = np.random.default_rng(7)
    tickers = ["A", "MSFT", "BRK.B", "ÄPFEL", "€", "X" * 32]  # 1..32 characters, multi-byte UTF-8 included
    ticks = [
        _tick(tickers[i % len(tickers)], i, int(c), ts=1_767_225_600_000 + int(ms), volume=int(v),
              bid_size=int(v) % 5000, ask_size=2**31 - 1)
        for i, (c, ms, v) in enumerate(zip(rng.integers(2, 99_999_999_999, 500), rng.integers(0, 10**11, 500),
                                           rng.integers(0, 2**53, 500), strict=True))
    ]  # fmt: skip
    rows = parse_copy(copy_payload(tick_columns([_batch(ticks)])))
    assert _sorted(rows) == _sorted(expected(ticks))


@pytest.mark.parametrize(
    "cents", [2, 10, 99, 100, 101, 10_000, 10_001, 999_999, 1_000_000, 12_345_678, 10**10, 99_999_999_998]
)
def test_numeric_digit_boundaries(cents: int) -> None:
    """Prices at the base-10000 digit boundaries and at the decoder's limit (just under $1e9)."""
    (row,) = parse_copy(copy_payload(tick_columns([_batch([_tick("T", 0, cents)])])))
    assert row[3] == Decimal(cents) / 100
    assert row[3].as_tuple().exponent == -2  # scale 2, as numeric(14, 2) stores it


def test_several_batches_are_concatenated_in_order() -> None:
    first = [_tick("AA", i, 1000 + i) for i in range(3)]
    second = [_tick("B", i, 2000 + i) for i in range(2)] + [_tick("AA", 3, 1003)]
    cols = tick_columns([_batch(first), _batch(second)])
    assert cols.names == ["AA", "B"]
    assert cols.codes.tolist() == [0, 0, 0, 1, 1, 0]
    assert cols.seqs.tolist() == [0, 1, 2, 0, 1, 3]
    assert _sorted(parse_copy(copy_payload(cols))) == _sorted(expected(first + second))


def test_empty_batch_is_a_valid_empty_stream() -> None:
    cols = tick_columns([_batch([])])
    assert len(cols) == 0
    assert parse_copy(copy_payload(cols)) == []


def test_values_the_columns_cannot_hold_are_refused() -> None:
    cols = tick_columns([_batch([_tick("T", 0, 1000)])])
    too_big = msgspec.structs.replace(cols, bid_sizes=np.array([2**31], dtype=np.int64))
    with pytest.raises(ValueError, match="bid_size 2147483648 does not fit"):
        copy_payload(too_big)
    with pytest.raises(ValueError, match="price out of numeric"):
        copy_payload(msgspec.structs.replace(cols, cents=np.array([0], dtype=np.int64)))


def test_quotes_come_from_the_decoder_columns_filtered_like_prices() -> None:
    good = [_tick("AAA", 1, 10_001), _tick("AAA", 3, 10_003)]
    off_grid = msgspec.json.encode(_tick("AAA", 2, 10_002)).replace(b"100.02", b"100.025")
    batch, dead = decode_batch([msgspec.json.encode(good[0]), off_grid, msgspec.json.encode(good[1])])
    assert len(dead) == 1
    assert batch.bids.tolist() == [t.bid for t in good]
    assert batch.asks.tolist() == [t.ask for t in good]
    assert _sorted(parse_copy(copy_payload(tick_columns([batch])))) == _sorted(expected(good))


def test_the_archive_asks_for_one_partition_per_day_of_its_rows() -> None:
    from types import SimpleNamespace  # noqa: PLC0415 -- only here

    from flows.tick_archive_sink import _TickArchivePartition  # noqa: PLC0415 -- the sink, without a database

    day = 86_400_000
    t0 = 20_000 * day  # a UTC midnight
    unsorted = np.array([t0 + 5, t0 + day + 1, t0 + 7, 9_999_999_999_999, t0 + day - 1, t0 + 2 * day], np.int64)
    rows = [SimpleNamespace(timestamps=unsorted)]
    times = _TickArchivePartition.partition_times(None, rows)  # type: ignore[arg-type]  # uses no state
    assert sorted(times) == [t0, t0 + day, t0 + 2 * day, 9_999_999_999_999 // day * day]
