"""Price dynamics: exact GBM, Heston variance, a K-factor Cholesky model, Merton jumps and a regime switch.

Pure maths on NumPy arrays, vectorised across tickers; no I/O, no clock. Parameters are annualised and every
step takes its length ``dt`` in years (the year basis is the session's, see :mod:`simulator.session`).

The full model for ticker ``i`` (log price ``x_i``) over a step of ``dt`` years::

    dx_i = (mu_i - v_i/2 - lam_i k_i) dt + sqrt(v_i) dW_i + J_i dN_i
    v_i  = sd_i^2 * h(t)^[sv_i] * m(s_t)^2^[regime_i]          (sd_i: diffusive part of the ticker's vol)
    dW_i = b_i . dF + sqrt(1 - b_i' C b_i) dE_i                   (K factors F with correlation C, Cholesky)
    dh   = kappa (1 - h) dt + xi sqrt(h) dB,  dB = rho dF_0 + sqrt(1 - rho^2) dB_perp   (market variance)

``h`` is one market-wide Heston variance multiplier (mean 1), driven by the market factor's shocks, so a
negative ``rho`` gives the leverage effect, and because it is common to all tickers it cancels out of their
correlations: realised correlations match ``b_i' C b_j``. ``s_t`` is a calm/stressed Markov chain whose vol
multipliers are normalised so the long-run variance stays ``sd_i^2``. Jumps are idiosyncratic Merton jumps
(log-size normal), compensated so the arithmetic drift stays ``mu_i``; the configured ``volatility`` of a
ticker is the total (diffusion + jumps).

Randomness comes from per-component :class:`numpy.random.Generator` streams (global ones for factors,
variance, regime and jumps; per ticker-group ones for idiosyncratic shocks and microstructure) consumed in
step-major order, so the numbers drawn never depend on how callers cut the simulation into batches or threads.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from scipy.special import ndtr

from common.errors import ConfigError

FloatArray = NDArray[np.float64]
#: Variance discretisations: full-truncation Euler (Lord et al. 2010) or Andersen's (2008) quadratic-exponential.
HestonScheme = Literal["full_truncation", "qe"]
#: Andersen's switching threshold between the quadratic and the exponential branch.
QE_PSI_C = 1.5
#: Full truncation's Euler step is stable only for ``kappa * dt`` below this (checked at every variance update).
MAX_KAPPA_DT = 2.0
SeedLike = int | np.random.Generator | np.random.SeedSequence | None

#: Global stream names in spawn order; adding one at the end keeps existing streams (and outputs) unchanged.
STREAMS = ("factor", "variance", "regime", "jumps")
#: Per-group stream names (each group of :data:`GROUP_SIZE` tickers has its own).
GROUP_STREAMS = ("idio", "micro")
#: Tickers per random-stream group: part of the stream definition, changing it changes every output.
GROUP_SIZE = 512


def n_groups(n: int) -> int:
    """Number of ticker groups for ``n`` tickers."""
    return max(1, -(-n // GROUP_SIZE))


class ModelWarning(UserWarning):
    """Parameters are legal but questionable (non-stationary, Feller condition broken, ...)."""


class FellerWarning(ModelWarning):
    """``2 kappa theta < xi^2``: the variance process touches zero; full truncation keeps it usable."""


def seed_sequence(seed: SeedLike) -> np.random.SeedSequence:
    """The :class:`~numpy.random.SeedSequence` behind any accepted seed (int, SeedSequence or Generator)."""
    if isinstance(seed, np.random.Generator):
        ss = seed.bit_generator.seed_seq
        if isinstance(ss, np.random.SeedSequence):
            return ss
        return np.random.SeedSequence(int(seed.integers(2**63)))  # pragma: no cover - exotic bit generators
    if isinstance(seed, np.random.SeedSequence):
        return seed
    return np.random.SeedSequence(seed)


def child_sequence(seed: SeedLike, index: int) -> np.random.SeedSequence:
    """Child ``index`` of ``seed``'s sequence, as ``spawn`` would give it first, without mutating the parent."""
    ss = seed_sequence(seed)
    return np.random.SeedSequence(ss.entropy, spawn_key=(*ss.spawn_key, index), pool_size=ss.pool_size)


