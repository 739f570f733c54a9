"""TA-Lib oracle and state tests for :mod:`flows.indicators` (TA-Lib is a test-only dependency)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import talib  # the oracle is a dev dependency: a missing install must fail, not skip

from flows.indicators import MAX_PERIOD, PERIOD_MINIMUMS, IndicatorConfig, IndicatorState

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
        # the shortest periods TA-Lib accepts: SMA(1) and EMA(1) are the close itself, a signal of 1 the MACD
        IndicatorConfig(
            sma_periods=(1, 2, 1),
            ema_periods=(1, 2),
            rsi_period=2,
            macd_fast=2,
            macd_slow=3,
            macd_signal=1,
            bb_period=2,
            bb_nbdev=1.0,
        ),
        IndicatorConfig(ema_periods=(1, 26), macd_signal=1),
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


def flat_run_series(head: list[int], flat: int) -> np.ndarray:
    """``head`` closes (cents) followed by ``flat`` repeats of the last one."""
    return np.array(head + [head[-1]] * flat, dtype=np.int64)


FLAT_RUNS = {
    "rise_then_flat": [1_000, 1_001],
    "fall_then_flat": [1_001, 1_000],
    "rise_fall_then_flat": [1_000, 1_001, 1_000],
    "walk_then_flat": [int(c) for c in random_walk_cents(60, seed=5)],
}


@pytest.mark.parametrize("head", FLAT_RUNS.values(), ids=FLAT_RUNS.keys())
@pytest.mark.parametrize("rsi_period", [2, 14])
def test_long_flat_runs_match_talib(head: list[int], rsi_period: int) -> None:
    """After a move, the RSI averages decay through the subnormal floats; TA-Lib has no epsilon there.

    With period 2 the sum underflows to exactly 0 after ~1,070 flat bars (TA-Lib's RSI turns 0 there, not
    after ~45 bars as with the old 1e-14 threshold); with period 14 ``avg * 13 / 14`` stops at the smallest
    subnormal and the RSI stays at its last ratio for ever. 1,500 flat bars cover both.
    """
    cents = flat_run_series(head, 1_500)
    cfg = IndicatorConfig(rsi_period=rsi_period, bb_period=2 if rsi_period == 2 else 20)
    ours = run(cents, cfg)
    assert_matches(ours, oracle(cents, cfg))
    # Bollinger: zero width exactly once the window is flat, as TA-Lib
    assert ours["bb_upper"][-1] == ours["bb_middle"][-1] == ours["bb_lower"][-1] == head[-1] / 100.0


def test_rsi_after_a_rise_into_a_flat_run_stays_100_as_talib() -> None:
    """The reviewer's case: [10.00, 10.01] + 400 x 10.01 with RSI(14) ends at 100 (it used to be 0)."""
    cents = flat_run_series([1_000, 1_001], 400)
    expected = talib.RSI(cents / 100.0, 14)
    rsi = run(cents, IndicatorConfig())["rsi_14"]
    assert expected[-1] == 100.0
    assert rsi[-1] == 100.0
    # with period 2 TA-Lib's RSI is 100 until the averages underflow to exactly 0, then 0
    cents = flat_run_series([1_000, 1_001], 1_200)
    expected = talib.RSI(cents / 100.0, 2)
    rsi = run(cents, IndicatorConfig(rsi_period=2))["rsi_14"]
    first_zero = int(np.argmax(expected[2:] == 0.0)) + 2
    assert 1_000 < first_zero < 1_200
    assert (rsi[2:first_zero] == 100.0).all()
    assert (rsi[first_zero:] == 0.0).all()


def test_bollinger_deviation_has_no_epsilon() -> None:
    """TA-Lib's BBANDS gives sqrt of any positive variance, however tiny (no 1e-14 cut-off any more).

    Cents cannot make a variance below ~1e-9, so this checks TA-Lib on float input, and that our exact
    variance of the smallest cent move equals TA-Lib's.
    """
    tiny = np.array([1.0, 1.0 + 1e-12] * 3)
    upper, middle, _ = talib.BBANDS(tiny, 2, 1.0, 1.0, matype=0)
    assert upper[-1] - middle[-1] > 0  # variance 2.5e-25 < 1e-14, still a deviation
    cents = flat_run_series([1_000] * 30 + [1_001], 40)
    cfg = IndicatorConfig(bb_period=30)
    assert_matches(run(cents, cfg), oracle(cents, cfg))


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
    ("kwargs", "message"),
    [
        ({"rsi_period": 1}, r"rsi_period=1 must be an integer within 2\.\.100000 \(TA-Lib's range for RSI\)"),
        ({"sma_periods": (20, 50, 0)}, r"sma_periods=\(20, 50, 0\) must each be an integer within 1\.\.100000"),
        ({"ema_periods": (0, 26)}, r"ema_periods=\(0, 26\) must each be an integer within 1\.\.100000"),
        ({"macd_fast": 1}, r"macd_fast=1 must be an integer within 2\.\.100000"),
        ({"macd_signal": 0}, r"macd_signal=0 must be an integer within 1\.\.100000"),
        ({"bb_period": 1}, r"bb_period=1 must be an integer within 2\.\.100000 \(TA-Lib's range for BBANDS\)"),
        ({"bb_period": 100_001}, r"bb_period=100001 must be"),
        ({"macd_fast": 26, "macd_slow": 12}, "macd_fast=26 must be shorter than macd_slow=12"),
        ({"bb_nbdev": 0.0}, "bb_nbdev=0.0"),
    ],
)
def test_invalid_config_is_rejected_naming_the_setting_and_range(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        IndicatorConfig(**kwargs)  # type: ignore[arg-type]


def _talib_accepts(setting: str, period: int) -> bool:
    close = random_walk_cents(50, seed=1) / 100.0
    calls = {
        "sma_periods": lambda: talib.SMA(close, period),
        "ema_periods": lambda: talib.EMA(close, period),
        "rsi_period": lambda: talib.RSI(close, period),
        "macd_fast": lambda: talib.MACD(close, period, MAX_PERIOD, 9),
        "macd_slow": lambda: talib.MACD(close, 2, period, 9),
        "macd_signal": lambda: talib.MACD(close, 12, 26, period),
        "bb_period": lambda: talib.BBANDS(close, period, 2.0, 2.0, matype=0),
    }
    try:
        calls[setting]()
    except Exception as err:  # talib raises a bare Exception for TA_BAD_PARAM
        if "TA_BAD_PARAM" in str(err):
            return False
        raise
    return True


@pytest.mark.parametrize("setting", PERIOD_MINIMUMS)
def test_period_ranges_are_talibs(setting: str) -> None:
    """Each setting's minimum (and the common maximum) is exactly what the installed TA-Lib accepts."""
    _, minimum = PERIOD_MINIMUMS[setting]
    assert _talib_accepts(setting, minimum)
    assert not _talib_accepts(setting, minimum - 1)
    assert _talib_accepts(setting, MAX_PERIOD)
    assert not _talib_accepts(setting, MAX_PERIOD + 1)
