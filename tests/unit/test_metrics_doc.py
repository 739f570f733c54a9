"""docs/metrics.md lists exactly the metrics the code registers, with the right type and labels."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import yaml
from prometheus_client.metrics import MetricWrapperBase

from simulator.metrics import SimulatorMetrics

ROOT = Path(__file__).resolve().parents[2]
#: modules that define metrics of the flow processes and the gateway (module-level objects)
MODULES = ("common.metrics", "flows.observe", "api.metrics")
ROW = re.compile(r"^\| `([a-z_:]+)` \| ([a-z ]+) \|([^|]*)\|")


def _signature(metric: MetricWrapperBase) -> tuple[str, str, tuple[str, ...]]:
    kind = metric._type  # noqa: SLF001 - prometheus-client keeps these on the wrapper
    name = metric._name + ("_total" if kind == "counter" else "")  # noqa: SLF001
    return name, kind, tuple(metric._labelnames)  # noqa: SLF001


def registered() -> dict[str, tuple[str, tuple[str, ...]]]:
    """Every metric of every process: name -> (type, labels)."""
    metrics = [m for mod in MODULES for m in vars(importlib.import_module(mod)).values()]
    metrics += list(vars(SimulatorMetrics()).values())
    found: dict[str, tuple[str, tuple[str, ...]]] = {}
    for metric in metrics:
        if isinstance(metric, MetricWrapperBase):
            name, kind, labels = _signature(metric)
            found[name] = (kind, labels)
    return found


def documented() -> dict[str, tuple[str, tuple[str, ...]]]:
    """Rows of the metric tables in docs/metrics.md: name -> (type, labels)."""
    rows = {}
    for line in (ROOT / "docs" / "metrics.md").read_text().splitlines():
        match = ROW.match(line)
        if match:
            name, kind, labels = match.groups()
            assert name not in rows, f"{name} documented twice"
            rows[name] = (kind.strip(), tuple(re.findall(r"`([a-z_]+)`", labels)))
    return rows


def recording_rules() -> set[str]:
    rules = yaml.safe_load((ROOT / "stack" / "prometheus" / "alerts.yml").read_text())
    return {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}


def test_docs_list_exactly_the_registered_metrics() -> None:
    code = registered()
    docs = {n: v for n, v in documented().items() if v[0] != "recording rule"}
    assert len(code) > 20
    assert sorted(set(code) - set(docs)) == [], "registered but not in docs/metrics.md"
    assert sorted(set(docs) - set(code)) == [], "in docs/metrics.md but not registered"
    for name, (kind, labels) in code.items():
        assert docs[name] == (kind, labels), f"{name}: docs say {docs[name]}, code has {(kind, labels)}"


def test_docs_list_exactly_the_recording_rules() -> None:
    docs = {n for n, v in documented().items() if v[0] == "recording rule"}
    assert docs == recording_rules()


def test_seed_metric_names_exist() -> None:
    names = set(registered()) | recording_rules()
    assert {
        "tick_messages_received_total",
        "processing_latency_seconds",
        "kafka_consumer_lag",
        "messages_per_second",
        "end_to_end_latency_seconds",
    } <= names


def test_every_metric_has_help_text_and_no_ticker_label_outside_the_bounded_counter() -> None:
    metrics = [m for mod in MODULES for m in vars(importlib.import_module(mod)).values()]
    metrics += list(vars(SimulatorMetrics()).values())
    for metric in metrics:
        if isinstance(metric, MetricWrapperBase):
            name, _, labels = _signature(metric)
            assert metric._documentation.strip(), name  # noqa: SLF001
            if "ticker" in labels:
                assert name == "tick_messages_received_total", f"{name}: unbounded ticker label"
