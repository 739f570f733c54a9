"""The public wire contracts: Tick, Bar and Alert messages, their JSON codecs and JSON Schemas.

Other teams build Kafka consumers on these formats, so every change here is a versioned contract change
(see ``docs/contracts.md``). Timestamps on the wire are integer epoch milliseconds (UTC); prices are JSON
numbers on the $0.01 grid, written with at most two decimals.
"""

from contracts.bar import (
    BAR_SCHEMA_VERSION,
    TIMEFRAMES,
    Bar,
    Indicators,
    decode_bar,
    encode_bar,
    timeframe_ms,
)
from contracts.tick import TICK_SCHEMA_VERSION, Tick, decode_tick, encode_tick

__all__ = [
    "BAR_SCHEMA_VERSION",
    "TICK_SCHEMA_VERSION",
    "TIMEFRAMES",
    "Bar",
    "Indicators",
    "Tick",
    "decode_bar",
    "decode_tick",
    "encode_bar",
    "encode_tick",
    "timeframe_ms",
]
