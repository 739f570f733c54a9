"""The Rust scanner :mod:`tickscan` against msgspec, the decoder it stands in for.

Two properties make the fast path safe: the scanner accepts no value msgspec (``WireTick``) would reject, and
for every value it accepts it yields exactly msgspec's numbers. It declines everything else (another layout, a
field out of range, a value that is not ``bytes``), and :func:`flows.decode.decode_batch` decodes those values
with msgspec (a valid tick in another layout) or rejects them with msgspec's reason.
"""

from __future__ import annotations

import json

import msgspec
import numpy as np
import pytest
import tickscan
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.tick import (
    MAX_INT32,
    MAX_INT64,
    MAX_PRICE,
    MAX_TICKER_CHARS,
    MAX_TIMESTAMP_MS,
    MAX_VOLUME,
    MIN_TIMESTAMP_MS,
)
from flows.decode import WireTick, decode_batch

_DECODER = msgspec.json.Decoder(WireTick)
_ENCODER = msgspec.json.Encoder()
_FIELDS = ("seq", "timestamp", "price", "bid", "ask", "bid_size", "ask_size", "volume")


def _scan_one(raw: bytes) -> dict[str, object] | None:
    names, declined, codes, *columns = tickscan.scan([raw])
    if declined:
        assert declined == [0]
        assert np.frombuffer(codes, dtype=np.int64).tolist() == [-1]
        return None
    dtypes = (np.int64, np.int64, np.float64, np.float64, np.float64, np.int64, np.int64, np.int64)
    values = [np.frombuffer(c, dtype=d)[0].item() for c, d in zip(columns, dtypes, strict=True)]
    assert np.frombuffer(codes, dtype=np.int64).tolist() == [0]
    return {"ticker": names[0], **dict(zip(_FIELDS, values, strict=True))}


def _msgspec_one(raw: bytes) -> dict[str, object] | None:
    try:
        tick = _DECODER.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None
    return {name: getattr(tick, name) for name in ("ticker", *_FIELDS)}


def _tick(**fields: object) -> bytes:
    base: dict[str, object] = {
        "ticker": "AAPL",
        "seq": 7,
        "timestamp": 1_705_276_800_123,
        "price": 187.25,
        "bid": 187.24,
        "ask": 187.26,
        "bid_size": 300,
        "ask_size": 200,
        "volume": 100,
        "version": 1,
    }
    base.update(fields)
    return _ENCODER.encode(base)


def test_limits_are_the_contracts() -> None:
    assert tickscan.LIMITS == {
        "max_ticker_chars": MAX_TICKER_CHARS,
        "min_ts_ms": MIN_TIMESTAMP_MS,
        "max_ts_ms": MAX_TIMESTAMP_MS,
        "max_price": MAX_PRICE,
        "max_seq": MAX_INT64,
        "max_quote_size": MAX_INT32,
        "max_volume": MAX_VOLUME,
    }


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"ticker": "X"},
        {"ticker": "A" * MAX_TICKER_CHARS},
        {"ticker": "BRK.B"},
        {"ticker": "a b~!#$%&'()*+,-./:;<=>?@[]^_`{|}"[:32]},
        {"seq": 0},
        {"seq": MAX_INT64},
        {"timestamp": MIN_TIMESTAMP_MS},
        {"timestamp": MAX_TIMESTAMP_MS},
        {"price": 0.01, "bid": 0.01, "ask": 0.02},
        {"price": 999_999_999.99, "bid": 999_999_999.98, "ask": 999_999_999.99},
        {"price": 150},  # an integer where a float is expected: msgspec accepts it, so may the scanner
        {"bid_size": 0, "ask_size": MAX_INT32},
        {"volume": 0},
        {"volume": MAX_VOLUME},
    ],
)
def test_canonical_values_in_range_are_scanned_exactly(fields: dict[str, object]) -> None:
    raw = _tick(**fields)
    assert _scan_one(raw) is not None, raw
    assert _scan_one(raw) == _msgspec_one(raw)


