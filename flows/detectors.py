"""Anomaly detectors on bars: pure logic, no Bytewax, Kafka or database import.

One :class:`DetectorState` per ``(ticker, timeframe)`` sees that series' bars in order;
:func:`detect` returns the :class:`contracts.anomaly.Anomaly` s a bar raises. Final bars feed the market
detectors:

- **price spike**: ``|close - avg| / avg`` above ``price_spike_pct`` percent, ``avg`` being the mean close of
  the previous ``period`` bars (the bar itself is not part of its own baseline);
- **volume spike**: ``volume / avg_volume`` above ``volume_spike_ratio`` over the previous ``period`` bars;
- **RSI extremes**: the bars flow's ``rsi_14`` above ``rsi_overbought`` or below ``rsi_oversold``.

Live bars feed the pipeline detector:

- **high latency**: the live bar's ``lag_ms`` above ``latency_ms``: how long after its event time the bars flow
  processed the newest tick of the bar (bar.v1). It is measured where the ticks are processed, so it is the
  pipeline's own delay (feed, Kafka, the flow falling behind), free of the bar's grace and closing rules, and a
  replay of ``market-bars`` gives the same answer. Lags above ``latency_max_age_ms`` are a backlog being worked
  off (a backfill, a restart after downtime): skipped, so a catch-up raises one anomaly when it comes within
  that bound, not one per bar.

No alert storms: each detector is *edge-triggered*. It fires when its value crosses into the anomalous zone and
then stays silent, whatever the following bars do, until the value has come back past its *re-arm* level
(``rearm_fraction`` of the threshold for the ratio detectors, ``rsi_rearm_points`` inside the RSI bounds). An
RSI that stays above 70 for an hour raises one anomaly; a +8 % jump, which keeps the close above the 20-bar
average for several bars, raises one price spike.

Severity grows with how far past the threshold the value is, as a *score* (0 at the threshold):
``|dev| / pct - 1`` (price), ``ratio / threshold - 1`` (volume), ``latency / threshold - 1`` (latency),
``(rsi - overbought) / (100 - overbought)`` and ``(oversold - rsi) / oversold`` (RSI). Scores below
``severity_bands[0]`` are ``low``, then ``medium``, ``high``, and from ``severity_bands[2]`` on ``critical``.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import msgspec

from contracts.anomaly import Anomaly, AnomalyType, Severity
from contracts.bar import Bar


@dataclass(frozen=True, slots=True)
class DetectorConfig:
    """Thresholds and periods of every detector (see the module docstring)."""

    period: int = 20
    price_spike_pct: float = 5.0
    volume_spike_ratio: float = 3.0
    rsi_overbought: float = 70.0
    rsi_oversold: float = 30.0
    rsi_rearm_points: float = 5.0
    latency_ms: float = 100.0
    latency_max_age_ms: int = 600_000
    rearm_fraction: float = 0.8
    severity_bands: tuple[float, float, float] = (0.2, 0.5, 1.0)

    def __post_init__(self) -> None:
        problems: list[str] = []
        if self.period < 2:
            problems.append(f"period={self.period!r} must be at least 2")
        for name in ("price_spike_pct", "volume_spike_ratio", "latency_ms"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                problems.append(f"{name}={value!r} must be a positive number")
        if not 0 < self.rsi_oversold < self.rsi_overbought < 100:
            problems.append(
                f"need 0 < rsi_oversold < rsi_overbought < 100, got {self.rsi_oversold!r} and {self.rsi_overbought!r}"
            )
        if not 0 <= self.rsi_rearm_points < (self.rsi_overbought - self.rsi_oversold) / 2:
            problems.append(f"rsi_rearm_points={self.rsi_rearm_points!r} must be >= 0 and leave the bands apart")
        if not 0 < self.rearm_fraction <= 1:
            problems.append(f"rearm_fraction={self.rearm_fraction!r} must be in (0, 1]")
        if self.latency_max_age_ms <= 0:
            problems.append(f"latency_max_age_ms={self.latency_max_age_ms!r} must be > 0")
        b = self.severity_bands
        if len(b) != 3 or not 0 < b[0] < b[1] < b[2]:
            problems.append(f"severity_bands={b!r} must be three increasing positive scores")
        if problems:
            raise ValueError("; ".join(problems))


def severity_of(score: float, bands: tuple[float, float, float]) -> Severity:
    """The severity of a score (0 at the threshold) under ``bands``."""
    if score >= bands[2]:
        return Severity.CRITICAL
    if score >= bands[1]:
        return Severity.HIGH
    if score >= bands[0]:
        return Severity.MEDIUM
    return Severity.LOW


@dataclass(slots=True)
class DetectorState:
    """Rolling baselines and the detectors currently in their anomalous zone, for one series (picklable:
    Bytewax keeps it in recovery snapshots)."""

    period: int
    closes: deque[float] = field(init=False)
    volumes: deque[int] = field(init=False)
    active: set[str] = field(default_factory=set)
    last_start: int = -1

    def __post_init__(self) -> None:
        self.closes = deque(maxlen=self.period)
        self.volumes = deque(maxlen=self.period)

    def edge(self, kind: AnomalyType, over: bool, cleared: bool) -> bool:
        """True when ``kind`` enters its zone now; re-arms it once ``cleared`` (edge trigger, no storms)."""
        if kind in self.active:
            if cleared:
                self.active.discard(kind)
            return False
        if over:
            self.active.add(kind)
            return True
        return False


def _mean(values: deque[float] | deque[int]) -> float:
    return math.fsum(values) / len(values)


#: (type, value, threshold, reference, score, text) of an anomaly found on a bar
_Found = tuple[AnomalyType, float, float, float | None, float, str]


def detect(config: DetectorConfig, state: DetectorState, bar: Bar, now_ms: int) -> list[Anomaly]:
    """The anomalies ``bar`` raises (usually none), updating ``state``: a final bar runs the market detectors
    (final bars not newer than the last are ignored), a live bar the latency detector."""
    if not bar.final:
        return _anomalies(config, bar, _latency(config, state, bar), now_ms)
    if bar.start <= state.last_start:
        return []  # a duplicate or a replayed bar: already counted in the baselines
    state.last_start = bar.start
    found: list[_Found] = []
    full = len(state.closes) == config.period

    if full:
        avg = _mean(state.closes)
        dev = (bar.close - avg) / avg * 100.0
        t = config.price_spike_pct
        if state.edge(AnomalyType.PRICE_SPIKE, abs(dev) > t, abs(dev) <= t * config.rearm_fraction):
            text = f"close {bar.close:.2f} is {dev:+.2f}% from the {config.period}-bar average {avg:.2f}"
            found.append((AnomalyType.PRICE_SPIKE, round(dev, 4), t, round(avg, 4), abs(dev) / t - 1.0, text))
        avg_vol = _mean(state.volumes)
        if avg_vol > 0:
            ratio = bar.volume / avg_vol
            t = config.volume_spike_ratio
            if state.edge(AnomalyType.VOLUME_SPIKE, ratio > t, ratio <= t * config.rearm_fraction):
                text = f"volume {bar.volume} is {ratio:.1f}x the {config.period}-bar average {avg_vol:.0f}"
                found.append((AnomalyType.VOLUME_SPIKE, round(ratio, 4), t, round(avg_vol, 4), ratio / t - 1.0, text))

    rsi = bar.indicators.rsi_14 if bar.indicators is not None else None
    if rsi is not None and math.isfinite(rsi):
        hi, lo, band = config.rsi_overbought, config.rsi_oversold, config.rsi_rearm_points
        if state.edge(AnomalyType.RSI_OVERBOUGHT, rsi > hi, rsi <= hi - band):
            text = f"RSI {rsi:.1f} above {hi:g} (overbought)"
            found.append((AnomalyType.RSI_OVERBOUGHT, round(rsi, 4), hi, None, (rsi - hi) / (100.0 - hi), text))
        if state.edge(AnomalyType.RSI_OVERSOLD, rsi < lo, rsi >= lo + band):
            text = f"RSI {rsi:.1f} below {lo:g} (oversold)"
            found.append((AnomalyType.RSI_OVERSOLD, round(rsi, 4), lo, None, (lo - rsi) / lo, text))

    state.closes.append(bar.close)
    state.volumes.append(bar.volume)
    return _anomalies(config, bar, found, now_ms)


def _latency(config: DetectorConfig, state: DetectorState, bar: Bar) -> list[_Found]:
    """High latency on a live bar's ``lag_ms`` (none without one, or beyond ``latency_max_age_ms``)."""
    lag = bar.lag_ms
    if isinstance(lag, msgspec.UnsetType) or lag > config.latency_max_age_ms:
        return []
    t = config.latency_ms
    if not state.edge(AnomalyType.HIGH_LATENCY, lag > t, lag <= t * config.rearm_fraction):
        return []
    text = f"tick processed {lag} ms after its event time (threshold {t:g} ms)"
    return [(AnomalyType.HIGH_LATENCY, float(lag), t, None, lag / t - 1.0, text)]


def _anomalies(config: DetectorConfig, bar: Bar, found: list[_Found], now_ms: int) -> list[Anomaly]:
    return [
        Anomaly(
            ticker=bar.ticker,
            type=kind,
            severity=severity_of(score, config.severity_bands),
            timeframe=bar.timeframe,
            time=bar.start,
            value=value,
            threshold=threshold,
            reference=reference,
            detected_at=now_ms,
            message=f"{bar.ticker} {bar.timeframe}: {text}",
        )
        for kind, value, threshold, reference, score, text in found
    ]
