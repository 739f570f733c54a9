"""Detectors on hand-made bar series: each fires once on crossing, re-arms after clearing, grades severity."""

from __future__ import annotations

import copy
import pickle

import msgspec
import pytest

from contracts.anomaly import AnomalyType, Severity
from contracts.bar import Bar, Indicators
from flows.detectors import DetectorConfig, DetectorState, detect, severity_of

MIN = 60_000
T0 = 1_767_607_200_000  # 2026-01-05T10:00:00Z
FAR_FUTURE = T0 + 10 * 365 * 86_400_000  # processing time: no detector depends on it


def bar(i: int, close: float, volume: int = 1_000, rsi: float | None = None, ticker: str = "TECH") -> Bar:
    start = T0 + i * MIN
    return Bar(
        ticker=ticker, timeframe="1m", start=start, end=start + MIN, open=close, high=close, low=close, close=close,
        volume=volume, vwap=close, trades=10, first_tick=start, last_tick=start + MIN - 1, final=True,
        indicators=Indicators(rsi_14=rsi),
    )  # fmt: skip


def run(bars: list[Bar], config: DetectorConfig | None = None, now: int = FAR_FUTURE) -> list[tuple[int, str, str]]:
    config = config or DetectorConfig()
    state = DetectorState(config.period)
    out = []
    for i, b in enumerate(bars):
        out += [(i, a.type.value, a.severity.value) for a in detect(config, state, b, now)]
    return out


def flat(n: int, price: float = 100.0) -> list[Bar]:
    return [bar(i, price) for i in range(n)]


def test_no_anomaly_on_a_quiet_series() -> None:
    assert run(flat(100)) == []


def test_price_spike_fires_once_for_a_jump_that_persists() -> None:
    bars = flat(30) + [bar(30 + i, 108.0) for i in range(30)]  # +8 %, and it stays there
    assert run(bars) == [(30, "price_spike", "high")]


def test_price_spike_needs_a_full_baseline() -> None:
    bars = flat(19) + [bar(19, 150.0)]
    assert run(bars) == []


def test_price_spike_rearms_after_the_price_returns() -> None:
    bars = flat(25) + [bar(25, 110.0)] + [bar(26 + i, 100.0) for i in range(25)] + [bar(51, 90.0)]
    found = run(bars)
    assert [(i, t) for i, t, _ in found] == [(25, "price_spike"), (51, "price_spike")]


def test_price_spike_threshold_is_strict_and_configurable() -> None:
    bars = flat(20) + [bar(20, 105.0)]  # exactly 5 %
    assert run(bars) == []
    assert run(bars, DetectorConfig(price_spike_pct=4.5)) == [(20, "price_spike", "low")]


def test_price_spike_value_threshold_and_reference() -> None:
    config = DetectorConfig()
    state = DetectorState(config.period)
    for b in flat(20):
        detect(config, state, b, FAR_FUTURE)
    (a,) = detect(config, state, bar(20, 92.0), FAR_FUTURE)
    expected = (AnomalyType.PRICE_SPIKE, -8.0, 5.0, 100.0, T0 + 20 * MIN)
    assert (a.type, a.value, a.threshold, a.reference, a.time) == expected
    assert a.severity is Severity.HIGH
    assert "-8.00%" in a.message


def test_volume_spike_fires_once_and_rearms() -> None:
    bars = [bar(i, 100.0, 1_000) for i in range(20)]
    bars += [bar(20, 100.0, 5_000), bar(21, 100.0, 5_000)]  # 5x, then still high vs the baseline
    bars += [bar(22 + i, 100.0, 1_000) for i in range(3)] + [bar(25, 100.0, 20_000)]
    found = run(bars)
    assert [(i, t) for i, t, _ in found] == [(20, "volume_spike"), (25, "volume_spike")]
    assert found[0][2] == "high"  # 5 / 3 - 1 = 0.67
    assert found[1][2] == "critical"


def test_rsi_above_70_for_many_bars_raises_one_anomaly() -> None:
    rsis = [50, 60, 69, 71, 75, 80, 78, 72, 71, 68, 66, 71]  # 68, 66 stay inside the 5-point re-arm band
    found = run([bar(i, 100.0, rsi=r) for i, r in enumerate(rsis)])
    assert found == [(3, "rsi_overbought", "low")]


def test_rsi_rearms_below_the_band_and_oversold_is_symmetric() -> None:
    rsis = [71, 64, 72, 40, 29, 10, 31, 36, 20]
    found = run([bar(i, 100.0, rsi=r) for i, r in enumerate(rsis)])
    assert found == [(0, "rsi_overbought", "low"), (2, "rsi_overbought", "low"), (4, "rsi_oversold", "low"),
                     (8, "rsi_oversold", "medium")]  # fmt: skip


def test_rsi_none_is_ignored() -> None:
    assert run([bar(i, 100.0, rsi=None) for i in range(30)]) == []


