"""Statistical tests of the model maths (tolerances are k standard errors of the sample size used); seed handling
and the stability bound of the variance scheme."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from pydantic import ValidationError

from common.errors import ConfigError
from simulator.models import (
    STREAMS,
    FactorStructure,
    FellerWarning,
    HestonParams,
    MarketModel,
    RegimeParams,
    TickerParams,
    check_feller,
    gbm_log_returns,
    heston_qe_step,
    make_streams,
    simulate_gbm,
    simulate_heston,
)
from simulator.universe import Universe, UniverseConfig, parse_universe

K = 5.0  # standard errors allowed: a fixed-seed test fails only if the code is wrong


def _params(
    n: int,
    sigma: float = 0.2,
    lam: float = 0.0,
    jm: float = 0.0,
    js: float = 0.0,
    sv: bool = False,
    regime: bool = False,
) -> TickerParams:
    f = np.full
    return TickerParams(
        mu=f(n, 0.05),
        sigma=f(n, sigma),
        jump_intensity=f(n, lam),
        jump_mean=f(n, jm),
        jump_std=f(n, js),
        stochastic_vol=f(n, sv),
        regime=f(n, regime),
    )


def test_gbm_log_return_mean_and_variance_match_theory() -> None:
    mu, sigma, dt, n = 0.08, 0.3, 1 / 252, 200_000
    r = gbm_log_returns(mu, sigma, dt, np.random.default_rng(1).standard_normal(n))
    mean, var = (mu - sigma**2 / 2) * dt, sigma**2 * dt
    assert abs(r.mean() - mean) < K * math.sqrt(var / n)
    assert abs(r.var() - var) < K * var * math.sqrt(2 / n)


def test_gbm_exact_step_is_step_size_invariant() -> None:
    """E[S_T] = S_0 e^{mu T} for one big step or many small ones (Euler would bias the big step)."""
    s = simulate_gbm(100.0, 0.1, 0.4, 1.0, 1, seed=3)[:, :]
    paths = simulate_gbm(np.full(100_000, 100.0), 0.1, 0.4, 1.0, 1, seed=3)[-1]
    expect = 100 * math.exp(0.1)
    sd = 100 * math.exp(0.1) * math.sqrt(math.exp(0.16) - 1)
    assert s.shape == (2, 1)
    assert abs(paths.mean() - expect) < K * sd / math.sqrt(paths.size)


def test_heston_variance_never_negative_even_when_feller_broken() -> None:
    with pytest.warns(FellerWarning):
        _, v = simulate_heston(100, 0.05, 0.04, 1.0, 0.04, 1.0, -0.7, 1 / 252, 2_000, 200, seed=5)
    assert (v >= 0).all()


def test_feller_ok_does_not_warn() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_feller(2.0, 1.0, 1.5)


def test_heston_long_run_variance_is_theta() -> None:
    _, v = simulate_heston(100, 0.0, 0.04, 5.0, 0.04, 0.3, -0.7, 1 / 252, 5_000, 200, seed=7)
    tail = v[1000:].mean()
    assert abs(tail - 0.04) < 0.004


def test_factor_cholesky_realised_correlation_matches_configured() -> None:
    corr = np.array([[1.0, 0.3], [0.3, 1.0]])
    betas = np.array([[0.8, 0.0], [0.6, 0.3], [0.0, 0.9], [0.5, 0.5]])
    fs = FactorStructure(corr=corr, betas=betas)
    model = MarketModel(_params(4), fs, None, None, seed=11)
    n = 100_000
    r = model.advance(n, 1 / 252).log_returns
    real = np.atleast_2d(np.corrcoef(r.T))
    target = fs.implied_correlation()
    iu = np.triu_indices(4, 1)
    # sd of a sample correlation is about (1 - rho^2) / sqrt(n)
    assert np.all(np.abs(real[iu] - target[iu]) < K * (1 - target[iu] ** 2) / math.sqrt(n) + 1e-3)


def test_factor_structure_rejects_bad_config() -> None:
    with pytest.raises(ConfigError, match="positive definite"):
        FactorStructure(corr=np.array([[1.0, 1.2], [1.2, 1.0]]), betas=np.zeros((1, 2)))
    with pytest.raises(ConfigError, match="100%"):
        FactorStructure(corr=np.eye(1), betas=np.array([[1.0]]))


def test_jumps_arrive_at_configured_intensity() -> None:
    lam, n_tickers, years = 20.0, 50, 10.0
    model = MarketModel(
        _params(n_tickers, sigma=0.5, lam=lam, jm=-0.05, js=0.02),
        FactorStructure(np.eye(1), np.zeros((n_tickers, 1))),
        None,
        None,
        seed=13,
    )
    count = 0
    steps = int(years * 252)
    for _ in range(steps // 252):
        block = model.begin(252, 1 / 252)
        count += block.jump_t.size
        model.end(block)
    expected = lam * years * n_tickers
    assert abs(count - expected) < K * math.sqrt(expected)


def test_total_variance_includes_jumps() -> None:
    """The configured vol is the total: diffusion + jumps; realised annual variance matches it."""
    n = 200
    model = MarketModel(
        _params(n, sigma=0.3, lam=5.0, jm=-0.03, js=0.05),
        FactorStructure(np.eye(1), np.zeros((n, 1))),
        None,
        None,
        seed=17,
    )
    r = np.vstack([model.advance(252, 1 / 252).log_returns for _ in range(20)])
    realised = r.var(axis=0).mean() * 252
    assert abs(realised - 0.09) < 0.09 * 0.05


def test_regime_multipliers_preserve_long_run_variance() -> None:
    rp = RegimeParams(stress_vol_ratio=3.0, calm_duration_years=1.0, stress_duration_years=0.25)
    calm, stress = rp.multipliers()
    p = rp.stress_probability
    assert math.isclose((1 - p) * calm**2 + p * stress**2, 1.0)
    assert stress == pytest.approx(3.0 * calm)


def test_leverage_negative_rho_makes_falls_raise_volatility() -> None:
    n = 1
    fs = FactorStructure(np.eye(1), np.array([[0.9]]))
    model = MarketModel(_params(n, sv=True), fs, HestonParams(kappa=3.0, xi=1.5, rho=-0.9), None, seed=19)
    r = np.concatenate([model.advance(1, 1 / 252).log_returns[:, 0] for _ in range(20_000)])
    a = np.abs(r)
    lev = np.mean([np.corrcoef(r[:-k], a[k:])[0, 1] for k in range(1, 11)])
    assert lev < -3 / math.sqrt(r.size)


# --------------------------------------------------------------------------- Andersen QE


def _cir_moments(v0: float, kappa: float, theta: float, xi: float, t: float) -> tuple[float, float]:
    """Exact mean and variance of the CIR variance at time ``t`` given ``V_0 = v0``."""
    e = math.exp(-kappa * t)
    mean = theta + (v0 - theta) * e
    var = v0 * xi**2 * e / kappa * (1 - e) + theta * xi**2 / (2 * kappa) * (1 - e) ** 2
    return mean, var


@pytest.mark.parametrize(
    ("kappa", "theta", "xi"),
    [(1.0, 0.04, 1.0), (3.0, 0.04, 0.3)],  # Feller broken (exponential branch used) and satisfied (quadratic)
)
def test_qe_variance_never_negative_and_mean_matches_cir(kappa: float, theta: float, xi: float) -> None:
    v0, t, steps, paths = 0.09, 1.0, 50, 40_000
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FellerWarning)
        _, v = simulate_heston(100, 0.05, v0, kappa, theta, xi, -0.7, t / steps, steps, paths, seed=23, scheme="qe")
    assert v.min() >= 0.0
    mean, _ = _cir_moments(v0, kappa, theta, xi, t)
    se = v[-1].std() / math.sqrt(paths)
    assert abs(v[-1].mean() - mean) < K * se


def test_qe_single_step_matches_the_exact_conditional_mean_and_variance() -> None:
    """QE is moment matching: even one coarse step reproduces E[V] and Var[V] of the CIR transition."""
    rng = np.random.default_rng(29)
    n = 400_000
    for v0, kappa, theta, xi, dt in [(0.04, 2.0, 0.04, 0.5, 0.5), (0.01, 1.0, 0.04, 1.2, 0.25)]:
        v = heston_qe_step(np.full(n, v0), kappa, theta, xi, dt, rng.standard_normal(n))
        mean, var = _cir_moments(v0, kappa, theta, xi, dt)
        assert v.min() >= 0.0
        assert abs(v.mean() - mean) < K * math.sqrt(var / n)
        # standard error of a sample variance ~ sqrt((m4 - var^2) / n), estimated from the sample
        se_var = math.sqrt(np.mean((v - v.mean()) ** 4) - v.var() ** 2) / math.sqrt(n)
        assert abs(v.var() - var) < K * se_var


def test_full_truncation_biased_where_qe_is_not_on_coarse_steps() -> None:
    """Why QE exists: with few coarse steps and Feller broken, full truncation's mean drifts from the CIR mean."""
    v0, kappa, theta, xi, t, steps, paths = 0.04, 0.5, 0.04, 1.0, 2.0, 4, 200_000
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FellerWarning)
        _, ft = simulate_heston(100, 0, v0, kappa, theta, xi, 0.0, t / steps, steps, paths, seed=31)
        _, qe = simulate_heston(100, 0, v0, kappa, theta, xi, 0.0, t / steps, steps, paths, seed=31, scheme="qe")
    mean, _ = _cir_moments(v0, kappa, theta, xi, t)
    se_qe = qe[-1].std() / math.sqrt(paths)
    assert abs(qe[-1].mean() - mean) < K * se_qe
    assert abs(ft[-1].mean() - mean) > K * ft[-1].std() / math.sqrt(paths)


