"""The ``market-ticks`` message, version 1: one trade print with the quote around it.

Key: the ticker (UTF-8). Value: a JSON object, see ``contracts/schemas/tick.v1.json``::

    {"version":1,"ticker":"SYNTH","seq":42,"timestamp":1705318245123,"price":152.34,
     "bid":152.33,"ask":152.35,"bid_size":300,"ask_size":500,"volume":12500}

Invariants checked at construction and on decode: ``version`` present and 1, ``price > 0``, ``0 < bid <
ask``, prices exactly on the $0.01 grid (see :func:`on_cent_grid`), sizes and volume ``>= 0``, ``seq >= 0``,
``timestamp`` an epoch-millisecond integer. Limits (clarifications of v1, see docs/contracts.md): ``seq`` at
most :data:`MAX_INT64`, ``bid_size`` and ``ask_size`` at most :data:`MAX_INT32` (the ``bigint``/``integer``
columns of ``market_ticks``), ``volume`` at most :data:`MAX_VOLUME` and prices below :data:`MAX_PRICE`.
"""

from __future__ import annotations

import math
import re
from typing import Annotated

import msgspec

from common.errors import ContractError
from contracts.codec import decode_message

TICK_SCHEMA_VERSION = 1
#: 2001-09-09 .. 2286-11-20 in epoch ms: catches seconds or microseconds sent by mistake.
MIN_TIMESTAMP_MS = 1_000_000_000_000
MAX_TIMESTAMP_MS = 9_999_999_999_999
#: Storage limits of v1 (clarification): ``seq``/``volume`` fit a ``bigint``, ``bid_size``/``ask_size`` an ``integer``.
MAX_INT64 = 2**63 - 1
MAX_INT32 = 2**31 - 1
#: Largest ``volume`` of a tick (clarification of v1): beyond 2**53 a JSON number loses integer precision in most
#: consumers (JavaScript, float parsers).
MAX_VOLUME = 2**53
#: Prices (``price``, ``bid``, ``ask``) are below this (clarification of v1): no instrument trades near it, and it
#: keeps every price's cents exact and far from the arithmetic limits of the bars (cents x volume sums).
MAX_PRICE = 1e9
#: Longest ticker of any v1 message (tick, bar, anomaly: the JSON Schemas' ``maxLength``).
MAX_TICKER_CHARS = 32
#: Characters no ticker may hold: the C0 controls and DEL. PostgreSQL's ``text`` cannot store NUL at all, so a
#: tick or bar naming such a ticker could never be written and would stop a flow at every replay; no symbol
#: anywhere has one (the JSON Schemas say it as ``"not": {"pattern": <any such character>}``, which means the same
#: under every regex dialect; an anchored pattern's ``$`` would not).
TICKER_PATTERN = r"^[^\x00-\x1f\x7f]+\Z"  # \Z, not $: in Python $ also matches before a final newline
_TICKER_RE = re.compile(TICKER_PATTERN)
#: A ticker field as msgspec checks it on decode (1 to :data:`MAX_TICKER_CHARS` characters, no control ones).
Ticker = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_TICKER_CHARS, pattern=TICKER_PATTERN)]
#: The symbol syntax of this platform (universes, the ``tickers`` table's CHECK in ``sql/0001_tickers.sql``, the
#: gateway): upper-case letters and digits, then also ``.``, ``_`` and ``-``, at most :data:`MAX_TICKER_CHARS`.
#: Stricter than the wire contract, which only bounds the length; no such symbol needs escaping in JSON.
SYMBOL_RE = re.compile(rf"^[A-Z0-9][A-Z0-9._-]{{0,{MAX_TICKER_CHARS - 1}}}$")