def make_streams(
    seed: SeedLike,
    groups: int = 1,
) -> tuple[dict[str, np.random.Generator], list[dict[str, np.random.Generator]]]:
    """Independent generators derived from ``seed``: global ones and one set per ticker group.

    The children are those ``spawn`` gives a fresh sequence (global streams under child 0, groups under child 1),
    built with :func:`child_sequence`, so the caller's ``SeedSequence`` or ``Generator`` is never mutated: the
    same object passed twice gives the same streams, and an int seed gives the same streams as its sequence.
    """

    def gen(ss: np.random.SeedSequence) -> np.random.Generator:
        return np.random.Generator(np.random.PCG64(ss))

    ss = seed_sequence(seed)  # once: a None seed draws fresh entropy at every call
    glob_ss, groups_ss = child_sequence(ss, 0), child_sequence(ss, 1)
    glob = {name: gen(child_sequence(glob_ss, j)) for j, name in enumerate(STREAMS)}
    per_group = []
    for g in range(groups):
        g_ss = child_sequence(groups_ss, g)
        per_group.append({name: gen(child_sequence(g_ss, j)) for j, name in enumerate(GROUP_STREAMS)})
    return glob, per_group


# --------------------------------------------------------------------------- GBM


def gbm_log_returns(mu: FloatArray | float, sigma: FloatArray | float, dt: float, z: FloatArray) -> FloatArray:
    """Exact log-normal GBM step: ``(mu - sigma^2/2) dt + sigma sqrt(dt) z`` (no Euler error for any dt)."""
    mu_a = np.asarray(mu, dtype=np.float64)
    sig = np.asarray(sigma, dtype=np.float64)
    return (mu_a - 0.5 * sig * sig) * dt + sig * math.sqrt(dt) * z


def simulate_gbm(
    s0: FloatArray | float,
    mu: FloatArray | float,
    sigma: FloatArray | float,
    dt: float,
    n_steps: int,
    seed: SeedLike = None,
) -> FloatArray:
    """Price paths ``[n_steps + 1, n]`` of independent GBMs with the exact step (first row is ``s0``)."""
    rng = np.random.default_rng(seed)
    s0_a = np.atleast_1d(np.asarray(s0, dtype=np.float64))
    z = rng.standard_normal((n_steps, s0_a.size))
    r = gbm_log_returns(mu, sigma, dt, z)
    out = np.empty((n_steps + 1, s0_a.size))
    out[0] = s0_a
    out[1:] = s0_a * np.exp(np.cumsum(r, axis=0))
    return out


# --------------------------------------------------------------------------- Heston


def feller_ok(kappa: float, theta: float, xi: float) -> bool:
    """True when ``2 kappa theta >= xi^2`` (the variance stays strictly positive in continuous time)."""
    return 2.0 * kappa * theta >= xi * xi


def check_feller(kappa: float, theta: float, xi: float) -> None:
    """Warn with :class:`FellerWarning` when the Feller condition is broken."""
    if not feller_ok(kappa, theta, xi):
        msg = (
            f"Feller condition 2*kappa*theta >= xi^2 broken (kappa={kappa!r}, theta={theta!r}, xi={xi!r}): "
            "the variance hits zero; full truncation keeps it non-negative"
        )
        warnings.warn(msg, FellerWarning, stacklevel=2)


def heston_step(
    v: FloatArray | float, kappa: float, theta: float, xi: float, dt: float, z: FloatArray | float
) -> FloatArray:
    """One full-truncation Euler step of the latent variance (Lord et al. 2010); may go below zero.

    Use ``np.maximum(v, 0)`` as the variance actually applied: that is never negative.
    """
    v_a = np.asarray(v, dtype=np.float64)
    vp = np.maximum(v_a, 0.0)
    return v_a + kappa * (theta - vp) * dt + xi * np.sqrt(vp * dt) * z


