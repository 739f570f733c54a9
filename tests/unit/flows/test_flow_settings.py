"""FlowSettings: env parsing (comma or JSON lists), fail-fast validation naming the field."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from flows.settings import FlowSettings


def test_defaults_map_to_the_pure_configs() -> None:
    s = FlowSettings()
    cfg = s.aggregation_config()
    assert cfg.timeframes == ("1m", "5m", "15m", "1h", "1d")
    assert cfg.grace_ms == 2_000
    assert cfg.close_on_system_time is True
    assert cfg.indicators.sma_periods == (20, 50, 200)
    assert FlowSettings(mode="backfill").aggregation_config().close_on_system_time is False


def test_log_clock_margins_from_env_in_live_mode_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOW_IDLE_CLOSE_MS", "400")
    monkeypatch.setenv("FLOW_IDLE_CLOSE_APPEND_MS", "30")
    monkeypatch.setenv("FLOW_MAX_FUTURE_MS", "9000")
    times = FlowSettings().log_times()
    assert times is not None
    assert (times.idle_close_ms, times.idle_close_append_ms, times.max_future_ms) == (400, 30, 9_000)
    assert (times.idle_margin(append_time=True), times.idle_margin(append_time=False)) == (30, 400)
    assert FlowSettings(mode="backfill").log_times() is None  # backfill closes on event time only
    monkeypatch.setenv("FLOW_IDLE_CLOSE_APPEND_MS", "-1")
    with pytest.raises(ValidationError, match="idle_close_append_ms"):
        FlowSettings()


def test_lists_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOW_TIMEFRAMES", "1m, 15m,1d")
    monkeypatch.setenv("FLOW_SMA_PERIODS", "[10,30,100]")
    monkeypatch.setenv("FLOW_GRACE_MS", "500")
    s = FlowSettings()
    assert s.timeframes == ("1m", "15m", "1d")
    assert s.sma_periods == (10, 30, 100)
    assert s.grace_ms == 500


def test_periods_of_one_where_talib_accepts_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOW_SMA_PERIODS", "1,2,3")
    monkeypatch.setenv("FLOW_EMA_PERIODS", "1,2")
    monkeypatch.setenv("FLOW_MACD_SIGNAL", "1")
    monkeypatch.setenv("FLOW_MACD_FAST", "2")
    monkeypatch.setenv("FLOW_MACD_SLOW", "3")
    cfg = FlowSettings().indicator_config()
    assert (cfg.sma_periods, cfg.ema_periods, cfg.macd_fast, cfg.macd_slow, cfg.macd_signal) == (
        (1, 2, 3),
        (1, 2),
        2,
        3,
        1,
    )


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"timeframes": ("5m", "1m")}, "timeframes"),
        ({"timeframes": ("1m", "7m")}, "timeframes"),
        ({"grace_ms": -1}, "grace_ms"),
        ({"macd_fast": 30}, "macd_fast"),
        ({"rsi_period": 1}, r"rsi_period=1 must be an integer within 2\.\.100000 \(TA-Lib's range for RSI\)"),
        ({"sma_periods": (0, 2, 3)}, r"sma_periods=\(0, 2, 3\) must each be an integer within 1\.\.100000"),
        ({"macd_signal": 0}, r"macd_signal=0 must be an integer within 1\.\.100000"),
        ({"bb_period": 1}, r"bb_period=1 must be an integer within 2\.\.100000"),
        ({"gap_fill": True}, "gap_fill"),
        ({"mode": "replay"}, "mode"),
        ({"fetch_partition_bytes": 1024}, "fetch_partition_bytes"),
    ],
)
def test_invalid_settings_fail_naming_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        FlowSettings(**kwargs)  # type: ignore[arg-type]


def test_each_flow_fetches_its_own_size_unless_the_setting_says_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    default = FlowSettings()
    assert (default.fetch_bytes("bars"), default.fetch_bytes("ticks")) == (16 * 1024 * 1024, 4 * 1024 * 1024)
    monkeypatch.setenv("FLOW_FETCH_PARTITION_BYTES", "1048576")
    assert (FlowSettings().fetch_bytes("bars"), FlowSettings().fetch_bytes("ticks")) == (1_048_576, 1_048_576)


def test_importing_the_flow_module_needs_no_kafka_or_sinks() -> None:
    code = (
        "import sys, flows.bars; "
        "assert 'flows.sinks' not in sys.modules and 'flows.sources' not in sys.modules; "
        "assert 'confluent_kafka' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