def on_cent_grid(value: float) -> bool:
    """True when ``value`` is exactly the float a two-decimal number parses to (``152.34``, never ``0.1 + 0.2``).

    Exact, no tolerance: ``round(value * 100) / 100`` is the nearest float to a whole number of cents (IEEE
    division rounds correctly), and for a two-decimal JSON number that is the very float the parser produced
    (the rounding error of ``value * 100`` stays far below half a cent for any price under 2**51 cents).
    """
    return round(value * 100.0) / 100.0 == value


class Tick(msgspec.Struct, frozen=True, gc=False, forbid_unknown_fields=False):
    """One tick. Construct with keyword arguments; invalid values raise :class:`ContractError`."""

    ticker: str
    seq: int
    timestamp: int
    price: float
    bid: float
    ask: float
    bid_size: int
    ask_size: int
    volume: int
    #: required on the wire (tick.v1.json): a message without it is rejected like an unknown version
    version: int

    def __post_init__(self) -> None:
        problem = tick_problem(self)
        if problem is not None:
            msg = f"invalid tick for {self.ticker!r} seq={self.seq!r}: {problem}"
            raise ContractError(msg)


def ticker_problem(ticker: str) -> str | None:
    """Why ``ticker`` is not a valid ticker of a v1 message (tick, bar, anomaly), or None."""
    if not ticker or len(ticker) > MAX_TICKER_CHARS:
        return f"ticker must be 1-{MAX_TICKER_CHARS} characters, got {ticker!r}"
    if _TICKER_RE.match(ticker) is None:
        return f"ticker must not contain control characters (U+0000-U+001F, U+007F), got {ticker!r}"
    return None


def tick_problem(t: Tick) -> str | None:
    """The first broken invariant of ``t`` as a short reason, or None when the tick is valid."""
    if t.version != TICK_SCHEMA_VERSION:
        return f"unsupported version {t.version!r} (expected {TICK_SCHEMA_VERSION})"
    problem = ticker_problem(t.ticker)
    if problem is not None:
        return problem
    if not (math.isfinite(t.price) and 0 < t.price < MAX_PRICE):
        return f"price must be > 0 and < {MAX_PRICE:.0f}, got {t.price!r}"
    if not (math.isfinite(t.bid) and math.isfinite(t.ask) and 0 < t.bid < t.ask):
        return f"need 0 < bid < ask, got bid={t.bid!r} ask={t.ask!r}"
    if t.ask >= MAX_PRICE:
        return f"ask must be < {MAX_PRICE:.0f}, got {t.ask!r}"
    for name, value in (("price", t.price), ("bid", t.bid), ("ask", t.ask)):
        if not on_cent_grid(value):
            return f"{name} {value!r} is not on the $0.01 grid"
    if t.volume < 0 or t.bid_size < 0 or t.ask_size < 0:
        return f"sizes must be >= 0, got volume={t.volume!r} bid_size={t.bid_size!r} ask_size={t.ask_size!r}"
    if t.bid_size > MAX_INT32 or t.ask_size > MAX_INT32:
        return f"bid_size and ask_size must be <= {MAX_INT32}, got bid_size={t.bid_size!r} ask_size={t.ask_size!r}"
    if t.volume > MAX_VOLUME:
        return f"volume must be <= {MAX_VOLUME} (2**53), got {t.volume!r}"
    if t.seq < 0:
        return f"seq must be >= 0, got {t.seq!r}"
    if t.seq > MAX_INT64:
        return f"seq must be <= {MAX_INT64}, got {t.seq!r}"
    if not MIN_TIMESTAMP_MS <= t.timestamp <= MAX_TIMESTAMP_MS:
        return f"timestamp must be epoch milliseconds, got {t.timestamp!r}"
    return None


_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(Tick)


def encode_tick(tick: Tick) -> bytes:
    """The JSON value of ``tick`` as published on ``market-ticks``."""
    return _ENCODER.encode(tick)


def decode_tick(raw: bytes) -> Tick:
    """Decode and validate one ``market-ticks`` value; raises :class:`ContractError` with the reason."""
    return decode_message(_DECODER, raw, "tick", TICK_SCHEMA_VERSION)
