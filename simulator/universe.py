"""The ticker universe as a validated config file (YAML), and a generator for large synthetic universes.

A universe names its factors (market, sectors, ...), their correlation, the market-variance (Heston) and
regime parameters, and the tickers with start price, drift, volatility, factor loadings, jumps and feature
switches. Adding a ticker is a config change only. Invalid files fail at load with :class:`ConfigError`
naming the field path and the bad value. Presets live in ``simulator/presets/*.yaml``.
"""

from __future__ import annotations

from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from common.errors import ConfigError
from contracts.tick import MAX_TICKER_CHARS, SYMBOL_RE
from simulator.models import FactorStructure, HestonParams, MarketModel, RegimeParams, SeedLike, TickerParams

PosFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Fraction = Annotated[float, Field(ge=-1, le=1, allow_inf_nan=False)]
#: Largest ``tick_volume`` (mean shares per print): its quote lot (100 * round(tick_volume / 500) shares) times
#: the largest lot count stays far below the contract's ``bid_size``/``ask_size`` limit (MAX_INT32); volume
#: events may multiply it further, where the lot is capped (``microstructure.MAX_LOT_SHARES``).
MAX_TICK_VOLUME = 100_000_000
#: Largest ``heston.kappa`` with the full-truncation scheme: ``kappa * dt`` stays below 0.8 (no oscillation, far from
#: the instability at 2) for the coarsest variance update the simulator makes, one trading day (0.8 / 252 year of
#: a ``1d`` export); faster mean reversion needs ``scheme: qe``, exact at any step.
MAX_KAPPA_FULL_TRUNCATION = 250.0


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class JumpConfig(_Model):
    """Merton jumps: Poisson intensity per year, mean and std of the log jump size."""

    intensity: float = Field(ge=0, le=252, allow_inf_nan=False)
    mean: float = Field(default=0.0, ge=-1, le=1, allow_inf_nan=False)
    std: float = Field(default=0.0, ge=0, le=1, allow_inf_nan=False)


class HestonConfig(_Model):
    """Market variance multiplier (mean 1): mean reversion per year, vol of variance, corr with factor 0."""

    kappa: PosFloat = 3.0
    xi: float = Field(default=1.0, ge=0, le=10, allow_inf_nan=False)
    rho: float = Field(default=-0.7, gt=-1, lt=1, allow_inf_nan=False)
    scheme: Literal["full_truncation", "qe"] = "full_truncation"

    @model_validator(mode="after")
    def _stable_kappa(self) -> Self:
        if self.scheme == "full_truncation" and self.kappa > MAX_KAPPA_FULL_TRUNCATION:
            msg = (
                f"kappa must be <= {MAX_KAPPA_FULL_TRUNCATION:g} with scheme full_truncation (its Euler step is"
                f" unstable when kappa * dt >= 2 and a daily export steps ~1/252 year), got {self.kappa!r};"
                " use scheme: qe for faster mean reversion"
            )
            raise ValueError(msg)
        return self


class RegimeConfig(_Model):
    """Calm/stressed switch: vol ratio (stressed/calm) and mean state durations in trading days."""

    stress_vol_ratio: float = Field(default=2.0, ge=1, le=20, allow_inf_nan=False)
    calm_days: PosFloat = 500.0
    stress_days: PosFloat = 60.0


class TickerConfig(_Model):
    """One ticker. ``drift`` and ``volatility`` are annualised; ``volatility`` includes jumps."""

    symbol: str
    name: str = ""
    sector: str = "Unknown"
    start_price: float = Field(ge=0.01, le=1e7, allow_inf_nan=False)  # one cent: the price grid's step
    drift: float = Field(default=0.05, ge=-1, le=1, allow_inf_nan=False)
    volatility: float = Field(gt=0, le=5, allow_inf_nan=False)
    loadings: dict[str, Fraction] = Field(default_factory=dict)
    jumps: JumpConfig | None = None
    stochastic_vol: bool = True
    regime: bool = True
    tick_volume: float = Field(default=500.0, ge=1, le=MAX_TICK_VOLUME, allow_inf_nan=False)

    @field_validator("symbol")
    @classmethod
    def _symbol(cls, v: str) -> str:
        if not SYMBOL_RE.match(v):
            msg = f"symbol must match {SYMBOL_RE.pattern} (upper case, 1-{MAX_TICKER_CHARS} chars), got {v!r}"
            raise ValueError(msg)
        return v


class GenerateConfig(_Model):
    """Append ``count`` generated tickers (see :func:`generate_tickers`)."""

    count: int = Field(ge=1, le=1_000_000)
    seed: int = 0
    prefix: str = Field(default="S", pattern=r"^[A-Z]{1,4}$")


