"""Tick factories shared by the tests (import as ``from tests.ticks import ...``).

Two kinds: the contract's example tick with fields overridden (:func:`sample_tick`, :func:`sample_bytes`, and
:func:`raw_tick_json` for values the contract would reject), and a valid tick at a given price with the quote one
cent either side (:func:`make_tick`, :func:`tick_bytes`, :func:`wire_tick`). Pure: no network, usable from unit tests.
"""

from __future__ import annotations

import json

from contracts.tick import TICK_SCHEMA_VERSION, Tick, encode_tick
from flows.decode import WireTick

#: the timestamp of the contract's example tick (2024-01-15T11:30:45.123Z)
T0 = 1_705_318_245_123

#: the fields of the contract's example tick (``contracts/tick.py``), without ``version``
SAMPLE_FIELDS: dict[str, object] = {
    "ticker": "SYNTH", "seq": 1, "timestamp": T0, "price": 152.34, "bid": 152.33, "ask": 152.35,
    "bid_size": 300, "ask_size": 500, "volume": 12_500, "version": 1,
}  # fmt: skip


def tick_fields(**overrides: object) -> dict[str, object]:
    """The example tick's fields with ``overrides`` applied (a fresh dict)."""
    return {**SAMPLE_FIELDS, **overrides}


def sample_tick(**overrides: object) -> Tick:
    """The contract's example tick with ``overrides``; raises ``ContractError`` as the contract does."""
    return Tick(**tick_fields(**overrides))  # type: ignore[arg-type]


def sample_bytes(**overrides: object) -> bytes:
    """The ``market-ticks`` value of :func:`sample_tick` with ``overrides``."""
    return encode_tick(sample_tick(**overrides))


def raw_tick_json(**overrides: object) -> bytes:
    """The example tick as a ``version: 1`` JSON value built without the contract's checks, to produce invalid
    ticks; an override of ``...`` leaves that field out."""
    fields = {"version": 1, **tick_fields(**overrides)}
    return json.dumps({k: v for k, v in fields.items() if v is not ...}).encode()


def make_tick(
    ticker: str, seq: int, timestamp: int, price: float, *, volume: int = 100, bid_size: int = 300, ask_size: int = 500
) -> Tick:
    """A valid tick at ``price`` rounded to the cent, bid and ask one cent below and above it."""
    p = round(price, 2)
    return Tick(
        ticker=ticker,
        seq=seq,
        timestamp=timestamp,
        price=p,
        bid=round(p - 0.01, 2),
        ask=round(p + 0.01, 2),
        bid_size=bid_size,
        ask_size=ask_size,
        volume=volume,
        version=TICK_SCHEMA_VERSION,
    )


def tick_bytes(
    ticker: str, seq: int, timestamp: int, price: float, *, volume: int = 100, bid_size: int = 300, ask_size: int = 500
) -> bytes:
    """The ``market-ticks`` value of :func:`make_tick` with the same arguments."""
    return encode_tick(make_tick(ticker, seq, timestamp, price, volume=volume, bid_size=bid_size, ask_size=ask_size))


def wire_tick(
    ticker: str, seq: int, timestamp: int, price: float, *, volume: int = 100, bid_size: int = 300, ask_size: int = 500
) -> WireTick:
    """The flows' decoded form (:class:`flows.decode.WireTick`) of :func:`make_tick` with the same arguments."""
    t = make_tick(ticker, seq, timestamp, price, volume=volume, bid_size=bid_size, ask_size=ask_size)
    return WireTick(t.ticker, t.seq, t.timestamp, t.price, t.bid, t.ask, t.bid_size, t.ask_size, t.volume, t.version)