@pytest.mark.parametrize(
    "raw",
    [
        # out of range: msgspec rejects these (most with a reason), the scanner declines
        _tick(ticker=""),
        _tick(ticker="A" * (MAX_TICKER_CHARS + 1)),
        _tick(seq=MAX_INT64 + 1),
        _tick(seq=10**19),
        _tick(timestamp=MIN_TIMESTAMP_MS - 1),
        _tick(timestamp=MAX_TIMESTAMP_MS + 1),
        _tick(price=0),
        _tick(price=1e9),
        _tick(price=1_000_000_000),
        _tick(bid_size=MAX_INT32 + 1),
        _tick(volume=MAX_VOLUME + 1),
        _tick(version=2),
        # valid for msgspec, but not the canonical layout: the scanner declines, msgspec decodes
        json.dumps(json.loads(_tick())).encode(),  # ", " and ": "
        _tick() + b" ",
        b" " + _tick(),
        _tick(ticker="\u00c9TF"),  # non-ASCII
        _tick().replace(b'"AAPL"', b'"\\u0041APL"'),  # an escape
        _tick().replace(b'"version":1', b'"version":1,"venue":"X"'),  # an unknown field
        _tick().replace(b'{"ticker":"AAPL",', b"{").replace(b"}", b',"ticker":"AAPL"}'),  # another key order
        _tick().replace(b'"volume":100', b'"volume":1e2'),
        _tick().replace(b'"price":187.25', b'"price":1.8725e2'),
        _tick().replace(b'"seq":7', b'"seq":-0'),
        _tick().replace(b'"seq":7', b'"seq":07'),
        _tick().replace(b'"price":187.25', b'"price":0187.25'),
        _tick().replace(b'"price":187.25', b'"price":187.'),
        _tick().replace(b'"price":187.25', b'"price":.25'),
        _tick().replace(b'"price":187.25', b'"price":-187.25'),
        _tick().replace(b'"price":187.25', b'"price":+187.25'),
        _tick().replace(b'"price":187.25', b'"price":Infinity'),
        _tick().replace(b'"price":187.25', b'"price":NaN'),
        _tick().replace(b'"volume":100', b'"volume":100.0'),
        _tick().replace(b'"version":1', b'"version":1.0'),
        _tick().replace(b'"version":1', b'"version":true'),
        _tick()[:-1],
        _tick() + b"}",
        b"",
        b"{}",
    ],
)
def test_anything_else_is_declined(raw: bytes) -> None:
    assert _scan_one(raw) is None


@pytest.mark.parametrize(
    "text",
    [
        b"187.250000000000000000001",
        b"187.2500",
        b"0.1000000000000000055511151231257827",
        # the fast path (digits as an integer of at most 2**53, one division) and its edges
        b"90071992.54740992",  # 2**53 as the digits
        b"90071992.54740993",  # 2**53 + 1: str::parse
        b"90071992.547409915",  # 17 digits above 2**53
        b"0.000000000000000001",  # 18 digits after the point
        b"0.0000000000000000001",  # 19
        b"123456789.0123456789",  # 19 digits, above 2**53
        b"0.3",
        b"999999999.99",
        b"5",
    ],
)
def test_long_decimals_round_like_msgspec(text: bytes) -> None:
    raw = _tick().replace(b'"price":187.25', b'"price":' + text)
    assert _scan_one(raw) is not None
    assert _scan_one(raw) == _msgspec_one(raw)


