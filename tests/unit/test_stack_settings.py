"""Stack settings: every port ``make up`` listens on is distinct, bars flow ranges included."""

from __future__ import annotations

import pydantic
import pytest

from stack.apps import scrape_targets
from stack.settings import StackSettings


def test_defaults_leave_room_for_eight_bars_processes() -> None:
    settings = StackSettings(flow_processes=8)
    targets = scrape_targets(settings)
    ports = [t.rsplit(":", 1)[1] for job in targets.values() for t in job]
    assert len(ports) == len(set(ports)) == 8 + 5


def test_nine_bars_processes_run_into_the_ticks_flow_port() -> None:
    with pytest.raises(pydantic.ValidationError) as err:
        StackSettings(flow_processes=9)
    text = str(err.value)
    assert "port 9110 is used twice" in text
    assert "bars flow process 8 of STACK_FLOW_PROCESSES=9 (STACK_FLOW_METRICS_PORT + 8)" in text
    assert "STACK_TICKS_FLOW_METRICS_PORT" in text


def test_bars_range_into_the_anomalies_flow_port() -> None:
    with pytest.raises(pydantic.ValidationError, match=r"port 9111 is used twice.*STACK_ANOMALIES_FLOW_METRICS_PORT"):
        StackSettings(flow_processes=2, flow_metrics_port=9110, ticks_flow_metrics_port=9120)


def test_moving_the_bars_range_makes_sixteen_processes_fit() -> None:
    settings = StackSettings(flow_processes=16, flow_metrics_port=9200)
    assert scrape_targets(settings)["flow-bars"][-1] == "127.0.0.1:9215"


def test_cluster_ports_of_several_bars_processes_are_checked_too() -> None:
    with pytest.raises(pydantic.ValidationError, match=r"port 9202 is used twice.*cluster port of bars flow process 0"):
        StackSettings(flow_processes=2, prometheus_port=9202)
    StackSettings(flow_processes=1, prometheus_port=9202)  # one process starts no cluster


def test_single_ports_must_differ_and_ranges_stay_below_65536() -> None:
    with pytest.raises(pydantic.ValidationError, match=r"port 9090 is used twice.*API_PORT.*STACK_PROMETHEUS_PORT"):
        StackSettings(api_port=9090)
    with pytest.raises(pydantic.ValidationError, match="above 65535"):
        StackSettings(flow_metrics_port=65530, flow_processes=8)
