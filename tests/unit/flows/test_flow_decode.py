"""Tests of :mod:`flows.decode`: valid ticks become columns, every kind of bad input a dead letter."""

from __future__ import annotations

import math
import typing

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.tick import TICK_SCHEMA_VERSION
from flows.decode import DeadLetter, RawBatch, WireTick, decode_batch
from tests.ticks import T0, raw_tick_json, sample_bytes


def test_wire_version_is_the_contract_version_and_required() -> None:
    assert typing.get_args(typing.get_type_hints(WireTick)["version"]) == (TICK_SCHEMA_VERSION,)
    assert WireTick.__struct_defaults__ == ()  # a value without "version" is not a v1 tick


def test_valid_batch_becomes_exact_columns() -> None:
    values = [sample_bytes(seq=i, timestamp=T0 + i, price=100.0 + i / 100, volume=i) for i in range(50)]
    batch, dead = decode_batch(values)
    assert dead == []
    assert len(batch) == 50
    assert batch.tickers == ["SYNTH"] * 50
    np.testing.assert_array_equal(batch.timestamps, T0 + np.arange(50))
    np.testing.assert_array_equal(batch.cents, 10_000 + np.arange(50))
    np.testing.assert_array_equal(batch.volumes, np.arange(50))
    assert batch.raws == values
    assert batch.origins is None


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"not json", "not valid JSON"),
        (b"", "not valid JSON"),
        (b"[1, 2]", "does not match contract"),
        (sample_bytes().replace(b'"SYNTH"', b'"SY\xc3"'), "invalid UTF-8"),  # msgspec: UnicodeDecodeError
        (raw_tick_json(price=...), "price"),
        (raw_tick_json(volume="12"), "volume"),
        (raw_tick_json(price=0), "price"),
        (raw_tick_json(price=-1.5), "price"),
        (raw_tick_json(bid=152.35, ask=152.35), "bid < ask"),
        (raw_tick_json(bid=152.36, ask=152.35), "bid < ask"),
        (raw_tick_json(price=152.345), "grid"),
        (raw_tick_json(price=0.1 + 0.2, bid=0.29, ask=0.31), "grid"),  # 0.30000000000000004
        (raw_tick_json(price=0.3, bid=0.1 + 0.2, ask=0.31), "grid"),
        (raw_tick_json(price=0.3, bid=0.3, ask=0.1 + 0.2), "grid"),  # bid == ask in whole cents
        (raw_tick_json(price=20_000.0001, bid=19_999.99, ask=20_000.01), "grid"),
        (raw_tick_json(price=700_000.12, bid=700_000.123, ask=700_000.13), "grid"),
        (raw_tick_json(version=2), "version"),
        (raw_tick_json(version=...), "version"),
        (raw_tick_json(timestamp=1_705_318_245), "timestamp"),
        (raw_tick_json(ticker=""), "ticker"),
        # PostgreSQL text cannot hold NUL: accepted, it stopped both flows at every replay (sink DataError)
        (raw_tick_json(ticker="A\u0000B"), "ticker"),
        (raw_tick_json(ticker="A\u001fB"), "ticker"),
        (raw_tick_json(ticker="A\u007f"), "ticker"),
        (raw_tick_json(volume=-1), "volume"),
        (raw_tick_json(seq=-1), "seq"),
    ],
)
def test_malformed_values_become_dead_letters(raw: bytes, reason: str) -> None:
    good = sample_bytes()
    batch, dead = decode_batch([good, raw, good])
    assert len(batch) == 2
    assert batch.raws == [good, good]
    assert len(dead) == 1
    assert dead[0].kind == "malformed"
    assert dead[0].raw == raw
    assert reason in dead[0].reason


@settings(max_examples=300, deadline=None)
@given(cents=st.integers(min_value=1, max_value=99_999_999_998))  # ask = cents + 1 stays < MAX_PRICE
def test_exactly_the_two_decimal_prices_are_on_the_grid(cents: int) -> None:
    """Every price written with two decimals is accepted; the nearest float beside it is not (no tolerance)."""
    price = cents / 100
    above, below = math.nextafter(price, math.inf), math.nextafter(price, 0.0)
    values = [raw_tick_json(price=p, bid=p, ask=(cents + 1) / 100) for p in (price, above, below)]
    batch, dead = decode_batch(values)
    assert [int(c) for c in batch.cents] == [cents]
    assert [d.raw for d in dead] == values[1:]
    assert all("grid" in d.reason for d in dead)


def test_non_bytes_value_does_not_raise() -> None:
    items: list[object] = [None, sample_bytes()]
    batch, dead = decode_batch(items)  # type: ignore[arg-type]
    assert len(batch) == 1
    assert dead[0].reason.startswith("value is not bytes")


def test_origins_are_kept_for_kafka_batches() -> None:
    good, bad = sample_bytes(), b"{"
    items: list[bytes | RawBatch] = [RawBatch("market-ticks", 3, [10, 11, 15], [good, bad, good]), sample_bytes(seq=9)]
    batch, dead = decode_batch(items)
    assert dead == [
        DeadLetter(kind="malformed", reason=dead[0].reason, raw=bad, topic="market-ticks", partition=3, offset=11)
    ]
    assert batch.origins is not None
    assert [o.offset if o else None for o in batch.origins] == [10, 15, None]
    assert len(batch) == 3


def test_empty_batch() -> None:
    batch, dead = decode_batch([])
    assert len(batch) == 0
    assert dead == []
    assert batch.cents.dtype == np.int64