def live(i: int, lag_ms: int | None, close: float = 100.0, ticker: str = "TECH") -> Bar:
    """The live 1m bar of minute ``i`` carrying the bars flow's processing lag (None: a bar without one)."""
    start = T0 + i * MIN
    lag = msgspec.UNSET if lag_ms is None else lag_ms
    return Bar(
        ticker=ticker, timeframe="1m", start=start, end=start + MIN, open=close, high=close, low=close, close=close,
        volume=10, vwap=close, trades=1, first_tick=start, last_tick=start, final=False, lag_ms=lag,
    )  # fmt: skip


def test_latency_is_the_live_bars_processing_lag_edge_triggered() -> None:
    config = DetectorConfig(latency_ms=100)
    state = DetectorState(config.period)
    assert detect(config, state, live(0, 100), FAR_FUTURE) == []  # exactly the threshold
    assert detect(config, state, live(0, None), FAR_FUTURE) == []  # no lag (an older bars flow): nothing
    (a,) = detect(config, state, live(1, 250), T0 + 2 * MIN)
    assert (a.type, a.value, a.threshold, a.severity) == (AnomalyType.HIGH_LATENCY, 250.0, 100.0, Severity.CRITICAL)
    assert (a.time, a.timeframe, a.detected_at) == (T0 + MIN, "1m", T0 + 2 * MIN)
    assert "250 ms" in a.message
    for lag in (500, 90, 101):  # still high, then not cleared (re-arm at 80): no storm
        assert detect(config, state, live(1, lag), FAR_FUTURE) == []
    assert detect(config, state, live(2, 80), FAR_FUTURE) == []  # cleared, re-armed
    (b,) = detect(config, state, live(2, 130), FAR_FUTURE)
    assert b.severity is Severity.MEDIUM  # 0.3 over


def test_latency_does_not_touch_the_market_baselines_and_finals_carry_none() -> None:
    config = DetectorConfig()
    state = DetectorState(config.period)
    for i in range(30):
        assert detect(config, state, live(i, 5, close=50.0 + i), FAR_FUTURE) == []
    assert (len(state.closes), state.last_start) == (0, -1)  # live bars never enter the price/volume baselines
    assert run(flat(25), config, now=T0 + 26 * MIN) == []  # finals: no latency check, minutes after their end


def test_lag_of_a_backlog_being_worked_off_is_skipped() -> None:
    config = DetectorConfig(latency_max_age_ms=60_000)
    state = DetectorState(config.period)
    assert detect(config, state, live(0, 3_600_000), FAR_FUTURE) == []  # an hour behind: catching up
    (a,) = detect(config, state, live(1, 59_000), FAR_FUTURE)  # within the bound: one anomaly
    assert a.type is AnomalyType.HIGH_LATENCY
    assert detect(config, state, live(2, 30_000), FAR_FUTURE) == []


def test_replayed_or_duplicate_bars_do_not_count_twice() -> None:
    config = DetectorConfig()
    state = DetectorState(config.period)
    for b in flat(20):
        detect(config, state, b, FAR_FUTURE)
    jump = bar(20, 108.0)
    assert len(detect(config, state, jump, FAR_FUTURE)) == 1
    assert detect(config, state, jump, FAR_FUTURE) == []
    assert detect(config, state, bar(5, 200.0), FAR_FUTURE) == []
    assert list(state.closes)[-1] == 108.0
    assert len(state.closes) == 20


def test_state_survives_a_snapshot_round_trip() -> None:
    config = DetectorConfig()
    state = DetectorState(config.period)
    for b in flat(20):
        detect(config, state, b, FAR_FUTURE)
    detect(config, state, bar(20, 108.0), FAR_FUTURE)
    restored = pickle.loads(pickle.dumps(copy.deepcopy(state)))
    assert restored.active == state.active == {AnomalyType.PRICE_SPIKE}
    assert list(restored.closes) == list(state.closes)
    assert restored.closes.maxlen == 20
    assert detect(config, restored, bar(21, 108.5), FAR_FUTURE) == []  # still in the zone after a restore


@pytest.mark.parametrize(
    ("score", "expected"),
    [(0.0, "low"), (0.19, "low"), (0.2, "medium"), (0.5, "high"), (0.99, "high"), (1.0, "critical")],
)
def test_severity_bands(score: float, expected: str) -> None:
    assert severity_of(score, (0.2, 0.5, 1.0)).value == expected


@pytest.mark.parametrize(
    "change",
    [{"period": 1}, {"price_spike_pct": 0}, {"rsi_oversold": 75}, {"rearm_fraction": 0},
     {"severity_bands": (1, 0.5, 2)}, {"latency_ms": float("nan")}, {"rsi_rearm_points": 30}],
)  # fmt: skip
def test_bad_config_is_rejected_naming_the_field(change: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=next(iter(change))):
        DetectorConfig(**change)  # type: ignore[arg-type]
