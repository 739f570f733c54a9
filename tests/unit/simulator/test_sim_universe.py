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


# --------------------------------------------------------------------------- bounds (audit fixes)


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("tick_volume", 1e9, "tickers.0.tick_volume: Input should be less than or equal to 100000000"),
        ("tick_volume", 0.5, "tickers.0.tick_volume: Input should be greater than or equal to 1"),
        ("start_price", 0.004, "tickers.0.start_price: Input should be greater than or equal to 0.01"),
    ],
)
def test_ticker_bounds(field: str, value: float, needle: str) -> None:
    """tick_volume up to 1e9 overflowed the quote sizes; below one share it made 0-share prints; a start price
    below half a cent rounded to 0 cents."""
    with pytest.raises(ConfigError, match=needle):
        parse_universe({"tickers": [{**BASE, field: value}]})
    parse_universe({"tickers": [{**BASE, "tick_volume": 1, "start_price": 0.01}]})


def test_the_largest_tick_volume_quotes_fit_the_contract() -> None:
    from contracts.tick import MAX_INT32
    from simulator.microstructure import SIZE_LOTS_INT, ticker_micro
    from simulator.universe import MAX_TICK_VOLUME

    one = np.ones(1)
    coef = ticker_micro(np.array([10_000]), 0.2 * one, 1e-4 * one, MAX_TICK_VOLUME * one, one, MicrostructureParams())
    assert int(coef.lot_shares[0]) * int(SIZE_LOTS_INT.max()) <= MAX_INT32


def test_generated_names_taken_by_named_tickers_still_give_the_count() -> None:
    """Generated tickers whose name was taken used to be skipped silently: 5 asked, 4 generated."""
    named = {**BASE, "symbol": "S0001"}
    u = Universe(UniverseConfig(factors=["market"], tickers=[named], generate={"count": 5, "seed": 3}))
    assert u.symbols == ["S0001", "S0000", "S0005", "S0002", "S0003", "S0004"]
    plain = Universe(UniverseConfig(factors=["market"], generate={"count": 5, "seed": 3}))
    # every other generated ticker keeps its name and parameters; the renamed one keeps its parameters
    assert [t.start_price for t in u.tickers[1:]] == [t.start_price for t in plain.tickers]
    assert u.tickers[3].symbol == plain.tickers[2].symbol == "S0002"


def test_settings_bound_the_memory_of_a_block() -> None:
    """SIM_PRESET=large at 1000 ticks/s needs ~41 GB per block: refused at start, naming what to change."""
    SimulatorSettings(tick_rate=10).check_block_memory(10_000)  # the large preset as configured: ~390 MiB
    with pytest.raises(ConfigError, match=r"38,910 MiB of ticks .* over SIM_MAX_BLOCK_MB=1024: lower SIM_TICK_RATE"):
        SimulatorSettings(tick_rate=1000).check_block_memory(10_000)
    SimulatorSettings(tick_rate=1000, max_block_mb=40_000).check_block_memory(10_000)
