"""Universe config validation (property-based) and the generator."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.errors import ConfigError
from simulator.microstructure import MicrostructureParams, base_spread_cents
from simulator.settings import SimulatorSettings
from simulator.universe import Universe, UniverseConfig, load_universe, parse_universe, universe_to_yaml

BASE = {"symbol": "AAA", "start_price": 10.0, "volatility": 0.2}


def test_default_preset_has_seed_tickers(default_universe: Universe) -> None:
    assert default_universe.symbols == ["SYNTH", "TECH", "FINANCE", "ENERGY", "HEALTH"]
    t = default_universe.tickers[1]
    assert (t.name, t.sector, t.start_price, t.drift, t.volatility) == (
        "Tech Innovations",
        "Technology",
        320.0,
        0.08,
        0.30,
    )


@settings(max_examples=60, deadline=None)
@given(
    field=st.sampled_from(["start_price", "volatility"]),
    value=st.one_of(st.floats(max_value=0.0, allow_nan=False), st.just(math.nan), st.just(math.inf)),
)
def test_invalid_ticker_numbers_fail_naming_field_and_value(field: str, value: float) -> None:
    data = {"tickers": [{**BASE, field: value}]}
    with pytest.raises(ConfigError) as info:
        parse_universe(data)
    assert f"tickers.0.{field}" in str(info.value)
    assert repr(value) in str(info.value)


@settings(max_examples=60, deadline=None)
@given(symbol=st.text(min_size=0, max_size=40).filter(lambda s: not s.isupper() or " " in s or len(s) > 32 or not s))
def test_bad_symbols_rejected(symbol: str) -> None:
    from simulator.universe import SYMBOL_RE

    if SYMBOL_RE.match(symbol):
        return
    with pytest.raises(ConfigError, match="symbol"):
        parse_universe({"tickers": [{**BASE, "symbol": symbol}]})


@settings(max_examples=40, deadline=None)
@given(vol=st.floats(0.01, 2.0), loading=st.floats(-1.0, 1.0), price=st.floats(0.01, 1e6))
def test_valid_configs_build(vol: float, loading: float, price: float) -> None:
    data = {
        "factors": ["market"],
        "tickers": [{**BASE, "volatility": vol, "start_price": price, "loadings": {"market": loading * 0.99}}],
    }
    u = parse_universe(data)
    assert len(u) == 1
    assert np.isfinite(u.implied_correlation()).all()


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"tickers": [BASE, BASE]}, "duplicate ticker symbol 'AAA'"),
        ({"tickers": [{**BASE, "loadings": {"nope": 0.3}}]}, "unknown factor"),
        ({"tickers": [{**BASE, "colour": "red"}]}, "tickers.0.colour"),
        ({"factors": ["m", "s"], "factor_correlation": [[1, 0.5], [0.5]], "tickers": [BASE]}, "factor_correlation"),
        ({"factors": ["m", "s"], "factor_correlation": [[1, 2], [2, 1]], "tickers": [BASE]}, "positive definite"),
        ({"tickers": [{**BASE, "jumps": {"intensity": 100, "mean": -0.1, "std": 0.1}}]}, "jump variance"),
        ({"tickers": []}, "at least one ticker"),
    ],
)
def test_invalid_universe_messages(data: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(")):
        parse_universe(data)


def test_ten_thousand_tickers_load() -> None:
    u = load_universe("large")
    assert len(u) == 10_000
    assert len(set(u.symbols)) == 10_000
    assert u.factor_structure.betas.shape == (10_000, 7)


def test_generated_universe_round_trips_through_yaml() -> None:
    import yaml

    cfg = UniverseConfig(factors=["market", "tech"], generate={"count": 20, "seed": 1})
    u = parse_universe(yaml.safe_load(universe_to_yaml(cfg)))
    assert len(u) == 20


def test_spread_wider_with_volatility_and_lower_price() -> None:
    p = MicrostructureParams()
    prices = np.array([100_00, 100_00, 10_00], dtype=np.int64)
    sig = np.array([0.2, 0.6, 0.2])
    s = base_spread_cents(prices, sig, p)
    assert s[1] > s[0]
    assert s[2] / prices[2] > s[0] / prices[0]
    assert (s >= 1).all()


def test_settings_reject_bad_tick_rate() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="tick_rate"):
        SimulatorSettings(tick_rate=3)
    assert SimulatorSettings(tick_rate=4).tick_ms == 250


@pytest.fixture(scope="module")
def default_universe() -> Universe:
    return load_universe("default")