def heston_qe_step(
    v: FloatArray | float, kappa: float, theta: float, xi: float, dt: float, z: FloatArray | float
) -> FloatArray:
    """One quadratic-exponential step of the CIR variance (Andersen 2008); never negative.

    The step matches the exact conditional mean and variance of ``V_{t+dt}`` given ``V_t = v``. It is driven by
    one standard normal ``z`` per path: the quadratic branch uses it directly, the exponential branch uses
    ``U = Phi(z)``, so the scheme consumes the same random numbers as full truncation and keeps ``z``'s
    correlation with the price shocks (the leverage effect) in both branches.
    """
    v_a = np.maximum(np.asarray(v, dtype=np.float64), 0.0)
    z_a = np.asarray(z, dtype=np.float64)
    e = math.exp(-kappa * dt)
    m = theta + (v_a - theta) * e
    s2 = v_a * xi * xi * e / kappa * (1.0 - e) + theta * xi * xi / (2.0 * kappa) * (1.0 - e) ** 2
    psi = s2 / np.maximum(m * m, 1e-300)
    quad = psi <= QE_PSI_C
    # quadratic branch: V = a (b + z)^2
    inv = 2.0 / np.where(quad, np.maximum(psi, 1e-300), 1.0)
    b2 = np.maximum(inv - 1.0 + np.sqrt(inv) * np.sqrt(np.maximum(inv - 1.0, 0.0)), 0.0)
    v_quad = m / (1.0 + b2) * (np.sqrt(b2) + z_a) ** 2
    # exponential branch: mass p at zero, exponential tail with rate beta
    p = np.where(quad, 0.0, (psi - 1.0) / (psi + 1.0))
    beta = (1.0 - p) / np.maximum(m, 1e-300)
    u = ndtr(z_a)
    tail = np.log(np.maximum(1.0 - p, 1e-300) / np.maximum(1.0 - u, 1e-300)) / beta
    v_exp = np.where(u <= p, 0.0, tail)
    return np.where(quad, v_quad, np.maximum(v_exp, 0.0))


def variance_step(
    scheme: HestonScheme,
    v: FloatArray | float,
    kappa: float,
    theta: float,
    xi: float,
    dt: float,
    z: FloatArray | float,
) -> FloatArray:
    """One step of the variance with ``scheme`` (the applied variance is ``max(result, 0)`` for both)."""
    if scheme == "qe":
        return heston_qe_step(v, kappa, theta, xi, dt, z)
    return heston_step(v, kappa, theta, xi, dt, z)


def simulate_heston(
    s0: float,
    mu: float,
    v0: float,
    kappa: float,
    theta: float,
    xi: float,
    rho: float,
    dt: float,
    n_steps: int,
    n_paths: int,
    seed: SeedLike = None,
    scheme: HestonScheme = "full_truncation",
) -> tuple[FloatArray, FloatArray]:
    """Independent Heston paths; returns (prices, applied variances) ``[n_steps + 1, n_paths]``."""
    check_feller(kappa, theta, xi)
    rng = np.random.default_rng(seed)
    x = np.full(n_paths, math.log(s0))
    v = np.full(n_paths, v0)
    prices = np.empty((n_steps + 1, n_paths))
    variances = np.empty((n_steps + 1, n_paths))
    prices[0], variances[0] = s0, v0
    rc = math.sqrt(1.0 - rho * rho)
    for t in range(n_steps):
        z1 = rng.standard_normal(n_paths)
        z2 = rho * z1 + rc * rng.standard_normal(n_paths)
        vp = np.maximum(v, 0.0)
        x = x + (mu - 0.5 * vp) * dt + np.sqrt(vp * dt) * z1
        v = variance_step(scheme, v, kappa, theta, xi, dt, z2)
        prices[t + 1] = np.exp(x)
        variances[t + 1] = np.maximum(v, 0.0)
    return prices, variances


# --------------------------------------------------------------------------- factors