class UniverseConfig(_Model):
    """A whole universe: factors, their correlation, market variance, regime switch and tickers."""

    name: str = "custom"
    factors: list[str] = Field(default_factory=lambda: ["market"], min_length=1)
    factor_correlation: list[list[float]] | None = None
    heston: HestonConfig | None = Field(default_factory=HestonConfig)
    regime: RegimeConfig | None = Field(default_factory=RegimeConfig)
    tickers: list[TickerConfig] = Field(default_factory=list)
    generate: GenerateConfig | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        if len(set(self.factors)) != len(self.factors):
            msg = f"factors must be unique, got {self.factors!r}"
            raise ValueError(msg)
        k = len(self.factors)
        if self.factor_correlation is not None:
            c = np.asarray(self.factor_correlation, dtype=np.float64)
            if c.shape != (k, k):
                msg = f"factor_correlation must be {k}x{k} for factors {self.factors!r}, got shape {c.shape!r}"
                raise ValueError(msg)
        seen: set[str] = set()
        for t in self.tickers:
            if t.symbol in seen:
                msg = f"duplicate ticker symbol {t.symbol!r}"
                raise ValueError(msg)
            seen.add(t.symbol)
            unknown = set(t.loadings) - set(self.factors)
            if unknown:
                msg = (
                    f"ticker {t.symbol!r} loads on unknown factor(s) {sorted(unknown)!r}; factors are {self.factors!r}"
                )
                raise ValueError(msg)
        if not self.tickers and self.generate is None:
            msg = "a universe needs at least one ticker (tickers: or generate:)"
            raise ValueError(msg)
        return self


class Universe:
    """A validated universe with the arrays the engine needs (built once, cached)."""

    def __init__(self, config: UniverseConfig) -> None:
        tickers = list(config.tickers)
        if config.generate is not None:
            tickers += generate_tickers(
                config.generate.count,
                config.factors,
                config.generate.seed,
                config.generate.prefix,
                taken={t.symbol for t in tickers},
            )
        self.config = config
        self.tickers: list[TickerConfig] = tickers
        self.symbols: list[str] = [t.symbol for t in tickers]
        # build the numeric structures now so bad combinations fail at start, naming the problem
        _ = self.factor_structure, self.ticker_params

    def __len__(self) -> int:
        return len(self.tickers)

    @cached_property
    def factor_structure(self) -> FactorStructure:
        """Factor correlation and the ``[n, K]`` loadings matrix."""
        k = len(self.config.factors)
        corr = np.eye(k) if self.config.factor_correlation is None else np.asarray(self.config.factor_correlation)
        idx = {f: j for j, f in enumerate(self.config.factors)}
        betas = np.zeros((len(self.tickers), k))
        for i, t in enumerate(self.tickers):
            for f, b in t.loadings.items():
                betas[i, idx[f]] = b
        return FactorStructure(corr=corr, betas=betas)

    @cached_property
    def ticker_params(self) -> TickerParams:
        """Per-ticker parameter arrays."""
        ts = self.tickers
        params = TickerParams(
            mu=np.array([t.drift for t in ts], dtype=np.float64),
            sigma=np.array([t.volatility for t in ts], dtype=np.float64),
            jump_intensity=np.array([t.jumps.intensity if t.jumps else 0.0 for t in ts], dtype=np.float64),
            jump_mean=np.array([t.jumps.mean if t.jumps else 0.0 for t in ts], dtype=np.float64),
            jump_std=np.array([t.jumps.std if t.jumps else 0.0 for t in ts], dtype=np.float64),
            stochastic_vol=np.array([t.stochastic_vol for t in ts], dtype=np.bool_),
            regime=np.array([t.regime for t in ts], dtype=np.bool_),
        )
        _ = params.diffusive_sigma  # validates jump variance < total variance
        return params

    @cached_property
    def start_prices(self) -> np.ndarray:
        """Start prices in dollars ``[n]``."""
        return np.array([t.start_price for t in self.tickers], dtype=np.float64)

    @cached_property
    def tick_volumes(self) -> np.ndarray:
        """Mean trade size per tick in shares ``[n]``."""
        return np.array([t.tick_volume for t in self.tickers], dtype=np.float64)

    def heston_params(self) -> HestonParams | None:
        """Market variance parameters, or None when stochastic volatility is off for the universe."""
        h = self.config.heston
        return None if h is None else HestonParams(kappa=h.kappa, xi=h.xi, rho=h.rho, scheme=h.scheme)

    def regime_params(self, trading_days_per_year: float = 252.0) -> RegimeParams | None:
        """Regime parameters converted from trading days to years."""
        r = self.config.regime
        if r is None:
            return None
        return RegimeParams(
            stress_vol_ratio=r.stress_vol_ratio,
            calm_duration_years=r.calm_days / trading_days_per_year,
            stress_duration_years=r.stress_days / trading_days_per_year,
        )

    def model(self, seed: SeedLike = None) -> MarketModel:
        """A fresh :class:`MarketModel` for this universe."""
        return MarketModel(self.ticker_params, self.factor_structure, self.heston_params(), self.regime_params(), seed)

    def implied_correlation(self) -> np.ndarray:
        """Model-implied return correlation, including the dilution by idiosyncratic jumps."""
        p = self.ticker_params
        share = p.diffusive_sigma / p.sigma  # diffusive vol / total vol
        c = self.factor_structure.implied_correlation() * np.outer(share, share)
        np.fill_diagonal(c, 1.0)
        return c


