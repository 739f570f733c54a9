"""TA-Lib oracle and state tests for :mod:`flows.indicators` (TA-Lib is a test-only dependency)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import talib  # the oracle is a dev dependency: a missing install must fail, not skip

from flows.indicators import IndicatorConfig, IndicatorState

TOLERANCE = 1e-9


def random_walk_cents(n: int, seed: int, start: int = 10_000) -> np.ndarray:
    """A seeded random walk of closes in whole cents, kept positive."""
    rng = np.random.default_rng(seed)
    steps = rng.integers(-25, 26, size=n)
    return np.maximum(start + np.cumsum(steps), 100).astype(np.int64)


def run(cents: np.ndarray, config: IndicatorConfig) -> dict[str, np.ndarray]:
    """Feed the closes one by one; return each indicator as a float array with NaN for None."""
    state = IndicatorState(config)
    rows = [state.update(int(c)) for c in cents]
    names = rows[0].__struct_fields__ if rows else ()
    return {
        name: np.array([np.nan if getattr(r, name) is None else getattr(r, name) for r in rows], dtype=float)
        for name in names
    }


def oracle(cents: np.ndarray, cfg: IndicatorConfig) -> dict[str, np.ndarray]:
    close = cents / 100.0
    macd, signal, hist = talib.MACD(close, cfg.macd_fast, cfg.macd_slow, cfg.macd_signal)
    upper, middle, lower = talib.BBANDS(close, cfg.bb_period, cfg.bb_nbdev, cfg.bb_nbdev, matype=0)
    return {
        "sma_20": talib.SMA(close, cfg.sma_periods[0]),
        "sma_50": talib.SMA(close, cfg.sma_periods[1]),
        "sma_200": talib.SMA(close, cfg.sma_periods[2]),
        "ema_12": talib.EMA(close, cfg.ema_periods[0]),
        "ema_26": talib.EMA(close, cfg.ema_periods[1]),
        "rsi_14": talib.RSI(close, cfg.rsi_period),
        "macd": macd,
        "macd_signal": signal,
        "macd_hist": hist,
        "bb_upper": upper,
        "bb_middle": middle,
        "bb_lower": lower,
    }


def assert_matches(ours: dict[str, np.ndarray], theirs: dict[str, np.ndarray]) -> None:
    for name, expected in theirs.items():
        got = ours[name]
        assert np.array_equal(np.isnan(got), np.isnan(expected)), f"{name}: defined at different bars"
        np.testing.assert_allclose(got, expected, rtol=0, atol=TOLERANCE, equal_nan=True, err_msg=name)


@pytest.mark.parametrize("n", [1, 5, 13, 14, 15, 19, 20, 25, 26, 33, 34, 35, 199, 200, 201, 1_000])
@pytest.mark.parametrize("seed", [1, 2])
def test_default_periods_match_talib(n: int, seed: int) -> None:
    cents = random_walk_cents(n, seed)
    if n < 2:  # TA-Lib needs at least one element; a single bar has every indicator undefined
        ours = run(cents, IndicatorConfig())
        assert all(np.isnan(v).all() for v in ours.values())
        return
    assert_matches(run(cents, IndicatorConfig()), oracle(cents, IndicatorConfig()))


@pytest.mark.parametrize(
    "cfg",
    [
        IndicatorConfig(
            sma_periods=(5, 7, 11),
            ema_periods=(3, 9),
            rsi_period=2,
            macd_fast=3,
            macd_slow=10,
            macd_signal=4,
            bb_period=6,
            bb_nbdev=1.5,
        ),
        IndicatorConfig(
            sma_periods=(2, 3, 4),
            ema_periods=(2, 30),
            rsi_period=30,
            macd_fast=5,
            macd_slow=35,
            macd_signal=2,
            bb_period=2,
            bb_nbdev=3.0,
        ),
    ],
)
def test_configurable_periods_match_talib(cfg: IndicatorConfig) -> None:
    cents = random_walk_cents(300, seed=7)
    assert_matches(run(cents, cfg), oracle(cents, cfg))


def test_flat_prices_give_zero_deviation_and_rsi_zero() -> None:
    cents = np.full(40, 12_345, dtype=np.int64)
    ours = run(cents, IndicatorConfig())
    assert ours["bb_upper"][19] == ours["bb_middle"][19] == 123.45
    assert ours["rsi_14"][14] == 0.0
    assert_matches(ours, oracle(cents, IndicatorConfig()))


def test_no_drift_after_100k_bars() -> None:
    """Exact integer window sums keep SMA/Bollinger on TA-Lib after 100k bars (TA-Lib drifts < 1e-11)."""
    cents = random_walk_cents(100_000, seed=3, start=50_000)
    ours = run(cents, IndicatorConfig())
    theirs = oracle(cents, IndicatorConfig())
    for name in ("sma_20", "sma_200", "bb_upper", "bb_lower", "ema_26", "macd_signal", "rsi_14"):
        np.testing.assert_allclose(ours[name][-1000:], theirs[name][-1000:], rtol=0, atol=TOLERANCE)
    # and the SMA equals the exact mean of the last 20 closes
    assert ours["sma_20"][-1] == pytest.approx(cents[-20:].sum() / 2000.0, abs=1e-12)


def test_state_pickles_mid_stream_and_resumes_identically() -> None:
    cents = random_walk_cents(300, seed=11)
    straight = IndicatorState()
    expected = [straight.update(int(c)) for c in cents]
    state = IndicatorState()
    got = [state.update(int(c)) for c in cents[:150]]
    state = pickle.loads(pickle.dumps(state))
    got += [state.update(int(c)) for c in cents[150:]]
    assert got == expected
    assert len(pickle.dumps(state)) < 8_000


@pytest.mark.parametrize(
    "kwargs",
    [{"rsi_period": 1}, {"macd_fast": 26, "macd_slow": 12}, {"bb_nbdev": 0.0}, {"sma_periods": (20, 50, 0)}],
)
def test_invalid_config_is_rejected(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="="):
        IndicatorConfig(**kwargs)  # type: ignore[arg-type]
