"""Realism report: the stylized facts of returns (Cont 2001) on simulated daily and 1-minute bars.

Daily statistics are medians over many independent paths (and the universe's tickers) of ``years`` of daily
bars each, shown against the targets of the default preset and against real daily data bundled with the
``arch`` package (S&P 500 and NASDAQ composite, 1999-2018, offline). Intraday statistics (volume U shape,
1-minute kurtosis, realised vs configured correlation) come from a long sample of 1-minute bars.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
from numpy.typing import NDArray
from scipy import stats

from common.clock import to_ms
from simulator.export import BarBatch, simulate_bars
from simulator.session import Session
from simulator.universe import Universe

F64 = NDArray[np.float64]
LEVERAGE_LAGS = range(1, 11)


# --------------------------------------------------------------------------- statistics of one return series


def acf(x: F64, lag: int) -> float:
    """Sample autocorrelation at ``lag``."""
    x = x - x.mean()
    return float(np.dot(x[:-lag], x[lag:]) / np.dot(x, x))


def hill_left(r: F64, tail: float = 0.025) -> float:
    """Hill estimator of the left-tail index from the ``tail`` fraction of largest losses."""
    losses = np.sort(-r[r < 0])[::-1]
    k = max(2, int(tail * r.size))
    if losses.size <= k:
        return float("nan")
    return float(1.0 / np.mean(np.log(losses[:k] / losses[k])))


def leverage(r: F64, lags: range = LEVERAGE_LAGS) -> float:
    """Mean over ``lags`` of corr(r_t, |r_{t+k}|) (negative: falls raise future volatility)."""
    a = np.abs(r)
    return float(np.mean([np.corrcoef(r[:-k], a[k:])[0, 1] for k in lags]))


def aggregate(r: F64, h: int) -> F64:
    """Non-overlapping ``h``-period sums of log returns."""
    n = r.size // h
    out: F64 = r[: n * h].reshape(n, h).sum(axis=1)
    return out


def volume_abs_return_corr(r: F64, volume: F64, window: int = 50) -> float:
    """corr(|r_t|, volume_t / trailing mean volume): detrended so long-run volume growth does not count."""
    v = volume.astype(np.float64)
    c = np.cumsum(np.concatenate(([0.0], v)))
    trail = (c[window:] - c[:-window]) / window  # mean of v[t-window:t] for t >= window
    rel = v[window:] / trail[:-1] if trail.size > 1 else v
    n = rel.size
    return float(np.corrcoef(np.abs(r[-n:]), rel)[0, 1])


def daily_facts(r: F64, volume: F64 | None) -> dict[str, float]:
    """All daily-horizon stylized facts of one series of log returns."""
    out = {
        "excess_kurtosis": float(stats.kurtosis(r)),
        "skew": float(stats.skew(r)),
        "hill_left_2.5%": hill_left(r),
        "max_abs_acf_r_1_10": max(abs(acf(r, k)) for k in range(1, 11)),
        "acf_abs_r_1": acf(np.abs(r), 1),
        "acf_abs_r_10": acf(np.abs(r), 10),
        "acf_abs_r_50": acf(np.abs(r), 50),
        "leverage_1_10": leverage(r),
        "kurtosis_20d": float(stats.kurtosis(aggregate(r, 20))),
    }
    out["kurtosis_20d_minus_1d"] = out["kurtosis_20d"] - out["excess_kurtosis"]
    out["volume_abs_r_corr"] = volume_abs_return_corr(r, volume) if volume is not None else float("nan")
    return out


@dataclass(frozen=True)
class Target:
    """A stylized-fact target: statistic name, human text and the predicate on the median value."""

    stat: str
    text: str
    ok: Callable[[float], bool]


TARGETS = (
    Target("excess_kurtosis", "in [3, 15]", lambda v: 3.0 <= v <= 15.0),
    Target("skew", "<= 0", lambda v: v <= 0.0),
    Target("hill_left_2.5%", "in [2.5, 4.5]", lambda v: 2.5 <= v <= 4.5),
    Target("max_abs_acf_r_1_10", "<= 0.08", lambda v: v <= 0.08),
    Target("acf_abs_r_1", ">= 0.15", lambda v: v >= 0.15),
    Target("acf_abs_r_10", ">= 0.15", lambda v: v >= 0.15),
    Target("acf_abs_r_50", ">= 0.08", lambda v: v >= 0.08),
    Target("leverage_1_10", "<= -0.04", lambda v: v <= -0.04),
    Target("kurtosis_20d_minus_1d", "< 0 (20d kurtosis below 1d)", lambda v: v < 0.0),
    Target("volume_abs_r_corr", ">= 0.15", lambda v: v >= 0.15),
    Target("corr_rmse_vs_configured", "<= 0.02 (pooled paths)", lambda v: v <= 0.02),
)


# --------------------------------------------------------------------------- data


def _collect(batches: list[BarBatch], n: int) -> tuple[F64, F64, F64, F64]:
    """Close, open (as ``[T, n]`` log prices), volume ``[T, n]`` and bar timestamps ``[T]``."""
    close = np.concatenate([b.close for b in batches]).reshape(-1, n)
    opn = np.concatenate([b.open for b in batches]).reshape(-1, n)
    vol = np.concatenate([b.volume for b in batches]).reshape(-1, n)
    ts = np.concatenate([b.ts_ms for b in batches]).reshape(-1, n)[:, 0]
    return np.log(close), np.log(opn), vol.astype(np.float64), ts.astype(np.float64)


def simulated_daily(universe: Universe, session: Session, seed: int, paths: int, years: int) -> dict[str, float]:
    """Median of every daily fact over ``paths`` x tickers, and the RMSE of the pooled realised correlation."""
    start = to_ms(datetime(2000, 1, 3, tzinfo=UTC))
    end = to_ms(datetime(2000 + years, 1, 3, tzinfo=UTC))
    n = len(universe)
    rows: list[dict[str, float]] = []
    pooled = []
    for p in range(paths):
        lc, _, vol, _ = _collect(list(simulate_bars(universe, session, seed + p, start, end, "1d")), n)
        r = np.diff(lc, axis=0)
        pooled.append(r)
        rows += [daily_facts(r[:, i], vol[1:, i]) for i in range(n)]
    out = {k: float(np.nanmedian([row[k] for row in rows])) for k in rows[0]}
    if n > 1:
        out["corr_rmse_vs_configured"] = correlation_rmse(np.vstack(pooled), universe.implied_correlation())
    return out


def correlation_rmse(returns: F64, configured: F64) -> float:
    """RMS difference between the realised correlation of ``returns`` ``[T, n]`` and ``configured`` (off-diagonal)."""
    real = np.atleast_2d(np.corrcoef(returns.T))
    iu = np.triu_indices(returns.shape[1], 1)
    return float(np.sqrt(np.mean((real[iu] - configured[iu]) ** 2)))


def real_daily() -> dict[str, dict[str, float]]:
    """Daily facts of the S&P 500 and NASDAQ data shipped with ``arch`` (empty if unavailable)."""
    out: dict[str, dict[str, float]] = {}
    try:
        from arch.data import nasdaq, sp500
    except ImportError:  # pragma: no cover - arch is a dependency, but keep the report usable without it
        return out
    for name, mod in (("S&P 500", sp500), ("NASDAQ", nasdaq)):
        df = mod.load()
        close = df["Adj Close"].to_numpy(dtype=np.float64)
        volume = df["Volume"].to_numpy(dtype=np.float64) if "Volume" in df else None
        r = np.diff(np.log(close))
        out[name] = daily_facts(r, None if volume is None else volume[1:])
    return out


def simulated_intraday(universe: Universe, session: Session, seed: int, days: int) -> dict[str, float]:
    """1-minute facts: kurtosis, U shape of volume, volume-|r| corr, realised vs implied correlation RMSE."""
    start = to_ms(datetime(2021, 1, 4, tzinfo=UTC))
    end = start + int(days * 86_400_000 * (7 / 5 if session.mode == "exchange" else 1))
    n = len(universe)
    lc, lo, vol, ts = _collect(list(simulate_bars(universe, session, seed, start, end, "1m")), n)
    r = lc - lo  # within-bar returns: overnight gaps excluded
    out = {
        "1m_excess_kurtosis": float(np.median([stats.kurtosis(r[:, i]) for i in range(n)])),
        "1m_volume_abs_r_corr": float(np.median([np.corrcoef(np.abs(r[:, i]), vol[:, i])[0, 1] for i in range(n)])),
    }
    if session.mode == "exchange":
        minute = ((ts - ts[0]) / 60_000.0) % 1440.0  # minutes since the first open, modulo a day
        per_day = int(session.session_seconds // 60)
        k = (np.arange(ts.size) % per_day) if np.all(np.diff(minute) != 0) else np.arange(ts.size)
        v = vol.mean(axis=1)
        edge = (k < 30) | (k >= per_day - 30)
        mid = (k >= per_day // 2 - 30) & (k < per_day // 2 + 30)
        out["1m_volume_edge_over_midday"] = float(v[edge].mean() / v[mid].mean())
    return out


def build_report(
    universe: Universe,
    session: Session,
    seed: int = 1,
    paths: int = 16,
    years: int = 20,
    intraday_days: int = 60,
    with_real: bool = True,
) -> str:
    """The report as a Markdown-style table (targets, simulated medians, real data, pass/fail)."""
    sim = simulated_daily(universe, session, seed, paths, years)
    real = real_daily() if with_real else {}
    names = list(real)
    head = ["statistic (daily)", "target", f"simulated ({paths} paths x {years}y, median)", *names, "pass"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    targets = {t.stat: t for t in TARGETS}
    for stat, value in sim.items():
        t = targets.get(stat)
        real_cells = [f"{real[nm].get(stat, float('nan')):.3f}" for nm in names]
        cells = [stat, t.text if t else "", f"{value:.3f}", *real_cells, ("yes" if t.ok(value) else "NO") if t else ""]
        lines.append("| " + " | ".join(cells) + " |")
    intr = simulated_intraday(universe, session, seed, intraday_days)
    intr_targets = {
        "1m_volume_abs_r_corr": Target("1m_volume_abs_r_corr", ">= 0.15", lambda v: v >= 0.15),
        "1m_volume_edge_over_midday": Target("1m_volume_edge_over_midday", "> 1 (U shape)", lambda v: v > 1.0),
    }
    lines += [
        "",
        f"| statistic (1-minute bars, {intraday_days} days) | target | simulated | pass |",
        "|---|---|---|---|",
    ]
    for stat, value in intr.items():
        tt = intr_targets.get(stat)
        verdict = ("yes" if tt.ok(value) else "NO") if tt else ""
        lines.append(f"| {stat} | {tt.text if tt else ''} | {value:.3f} | {verdict} |")
    return "\n".join(lines)