def test_mixed_items_starting_with_plain_values_keep_origins() -> None:
    good = sample_bytes()
    items: list[bytes | RawBatch] = [good, RawBatch("t", 0, [7], [b"nope"]), good]
    batch, dead = decode_batch(items)
    assert len(batch) == 2
    assert (dead[0].raw, dead[0].offset) == (b"nope", 7)


def test_ticks_from_the_future_are_rejected() -> None:
    ok, ahead = sample_bytes(timestamp=T0), sample_bytes(timestamp=T0 + 10_000)
    batch, dead = decode_batch([ok, ahead], not_after_ms=T0 + 5_000)
    assert batch.raws == [ok]
    assert batch.timestamps.tolist() == [T0]
    assert dead[0].raw == ahead
    assert "ahead of the clock" in dead[0].reason


def test_in_live_mode_a_tick_is_too_far_ahead_of_its_log_time_whenever_it_is_read() -> None:
    """Judged by the clock at reading, a tick just over the limit at first passes on a replay a minute later
    (and may then change a final bar already published); judged by its record's log time, never."""
    limit = 300_000
    fine, ahead = sample_bytes(timestamp=T0 + limit), sample_bytes(timestamp=T0 + limit + 1)
    plain = sample_bytes(timestamp=T0 + limit + 1)  # no log time: the clock at reading stands in
    outcomes = []
    for read_ms in (T0, T0 + 60_000, T0 + 3_600_000):  # the first read, and replays after a crash
        items = [RawBatch("market-ticks", 0, [1, 2], [fine, ahead], np.array([T0, T0], dtype=np.int64), T0), plain]
        batch, dead = decode_batch(items, not_after_ms=read_ms + limit, read_ms=read_ms, max_future_ms=limit)  # type: ignore[arg-type]
        assert [d.raw for d in dead if d.offset is not None] == [ahead], read_ms
        assert "too far ahead of its log time" in dead[0].reason
        outcomes.append(batch.raws)
    assert outcomes[0] == [fine]  # the value without a log time is judged by the clock: ahead at first ...
    assert outcomes[1] == outcomes[2] == [fine, plain]  # ... not later (it has no log time to be judged by)
    _, dead = decode_batch([plain], not_after_ms=T0 + limit, read_ms=T0, max_future_ms=limit)
    assert "too far ahead of the clock" in dead[0].reason


def test_a_log_without_a_time_yet_leaves_the_future_check_to_the_clock() -> None:
    """A fresh partition's log time is -1 until a record brings one: that is no limit of -1 + max_future."""
    tick = sample_bytes(timestamp=T0)
    items = [RawBatch("market-ticks", 0, [1], [tick], np.array([-1], dtype=np.int64), -1)]
    batch, dead = decode_batch(items, not_after_ms=T0 + 300_000, read_ms=T0, max_future_ms=300_000)  # type: ignore[arg-type]
    assert (batch.raws, dead) == ([tick], [])


def test_origins_of_two_partitions_survive_a_rejected_tick_in_between() -> None:
    good = sample_bytes()
    off_grid = good.replace(b"152.34,", b"152.345,", 1)
    assert off_grid != good
    items = [RawBatch("a", 0, [5, 6], [good, off_grid]), RawBatch("b", 2, [40, 41], [good, good])]
    batch, dead = decode_batch(items)  # type: ignore[arg-type]
    assert (dead[0].topic, dead[0].partition, dead[0].offset) == ("a", 0, 6)
    assert batch.origins is not None
    assert [(o.topic, o.partition, o.offset) for o in batch.origins if o] == [("a", 0, 5), ("b", 2, 40), ("b", 2, 41)]
    assert [o.offset for o in batch.origins[1:] if o] == [40, 41]


_fields = st.fixed_dictionaries(
    {
        "ticker": st.text(alphabet=st.sampled_from('AZ09._-,:"\\ \x00Ä€'), max_size=34),
        "seq": st.sampled_from([-1, 0, 7, 2**63 - 1, 2**63]),
        "timestamp": st.sampled_from([10**12 - 1, T0, 10**13]),
        "price": st.sampled_from([-1.0, 0.0, 0.001, 152.34, 1e9]),
        "bid": st.sampled_from([152.33, 152.35, 1e-7]),
        "ask": st.sampled_from([152.35, 152.33]),
        "bid_size": st.sampled_from([-1, 300, 2**31]),
        "ask_size": st.sampled_from([500, "500"]),
        "volume": st.sampled_from([0, 2**53, 2**53 + 1]),
        "version": st.sampled_from([1, 2, None]),
    }
)


@st.composite
def _damaged(draw: st.DrawFn) -> bytes:
    value = msgspec.json.encode(draw(_fields))
    at = draw(st.integers(0, len(value)))
    insert = draw(
        st.one_of(st.sampled_from([b"\xc3", b"\xff", b'"', b"\\", b"\x00", b"{", b"e9"]), st.binary(max_size=3))
    )
    if draw(st.booleans()):  # inside the ticker string: escapes, quotes, broken UTF-8
        return value.replace(b'"ticker":"', b'"ticker":"' + insert, 1)
    return value[:at] + insert + value[at + draw(st.integers(0, 3)) :]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(_damaged(), st.binary(max_size=40)), min_size=1, max_size=10))
def test_no_value_stops_the_decoder_and_none_is_lost(values: list[bytes]) -> None:
    """Any bytes at all: each value is a valid tick or a dead letter with a reason, and nothing raises."""
    good = sample_bytes()
    batch, dead = decode_batch([good, *values, good])
    assert len(batch) + len(dead) == len(values) + 2
    assert batch.raws[0] == batch.raws[-1] == good
    assert all(d.kind == "malformed" and d.reason for d in dead)
    assert sorted([*batch.raws, *(d.raw for d in dead)]) == sorted([good, *values, good])