def _format_errors(err: ValidationError, source: str) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "<root>"
        parts.append(f"{loc}: {e['msg']} (got {e.get('input')!r})")
    return f"invalid universe config {source}: " + "; ".join(parts)


def parse_universe(data: Any, source: str = "<data>") -> Universe:
    """Validate a parsed mapping into a :class:`Universe`; errors name the field path and value."""
    try:
        cfg = UniverseConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, source)) from err
    try:
        return Universe(cfg)
    except ConfigError as err:
        msg = f"invalid universe config {source}: {err}"
        raise ConfigError(msg) from err


def preset_path(name: str) -> Path:
    """Path of a built-in preset (``default``, ``large``, ...)."""
    return Path(str(resources.files("simulator") / "presets" / f"{name}.yaml"))


def load_universe(path_or_name: str | Path) -> Universe:
    """Load a universe from a YAML path or a built-in preset name."""
    p = Path(path_or_name)
    if not p.suffix and not p.exists():
        p = preset_path(str(path_or_name))
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as err:
        msg = f"cannot read universe config {str(p)!r}: {err}"
        raise ConfigError(msg) from err
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        msg = f"universe config {str(p)!r} is not valid YAML: {err}"
        raise ConfigError(msg) from err
    return parse_universe(data, repr(str(p)))


_SECTOR_NAMES = ("Technology", "Finance", "Energy", "Healthcare", "Industrials", "Consumer", "Utilities")


def generate_tickers(
    count: int, factors: list[str], seed: int = 0, prefix: str = "S", taken: set[str] | None = None
) -> list[TickerConfig]:
    """``count`` plausible tickers: log-normal prices, vols 15-60 %, market beta and one sector loading.

    Factor 0 is treated as the market; the other factors are sectors (one per ticker, round-robin). Ticker ``i``
    is named ``{prefix}{i}`` (zero-padded); when that name is in ``taken`` (a named ticker of the universe), it
    gets the next free name after the range instead, so exactly ``count`` tickers are generated and every
    other one keeps its name and parameters.
    """
    rng = np.random.default_rng(seed)
    taken = taken or set()
    width = max(4, len(str(count)))
    prices = np.exp(rng.normal(np.log(60.0), 0.9, count)).clip(1.0, 5000.0)
    vols = rng.uniform(0.15, 0.6, count)
    drifts = rng.normal(0.06, 0.04, count)
    mkt = rng.uniform(0.45, 0.75, count)
    sec = rng.uniform(0.15, 0.4, count)
    out: list[TickerConfig] = []
    n_sec = len(factors) - 1
    spare = count  # number of the next name tried for a ticker whose own name is taken
    for i in range(count):
        sym = f"{prefix}{i:0{width}d}"
        while sym in taken:
            sym = f"{prefix}{spare:0{width}d}"
            spare += 1
        loadings = {factors[0]: round(float(mkt[i]), 4)}
        sector = _SECTOR_NAMES[i % len(_SECTOR_NAMES)]
        if n_sec > 0:
            f = factors[1 + i % n_sec]
            loadings[f] = round(float(sec[i]), 4)
            sector = f.capitalize()
        out.append(
            TickerConfig(
                symbol=sym,
                name=f"Generated {sym}",
                sector=sector,
                start_price=round(float(prices[i]), 2),
                drift=round(float(drifts[i]), 4),
                volatility=round(float(vols[i]), 4),
                loadings=loadings,
                jumps=JumpConfig(intensity=2.0, mean=-0.02, std=0.04),
            )
        )
    return out


def universe_to_yaml(config: UniverseConfig) -> str:
    """Serialise a config (e.g. with generated tickers expanded) back to YAML."""
    return yaml.safe_dump(config.model_dump(mode="json", exclude_none=True), sort_keys=False)