@given(st.integers(1, 10**19 - 1), st.integers(0, 18))
@settings(max_examples=500)
def test_decimals_of_up_to_19_digits_are_correctly_rounded(digits: int, after: int) -> None:
    """Any split of up to 19 digits around the point (below and above the fast path's 2**53): msgspec's
    value, which is the correctly rounded one."""
    text = str(digits).rjust(after + 1, "0")
    number = f"{text[: len(text) - after]}.{text[len(text) - after :]}" if after else text
    raw = _tick().replace(b'"price":187.25', b'"price":' + number.encode())
    if float(number) >= MAX_PRICE:
        assert _scan_one(raw) is None
        return
    assert _scan_one(raw) == _msgspec_one(raw)
    assert _scan_one(raw)["price"] == float(number)  # type: ignore[index]


def test_values_are_declined_one_by_one() -> None:
    good = _tick()
    assert tickscan.scan([good, good])[1] == []
    names, declined, codes, seqs, *_ = tickscan.scan(
        [good, _tick(price=0), bytearray(good), "text", _tick(ticker="B", seq=9)]  # type: ignore[list-item]
    )
    assert declined == [1, 2, 3]
    assert names == ["AAPL", "B"]
    assert np.frombuffer(codes, dtype=np.int64).tolist() == [0, -1, -1, -1, 1]
    assert np.frombuffer(seqs, dtype=np.int64).tolist() == [7, 0, 0, 0, 9]


def test_codes_index_names_in_order_of_first_appearance() -> None:
    values = [_tick(ticker=t, seq=i) for i, t in enumerate(["B", "A", "B", "C", "A"])]
    names, declined, codes, seqs, *_ = tickscan.scan(values)
    assert (names, declined) == (["B", "A", "C"], [])
    assert np.frombuffer(codes, dtype=np.int64).tolist() == [0, 1, 0, 2, 1]
    assert np.frombuffer(seqs, dtype=np.int64).tolist() == [0, 1, 2, 3, 4]
    names, declined, *columns = tickscan.scan([])
    assert (names, declined) == ([], [])
    assert all(len(column) == 0 for column in columns)


def _mostly(valid: st.SearchStrategy[object], other: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    """``valid`` nine times in ten, so that whole ticks in range are common."""
    return st.integers(0, 9).flatmap(lambda k: other if k == 0 else valid)


_cents = st.integers(1, 99_999_999_999).map(lambda c: c / 100)
_prices = _mostly(
    _cents,
    st.one_of(
        st.integers(0, 100_000_000_000).map(lambda c: c / 100),  # beyond the bound too
        st.floats(min_value=0, max_value=2e9, allow_nan=False),  # any float msgspec writes (1e-05, 1.5e+20 ...)
        st.integers(0, 2_000_000_000),
    ),
)
_ticks = st.fixed_dictionaries(
    {
        "ticker": _mostly(
            st.text(
                st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters='"\\'), min_size=1, max_size=32
            ),
            st.text(st.characters(min_codepoint=0x00, max_codepoint=0x2FF), min_size=0, max_size=34),
        ),
        "seq": _mostly(st.integers(0, MAX_INT64), st.integers(MAX_INT64 - 2, 2**64)),
        "timestamp": _mostly(st.integers(MIN_TIMESTAMP_MS, MAX_TIMESTAMP_MS), st.integers(0, 2 * MAX_TIMESTAMP_MS)),
        "price": _prices,
        "bid": _prices,
        "ask": _prices,
        "bid_size": _mostly(st.integers(0, MAX_INT32), st.integers(MAX_INT32 - 2, 2**32)),
        "ask_size": _mostly(st.integers(0, MAX_INT32), st.integers(MAX_INT32 - 2, 2**32)),
        "volume": _mostly(st.integers(0, MAX_VOLUME), st.integers(MAX_VOLUME - 2, 2**64)),
        "version": _mostly(st.just(1), st.integers(0, 3)),
    }
)


def _encode(fields: dict[str, object]) -> bytes:
    """``fields`` in the contract's key order, as msgspec writes them (the canonical layout when all fit)."""
    return _ENCODER.encode({name: fields[name] for name in ("ticker", *_FIELDS, "version")})


