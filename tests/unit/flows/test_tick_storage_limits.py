"""Ticks whose seq or sizes do not fit the ``market_ticks`` columns, whose volume is over 2**53 or whose prices
are not below ``MAX_PRICE`` are rejected at the contract (tick.v1 limits), so they are dead-lettered by the bars
flow and counted by the archive instead of crashing it; the flows' decoder, the contract and the JSON Schema
draw the same lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from common.errors import ContractError
from contracts.tick import MAX_INT32, MAX_INT64, MAX_PRICE, MAX_VOLUME
from flows.decode import decode_batch
from flows.observe import ARCHIVE_REJECTED
from flows.tick_copy import copy_payload, tick_columns
from flows.ticks import decode_for_archive
from tests.ticks import T0, raw_tick_json, sample_tick

_SCHEMA = Path(__file__).parents[3] / "contracts" / "schemas" / "tick.v1.json"

_TOO_BIG = [
    {"seq": MAX_INT64 + 1},
    {"seq": 2**64},
    {"bid_size": MAX_INT32 + 1},
    {"ask_size": MAX_INT32 + 1},
    {"bid_size": 2**53},
    {"volume": MAX_VOLUME + 1},
    {"volume": MAX_INT64 + 1},
]
#: prices at the bound (bid < ask kept where the other two are the sample's)
_PRICE_TOO_BIG = [
    {"price": MAX_PRICE},
    {"price": 1.5e9},
    {"ask": MAX_PRICE},
    {"bid": 999_999_999.99, "ask": MAX_PRICE},
]


@pytest.mark.parametrize("overrides", _TOO_BIG)
def test_contract_rejects_values_beyond_the_storage_limits(overrides: dict[str, object]) -> None:
    with pytest.raises(ContractError, match="must be <="):
        sample_tick(**overrides)


@pytest.mark.parametrize("overrides", _PRICE_TOO_BIG)
def test_contract_rejects_prices_at_or_above_the_bound(overrides: dict[str, object]) -> None:
    with pytest.raises(ContractError, match="< 1000000000, got"):
        sample_tick(**overrides)


def test_contract_accepts_the_limits_themselves() -> None:
    sample_tick(seq=MAX_INT64, bid_size=MAX_INT32, ask_size=MAX_INT32, volume=MAX_VOLUME)
    sample_tick(price=999_999_999.99, bid=999_999_999.98, ask=999_999_999.99)


def test_schema_states_the_limits() -> None:
    props = json.loads(_SCHEMA.read_text())["properties"]
    assert props["seq"]["maximum"] == MAX_INT64
    assert props["volume"]["maximum"] == MAX_VOLUME
    assert props["bid_size"]["maximum"] == props["ask_size"]["maximum"] == MAX_INT32
    assert props["price"]["exclusiveMaximum"] == props["bid"]["exclusiveMaximum"] == MAX_PRICE
    assert props["ask"]["exclusiveMaximum"] == MAX_PRICE


@pytest.mark.parametrize("overrides", [*_TOO_BIG, *_PRICE_TOO_BIG])
def test_decode_dead_letters_values_beyond_the_limits(overrides: dict[str, object]) -> None:
    good = raw_tick_json()
    bad = raw_tick_json(**overrides)
    batch, dead = decode_batch([good, bad, good])
    assert len(batch) == 2
    assert [(d.kind, d.raw) for d in dead] == [("malformed", bad)]


def test_archive_counts_an_oversized_tick_and_still_encodes_the_batch() -> None:
    before = ARCHIVE_REJECTED._value.get()
    out = decode_for_archive([raw_tick_json(), raw_tick_json(seq=MAX_INT64 + 1), raw_tick_json(bid_size=MAX_INT32 + 1)])
    assert ARCHIVE_REJECTED._value.get() == before + 2
    assert [len(b) for b in out] == [1]
    copy_payload(tick_columns(out))  # no ValueError/OverflowError for the table's column types


def test_archive_rejects_ticks_too_far_ahead_of_the_clock_as_the_bars_flow_does() -> None:
    now = T0 + 60_000
    before = ARCHIVE_REJECTED._value.get()
    out = decode_for_archive([raw_tick_json(timestamp=T0), raw_tick_json(timestamp=9_999_999_999_999)], now)
    assert ARCHIVE_REJECTED._value.get() == before + 1
    assert [b.timestamps.tolist() for b in out] == [[T0]]


def test_decode_keeps_ticks_at_the_limits() -> None:
    batch, dead = decode_batch([raw_tick_json(seq=MAX_INT64, bid_size=MAX_INT32, ask_size=MAX_INT32)])
    assert dead == []
    copy_payload(tick_columns([batch]))