@dataclass(frozen=True)
class FactorStructure:
    """K correlated factors (correlation ``corr``) and per-ticker loadings ``betas`` ``[n, K]``."""

    corr: FloatArray
    betas: FloatArray
    chol: FloatArray = field(init=False, repr=False)
    idio_weight: FloatArray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        c = np.asarray(self.corr, dtype=np.float64)
        b = np.asarray(self.betas, dtype=np.float64)
        if c.ndim != 2 or c.shape[0] != c.shape[1] or b.ndim != 2 or b.shape[1] != c.shape[0]:
            msg = f"factor shapes do not match: corr {c.shape!r}, betas {b.shape!r}"
            raise ConfigError(msg)
        if not np.allclose(c, c.T) or not np.allclose(np.diag(c), 1.0):
            msg = f"factor correlation must be symmetric with unit diagonal, got {c.tolist()!r}"
            raise ConfigError(msg)
        try:
            chol = np.linalg.cholesky(c)
        except np.linalg.LinAlgError as err:
            msg = f"factor correlation is not positive definite: {c.tolist()!r}"
            raise ConfigError(msg) from err
        r2 = np.einsum("ik,kl,il->i", b, c, b)
        bad = np.flatnonzero(r2 >= 1.0)
        if bad.size:
            msg = f"factor loadings explain >= 100% of variance for ticker index {int(bad[0])}: R^2={r2[bad[0]]!r}"
            raise ConfigError(msg)
        object.__setattr__(self, "corr", c)
        object.__setattr__(self, "betas", b)
        object.__setattr__(self, "chol", chol)
        object.__setattr__(self, "idio_weight", np.sqrt(1.0 - r2))

    @property
    def loadings_on_shocks(self) -> FloatArray:
        """``[K, n]`` matrix mapping independent factor normals to each ticker's systematic shock."""
        return np.ascontiguousarray((self.betas @ self.chol).T)

    def implied_correlation(self) -> FloatArray:
        """Correlation of the tickers' Brownian shocks: ``b_i' C b_j`` off the diagonal, 1 on it."""
        m = self.betas @ self.corr @ self.betas.T
        np.fill_diagonal(m, 1.0)
        return m


# --------------------------------------------------------------------------- regimes and the market state


@dataclass(frozen=True)
class RegimeParams:
    """Calm/stressed switch: vol ratio stressed/calm and mean durations (years) of each state."""

    stress_vol_ratio: float = 2.0
    calm_duration_years: float = 2.0
    stress_duration_years: float = 0.25

    @property
    def stress_probability(self) -> float:
        """Stationary probability of the stressed state."""
        return self.stress_duration_years / (self.calm_duration_years + self.stress_duration_years)

    def multipliers(self) -> tuple[float, float]:
        """Vol multipliers (calm, stressed) normalised so the stationary mean of the squared multiplier is 1."""
        p = self.stress_probability
        calm = 1.0 / math.sqrt((1.0 - p) + p * self.stress_vol_ratio**2)
        return calm, calm * self.stress_vol_ratio


@dataclass(frozen=True)
class HestonParams:
    """Market variance multiplier ``h`` (mean 1): mean reversion, vol of variance, correlation with factor 0."""

    kappa: float = 3.0
    xi: float = 1.0
    rho: float = -0.7
    scheme: HestonScheme = "full_truncation"

    def __post_init__(self) -> None:
        if self.scheme not in ("full_truncation", "qe"):
            msg = f"heston scheme must be 'full_truncation' or 'qe', got {self.scheme!r}"
            raise ConfigError(msg)
        check_feller(self.kappa, 1.0, self.xi)

    def check_step(self, dt: float) -> None:
        """Raise :class:`ConfigError` when full truncation is unstable for an update of ``dt`` years.

        The Euler step of the mean reversion multiplies the distance to the mean by ``1 - kappa dt``: at
        ``kappa dt >= 2`` that no longer shrinks and ``h`` oscillates with a growing amplitude (mostly negative,
        so the applied variance is truncated to 0). QE is exact in mean and variance at any step.
        """
        if self.scheme == "full_truncation" and self.kappa * dt >= MAX_KAPPA_DT:
            msg = (
                f"heston.kappa {self.kappa!r} is too large for the full_truncation scheme with a variance update"
                f" every {dt!r} years: kappa * dt = {self.kappa * dt:.3g} must be < {MAX_KAPPA_DT:g};"
                f" lower kappa or use heston.scheme: qe"
            )
            raise ConfigError(msg)