@settings(max_examples=2000, deadline=None)
@given(_ticks)
def test_scanner_agrees_with_msgspec_on_encoded_ticks(fields: dict[str, object]) -> None:
    raw = _encode(fields)
    scanned = _scan_one(raw)
    if scanned is not None:
        assert scanned == _msgspec_one(raw)


@settings(max_examples=3000, deadline=None)
@given(st.data())
def test_scanner_never_accepts_what_msgspec_rejects(data: st.DataObject) -> None:
    """Canonical values with random edits: whatever the scanner still accepts, msgspec reads the same."""
    raw = bytearray(_encode(data.draw(_ticks)))
    alphabet = st.sampled_from(list(b'0123456789.-+eE ",:{}[]\\atrunl') + [0xC3, 0x00, 0x7F])
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(raw)))
        action = data.draw(st.sampled_from(["insert", "delete", "replace"]))
        byte = data.draw(alphabet)
        if action == "insert":
            raw.insert(at, byte)
        elif at < len(raw):
            if action == "delete":
                del raw[at]
            else:
                raw[at] = byte
    value = bytes(raw)
    scanned = _scan_one(value)
    if scanned is not None:
        assert scanned == _msgspec_one(value), value


def test_declined_values_are_decoded_by_msgspec_in_place() -> None:
    """Ticks in another layout among canonical ones: every tick kept, in arrival order, with msgspec's values."""
    fields = [
        {"ticker": t, "seq": i, "timestamp": 1_705_276_800_000 + 7 * i, "price": 100 + i / 100, "volume": i}
        for i, t in enumerate(["AAA", "BBB", "AAA", "CCC", "BBB", "AAA", "DDD"])
    ]
    canonical = [_tick(**f) for f in fields]
    spaced = [json.dumps(json.loads(v)).encode() for v in canonical]
    mixed = [spaced[i] if i in (1, 3, 6) else v for i, v in enumerate(canonical)]  # CCC and DDD only spaced
    bad = b'{"ticker": "EEE"}'
    for values in (canonical, spaced, mixed, [*mixed[:4], bad, *mixed[4:]]):
        batch, dead = decode_batch(values)
        assert [d.raw for d in dead] == ([bad] if bad in values else [])
        assert batch.raws == [v for v in values if v != bad]
        assert batch.tickers == [f["ticker"] for f in fields]
        assert sorted(batch.names) == ["AAA", "BBB", "CCC", "DDD"]
        assert batch.seqs.tolist() == [f["seq"] for f in fields]
        assert batch.timestamps.tolist() == [f["timestamp"] for f in fields]
        assert batch.cents.tolist() == [round(f["price"] * 100) for f in fields]  # type: ignore[operator]
        assert batch.volumes.tolist() == [f["volume"] for f in fields]
        assert batch.bid_sizes.tolist() == [300] * 7
        assert [t.seq for t in batch.ticks] == [f["seq"] for f in fields]
        assert dict(zip(*batch.tally(), strict=True)) == {"AAA": 3, "BBB": 2, "CCC": 1, "DDD": 1}


def test_scanned_batch_with_a_cross_field_problem_keeps_the_rest() -> None:
    """The scanner checks ranges only; bid >= ask and the cent grid are checked after it, on the columns."""
    values = [_tick(seq=0), _tick(seq=1, bid=187.26, ask=187.26), _tick(seq=2, ticker="MSFT", price=187.255)]
    batch, dead = decode_batch(values)
    assert [d.reason for d in dead] == [
        "need 0 < bid < ask, got bid=187.26 ask=187.26",
        "price 187.255 is not on the $0.01 grid",
    ]
    assert [d.raw for d in dead] == values[1:]
    assert batch.seqs.tolist() == [0]
    assert batch.tickers == ["AAPL"]
    assert batch.tally() == (["AAPL"], [1])  # MSFT had no valid tick
    assert [t.seq for t in batch.ticks] == [0]
