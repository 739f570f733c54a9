"""docs/metrics.md lists exactly the metrics the code registers, with the right type and labels; the alert rules and
the dashboards use no other metric names."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import yaml
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
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


#: PromQL words that are not metric names
_PROMQL_WORDS = set("and or unless by without on ignoring group_left group_right offset bool".split())
#: series Prometheus makes itself
_PROMETHEUS_SERIES = {"up"}


def promql_metrics(expr: str) -> set[str]:
    """Metric names an expression selects: label matchers, durations, grouping clauses, function names and
    keywords removed (a small lexer; enough for the expressions of this repo, checked by promtool elsewhere)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    expr = re.sub(r"\{[^}]*\}", " ", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", " ", expr)  # range and subquery durations
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    names = set()
    for match in re.finditer(r"(?<![\w.$])([a-zA-Z_:][\w:]*)\b(\s*\()?", expr):
        name, call = match.groups()
        if not call and name not in _PROMQL_WORDS and not re.fullmatch(r"\d.*|[eE]\d*|Inf|NaN", name):
            names.add(name)
    return names


def _standard_series() -> set[str]:
    """The series of prometheus-client's standard process, platform and GC collectors (docs/metrics.md: every
    process but a multi-worker gateway exports them)."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return {sample.name for family in registry.collect() for sample in family.samples}


def _known_series() -> set[str]:
    names = set(_PROMETHEUS_SERIES) | recording_rules() | _standard_series()
    for name, (kind, _) in registered().items():
        names.add(name)
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return names


def _rule_exprs() -> list[tuple[str, str]]:
    rules = yaml.safe_load((ROOT / "stack" / "prometheus" / "alerts.yml").read_text())
    return [(r.get("alert") or r["record"], r["expr"]) for g in rules["groups"] for r in g["rules"]]


def _dashboard_exprs() -> list[tuple[str, str]]:
    from grafana.__main__ import DASHBOARDS
    from grafana.common import to_dict

    out = []
    for file, build in DASHBOARDS.items():
        board = to_dict(build())
        for panel in board["panels"]:
            out += [(f"{file}: {panel['title']}", t["expr"]) for t in panel.get("targets", []) if "expr" in t]
        for variable in board.get("templating", {}).get("list", []):
            if variable.get("datasource", {}).get("type") == "prometheus":
                query = re.fullmatch(r"label_values\((\w+), \w+\)", variable["query"]["query"])
                assert query, f"{file}: variable {variable['name']}: unsupported query"
                out.append((f"{file}: variable {variable['name']}", query.group(1)))
    return out


def test_promql_metrics_finds_only_metric_names() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, path) (rate(end_to_end_latency_seconds_bucket{job=~"$job"}[5m])))'
        ' / on () group_left clamp_min(sum(api_workers), 1) and on () max(up{job="x"}) == 1 or vector(0)'
    )
    assert promql_metrics(expr) == {"end_to_end_latency_seconds_bucket", "api_workers", "up"}


def test_alert_rules_and_dashboards_use_only_registered_metrics() -> None:
    known = _known_series()
    used = _rule_exprs() + _dashboard_exprs()
    assert len(used) > 20
    unknown = {f"{what}: {name}" for what, expr in used for name in promql_metrics(expr) - known}
    assert not unknown, f"metrics no process registers: {sorted(unknown)}"
    dashboards = {name for what, expr in used if ".json" in what for name in promql_metrics(expr)}
    assert {"messages_per_second", "end_to_end_latency_seconds_bucket", "flow_sink_errors_total"} <= dashboards