@dataclass(frozen=True)
class TickerParams:
    """Per-ticker arrays ``[n]`` (annualised): drift, total vol, jump intensity/mean/std, feature switches."""

    mu: FloatArray
    sigma: FloatArray
    jump_intensity: FloatArray
    jump_mean: FloatArray
    jump_std: FloatArray
    stochastic_vol: NDArray[np.bool_]
    regime: NDArray[np.bool_]

    @property
    def diffusive_sigma(self) -> FloatArray:
        """Vol of the Brownian part: total variance minus the jumps' variance (validated positive)."""
        jump_var = self.jump_intensity * (self.jump_mean**2 + self.jump_std**2)
        d2 = self.sigma**2 - jump_var
        if np.any(d2 <= 0.0):
            i = int(np.flatnonzero(d2 <= 0.0)[0])
            msg = f"jump variance {jump_var[i]!r} exceeds total variance {self.sigma[i] ** 2!r} (ticker index {i})"
            raise ConfigError(msg)
        return np.sqrt(d2)

    @property
    def jump_compensator(self) -> FloatArray:
        """``lam k`` with ``k = E[e^J] - 1``: subtracted from the log drift so E[S_t] grows at ``mu``."""
        return self.jump_intensity * (np.exp(self.jump_mean + 0.5 * self.jump_std**2) - 1.0)


@dataclass(frozen=True)
class Block:
    """Everything common to one block of ``m`` steps of ``dt`` years: drawn once, then consumed by groups."""

    m: int
    dt: float
    sigma: FloatArray  # [n] annualised diffusive vol in force during the block
    factor_z: FloatArray  # [m, K] independent factor normals
    jump_t: NDArray[np.intp]  # step index of each jump
    jump_i: NDArray[np.intp]  # ticker index of each jump
    jump_size: FloatArray  # log jump sizes


@dataclass
class StepResult:
    """Output of :meth:`MarketModel.advance`: ``[m, n]`` log returns and the ``[n]`` vol applied."""

    log_returns: FloatArray
    sigma: FloatArray