def test_universe_heston_scheme_field() -> None:
    cfg = UniverseConfig(
        factors=["market"],
        generate={"count": 3, "seed": 1},
        heston={"kappa": 2.0, "xi": 1.0, "rho": -0.5, "scheme": "qe"},
    )
    assert Universe(cfg).heston_params() == HestonParams(kappa=2.0, xi=1.0, rho=-0.5, scheme="qe")
    with pytest.raises(ValidationError, match="scheme"):
        UniverseConfig(factors=["market"], generate={"count": 3, "seed": 1}, heston={"scheme": "euler"})


# --------------------------------------------------------------------------- seeds, kappa (audit fixes)


def _first_block(seed: object) -> np.ndarray:
    from simulator.engine import TickEngine
    from simulator.session import Session
    from simulator.universe import load_universe

    eng = TickEngine(load_universe("default"), Session(), seed, 1_767_225_600_000, tick_ms=100)  # type: ignore[arg-type]
    try:
        return next(eng.blocks()).price.copy()
    finally:
        eng.close()


@pytest.mark.parametrize(
    "make_seed",
    [lambda: np.random.SeedSequence(42), lambda: np.random.default_rng(42)],
    ids=["SeedSequence", "Generator"],
)
def test_the_same_seed_object_twice_gives_the_same_stream_and_is_not_mutated(make_seed: object) -> None:
    """make_streams used to spawn from the caller's sequence: the second use of the same object drew other numbers."""
    seed = make_seed()  # type: ignore[operator]
    a, b = _first_block(seed), _first_block(seed)
    assert np.array_equal(a, b)
    assert np.array_equal(a, _first_block(42))  # and the same as the int seed
    ss = seed if isinstance(seed, np.random.SeedSequence) else seed.bit_generator.seed_seq
    assert ss.n_children_spawned == 0


