"""The wire contracts: invariants at construction, exact price formatting, and agreement with the JSON Schemas."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.errors import ContractError
from contracts import Bar, Indicators, decode_bar, decode_tick, encode_bar, encode_tick
from contracts.tick import MAX_TICKER_CHARS, SYMBOL_RE, ticker_problem
from tests.ticks import sample_tick

SCHEMAS = Path(__file__).resolve().parents[2] / "contracts" / "schemas"


def _schema(name: str) -> jsonschema.protocols.Validator:
    schema = json.loads((SCHEMAS / name).read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def test_tick_round_trips_and_matches_schema() -> None:
    raw = encode_tick(sample_tick())
    assert decode_tick(raw) == sample_tick()
    _schema("tick.v1.json").validate(json.loads(raw))
    assert b'"price":152.34' in raw


@given(cents=st.integers(min_value=1, max_value=10**9))
def test_prices_on_the_cent_grid_are_written_exactly(cents: int) -> None:
    price = cents / 100
    raw = encode_tick(sample_tick(price=price, bid=price, ask=(cents + 1) / 100))
    text = json.loads(raw)
    assert round(text["price"] * 100) == cents
    written = raw.split(b'"price":')[1].split(b",")[0].decode()
    assert len(written.partition(".")[2]) <= 2, written


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"price": 0.0}, "price must be > 0"),
        ({"bid": 152.35, "ask": 152.35}, "bid < ask"),
        ({"price": 152.345}, "not on the $0.01 grid"),
        ({"price": 0.1 + 0.2, "bid": 0.29, "ask": 0.31}, "not on the $0.01 grid"),
        ({"price": 0.3, "bid": 0.3, "ask": 0.1 + 0.2}, "not on the $0.01 grid"),
        ({"price": 700_000.12, "bid": 700_000.123, "ask": 700_000.13}, "not on the $0.01 grid"),
        ({"volume": -1}, "sizes must be >= 0"),
        ({"timestamp": 1_705_318_245}, "epoch milliseconds"),
        ({"version": 2}, "unsupported version"),
        ({"ticker": ""}, "ticker must be"),
        ({"ticker": "A\x00B"}, "control characters"),
        ({"ticker": "A\nB"}, "control characters"),
        ({"ticker": "A\x7f"}, "control characters"),
    ],
)
def test_invalid_ticks_are_rejected_with_a_reason(change: dict[str, object], reason: str) -> None:
    with pytest.raises(ContractError, match=reason.replace("$", r"\$").replace(".", r"\.")):
        sample_tick(**change)
    bad = msgspec.json.encode({**msgspec.structs.asdict(sample_tick()), **change})
    with pytest.raises(ContractError, match="does not match contract"):
        decode_tick(bad)


def test_a_tick_without_version_is_rejected() -> None:
    fields = msgspec.structs.asdict(sample_tick())
    del fields["version"]
    with pytest.raises(ContractError, match="version"):
        decode_tick(msgspec.json.encode(fields))


@pytest.mark.parametrize("raw", [b"not json", b"{}", b'{"ticker": 1}', b"[1,2]", b""])
def test_malformed_bytes_raise_contract_error(raw: bytes) -> None:
    with pytest.raises(ContractError):
        decode_tick(raw)


def _bar(**kw: object) -> Bar:
    base: dict[str, object] = {
        "ticker": "SYNTH",
        "timeframe": "5m",
        "start": 1_705_318_200_000,
        "end": 1_705_318_500_000,
        "open": 150.0,
        "high": 151.0,
        "low": 149.5,
        "close": 150.5,
        "volume": 1000,
        "vwap": 150.2,
        "trades": 10,
        "first_tick": 1_705_318_200_100,
        "last_tick": 1_705_318_499_900,
        "final": True,
        "indicators": Indicators(sma_20=150.1),
    }
    base.update(kw)
    return Bar(**base)  # type: ignore[arg-type]


def test_bar_round_trips_and_matches_schema() -> None:
    raw = encode_bar(_bar())
    assert decode_bar(raw) == _bar()
    _schema("bar.v1.json").validate(json.loads(raw))
    _schema("bar.v1.json").validate(json.loads(encode_bar(_bar(final=False, indicators=None))))


@pytest.mark.parametrize(
    "change",
    [
        {"low": 150.1},  # low above open
        {"high": 150.4},  # high below close
        {"vwap": 152.0},  # vwap outside [low, high]
        {"start": 1_705_318_200_001, "end": 1_705_318_500_001},  # not aligned
        {"timeframe": "2m"},
        {"trades": 0},
        {"last_tick": 1_705_318_500_000},  # outside the half-open window
        {"ticker": ""},
        {"ticker": "X" * 33},
        {"ticker": "X\x00"},
        {"open": -1.0, "high": -1.0, "low": -1.0, "close": -1.0, "vwap": -1.0},  # bar.v1.json: prices > 0
        {"open": 0.0, "high": 0.0, "low": 0.0, "close": 0.0, "vwap": 0.0},
    ],
)
def test_invalid_bars_are_rejected(change: dict[str, object]) -> None:
    with pytest.raises(ContractError):
        _bar(**change)


def test_symbol_syntax_is_the_tickers_table_check() -> None:
    sql = (Path(__file__).resolve().parents[2] / "sql" / "0001_tickers.sql").read_text()
    assert f"CHECK (ticker ~ '{SYMBOL_RE.pattern}')" in sql
    assert SYMBOL_RE.match("A" * MAX_TICKER_CHARS)
    assert not SYMBOL_RE.match("A" * (MAX_TICKER_CHARS + 1))


def test_invalid_utf8_is_a_contract_error_for_every_message() -> None:
    """msgspec raises a plain UnicodeDecodeError for bad UTF-8 in a string; consumers only catch ContractError."""
    from contracts.anomaly import decode_anomaly  # noqa: PLC0415 -- the third contract, only here

    tick = encode_tick(sample_tick()).replace(b'"SYNTH"', b'"SY\xc3"')
    bar = encode_bar(_bar()).replace(b'"ticker":"SYNTH"', b'"ticker":"SY\xff"')
    assert b"\xff" in bar
    for decode, raw in ((decode_tick, tick), (decode_bar, bar), (decode_anomaly, b'{"ticker":"\xc3"}')):
        with pytest.raises(ContractError, match=r"not valid JSON \(contract v1\): invalid UTF-8 in a string near"):
            decode(raw)  # type: ignore[operator]


def test_every_schema_bounds_the_ticker_as_the_code_does() -> None:
    samples = ["SYNTH", "BRK.B", "a b", "Ä", "😀", "A\x00B", "\x01", "A\x1f", "A\x7f", "A\x80", "\t", "X\n"]
    for name in ("tick.v1.json", "bar.v1.json", "anomaly.v1.json"):
        ticker = _schema(name).schema["properties"]["ticker"]
        assert (ticker["minLength"], ticker["maxLength"]) == (1, MAX_TICKER_CHARS), name
        schema = jsonschema.Draft202012Validator(ticker)
        for sample in samples:  # the schema's pattern (ECMA-262) and the code's (Python re) agree
            assert schema.is_valid(sample) == (ticker_problem(sample) is None), (name, sample)
    assert [s for s in samples if ticker_problem(s) is None] == ["SYNTH", "BRK.B", "a b", "Ä", "😀", "A\x80"]