class MarketModel:
    """Stateful multi-ticker simulator: market variance ``h``, regime, and per-group random streams.

    Tickers are split into fixed groups of :data:`GROUP_SIZE`; each group has its own idiosyncratic and
    microstructure streams, so groups can be computed in any order or in parallel threads and in row chunks
    of any size while the numbers drawn stay the same.
    """

    def __init__(
        self,
        tickers: TickerParams,
        factors: FactorStructure,
        heston: HestonParams | None,
        regime: RegimeParams | None,
        seed: SeedLike = None,
    ) -> None:
        self.tickers = tickers
        self.factors = factors
        self.heston = heston
        self.regime_params = regime
        self.n = int(tickers.mu.size)
        self.streams, self.group_streams = make_streams(seed, n_groups(self.n))
        self.groups = [slice(g * GROUP_SIZE, min(self.n, (g + 1) * GROUP_SIZE)) for g in range(n_groups(self.n))]
        self._sd = tickers.diffusive_sigma
        self._comp = tickers.jump_compensator
        self._load = factors.loadings_on_shocks  # [K, n]
        self._idio = factors.idio_weight
        self._k = factors.corr.shape[0]
        self.h = 1.0  # market variance multiplier (latent, full truncation)
        self.stressed = False
        self._mults = regime.multipliers() if regime is not None else (1.0, 1.0)

    @property
    def diffusive_sigma(self) -> FloatArray:
        """Long-run diffusive vol per ticker (the ``sd_i`` above)."""
        return self._sd

    def variance_multiplier(self) -> FloatArray:
        """Per-ticker multiplier of ``sd_i^2`` in force now."""
        hv = max(self.h, 0.0) if self.heston is not None else 1.0
        reg = self._mults[1] if self.stressed else self._mults[0]
        out = np.where(self.tickers.stochastic_vol, hv, 1.0)
        return out * np.where(self.tickers.regime, reg * reg, 1.0)

    def current_sigma(self) -> FloatArray:
        """Annualised instantaneous diffusive vol per ticker."""
        return self._sd * np.sqrt(self.variance_multiplier())

    # -- block protocol (engine hot path)

    def begin(self, m: int, dt: float) -> Block:
        """Draw the block's common randomness (factors, jumps); variance and regime are held over the block."""
        zf = self.streams["factor"].standard_normal((m, self._k))
        jt, ji, js = self._draw_jumps(m, dt)
        return Block(m=m, dt=dt, sigma=self.current_sigma(), factor_z=zf, jump_t=jt, jump_i=ji, jump_size=js)

    def chunk_returns(self, block: Block, g: int, r0: int, r1: int) -> FloatArray:
        """Log returns ``[r1 - r0, group size]`` of group ``g`` for steps ``[r0, r1)`` (call chunks in order)."""
        sl = self.groups[g]
        sq = math.sqrt(block.dt)
        s = block.sigma[sl] * sq
        r = block.factor_z[r0:r1] @ (self._load[:, sl] * s)
        zi = self.group_streams[g]["idio"].standard_normal((r1 - r0, s.size))
        zi *= self._idio[sl] * s
        r += zi
        r += (self.tickers.mu[sl] - 0.5 * block.sigma[sl] ** 2 - self._comp[sl]) * block.dt
        if block.jump_t.size:
            sel = (block.jump_t >= r0) & (block.jump_t < r1) & (block.jump_i >= sl.start) & (block.jump_i < sl.stop)
            if sel.any():
                np.add.at(r, (block.jump_t[sel] - r0, block.jump_i[sel] - sl.start), block.jump_size[sel])
        return r

    def end(self, block: Block) -> None:
        """Update market variance and regime from the block's aggregated market-factor shock."""
        z_market = float(block.factor_z[:, 0].sum()) / math.sqrt(block.m)
        self._update_state(block.m * block.dt, z_market)

    # -- convenience

    def advance(self, m: int, dt: float) -> StepResult:
        """Simulate ``m`` steps of ``dt`` years for all tickers (whole block at once)."""
        block = self.begin(m, dt)
        r = np.empty((m, self.n))
        for g, sl in enumerate(self.groups):
            r[:, sl] = self.chunk_returns(block, g, 0, m)
        self.end(block)
        return StepResult(log_returns=r, sigma=block.sigma)

    def _draw_jumps(self, m: int, dt: float) -> tuple[NDArray[np.intp], NDArray[np.intp], FloatArray]:
        lam = self.tickers.jump_intensity
        empty = (np.zeros(0, np.intp), np.zeros(0, np.intp), np.zeros(0))
        if not np.any(lam > 0.0):
            return empty
        rng = self.streams["jumps"]
        counts = rng.poisson(lam * (m * dt))
        total = int(counts.sum())
        if total == 0:
            return empty
        ji = np.repeat(np.arange(self.n, dtype=np.intp), counts)
        jt = rng.integers(0, m, size=total).astype(np.intp)
        js = self.tickers.jump_mean[ji] + self.tickers.jump_std[ji] * rng.standard_normal(total)
        return jt, ji, js

    def _update_state(self, dt: float, z_market: float) -> None:
        if self.heston is not None:
            hp = self.heston
            hp.check_step(dt)
            zv = hp.rho * z_market + math.sqrt(1.0 - hp.rho**2) * float(self.streams["variance"].standard_normal())
            self.h = float(variance_step(hp.scheme, self.h, hp.kappa, 1.0, hp.xi, dt, zv))
        if self.regime_params is not None:
            rp = self.regime_params
            rate = 1.0 / (rp.stress_duration_years if self.stressed else rp.calm_duration_years)
            if float(self.streams["regime"].random()) < -math.expm1(-rate * dt):
                self.stressed = not self.stressed