def test_make_streams_are_the_children_spawn_gives_a_fresh_sequence() -> None:
    """The int-seed streams are unchanged: child i of child 0 (global) / of child j of child 1 (groups)."""
    glob, groups = make_streams(42, 2)
    top = np.random.SeedSequence(42).spawn(2)
    want_glob = top[0].spawn(len(STREAMS))
    want_groups = [g.spawn(2) for g in top[1].spawn(2)]
    for j, name in enumerate(STREAMS):
        assert glob[name].random() == np.random.Generator(np.random.PCG64(want_glob[j])).random()
    for g in range(2):
        for j, name in enumerate(("idio", "micro")):
            assert groups[g][name].random() == np.random.Generator(np.random.PCG64(want_groups[g][j])).random()


def test_full_truncation_refuses_an_unstable_kappa_step() -> None:
    """kappa * dt > 2 made h explode (mean -11.8 instead of 1 for kappa 2000 with daily steps)."""
    fs = FactorStructure(np.eye(1), np.array([[0.5]]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FellerWarning)
        unstable = HestonParams(kappa=2000.0, xi=0.5, rho=-0.5)
        qe = HestonParams(kappa=2000.0, xi=0.5, rho=-0.5, scheme="qe")
    with pytest.raises(ConfigError, match=r"kappa \* dt = 7.94 must be < 2"):
        MarketModel(_params(1, sv=True), fs, unstable, None, seed=1).advance(1, 1 / 252)
    unstable.check_step(1 / 1100)  # kappa * dt = 1.8: stable
    model = MarketModel(_params(1, sv=True), fs, qe, None, seed=1)
    hs = []
    for _ in range(500):
        model.advance(1, 1 / 252)
        hs.append(model.h)
    assert abs(np.mean(hs) - 1.0) < 0.05  # QE is exact at any step


@pytest.mark.parametrize(
    ("kappa", "scheme", "ok"),
    [(250.0, "full_truncation", True), (251.0, "full_truncation", False), (2000.0, "qe", True)],
)
def test_config_bounds_kappa_for_full_truncation(kappa: float, scheme: str, ok: bool) -> None:
    data = {
        "heston": {"kappa": kappa, "xi": 0.5, "rho": -0.5, "scheme": scheme},
        "tickers": [{"symbol": "A", "start_price": 10.0, "volatility": 0.2}],
    }
    if ok:
        parse_universe(data)
    else:
        with pytest.raises(ConfigError, match="kappa must be <= 250 with scheme full_truncation"):
            parse_universe(data)


def test_the_largest_kappa_of_the_config_is_stable_at_every_step_the_simulator_takes() -> None:
    """The coarsest variance update: one trading day of a 1d export (0.8 / 252 year), or a 24/7 day."""
    from simulator.session import Session
    from simulator.universe import MAX_KAPPA_FULL_TRUNCATION

    hp = HestonParams(kappa=MAX_KAPPA_FULL_TRUNCATION, xi=0.1)
    for session in (Session(mode="exchange"), Session()):
        day_dt = session.session_seconds * session.years_per_second()
        assert MAX_KAPPA_FULL_TRUNCATION * day_dt < 1.0  # no oscillation either
        hp.check_step(day_dt)
        hp.check_step(session.gap_years())
