"""The simulator's Prometheus registry: its own metrics and the standard process and Python ones."""

from __future__ import annotations

from prometheus_client import generate_latest

from simulator.metrics import SimulatorMetrics


def test_the_registry_carries_process_and_python_metrics_next_to_the_simulators() -> None:
    metrics = SimulatorMetrics()
    metrics.ticks_produced.inc(3)
    text = generate_latest(metrics.registry).decode()
    assert "sim_ticks_produced_total 3.0" in text
    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds", "python_info"):
        assert f"\n{name}" in text, name
    assert "python_gc_objects_collected_total{" in text


def test_two_instances_keep_separate_registries() -> None:
    first, second = SimulatorMetrics(), SimulatorMetrics()
    first.ticks_produced.inc()
    assert "sim_ticks_produced_total 0.0" in generate_latest(second.registry).decode()
