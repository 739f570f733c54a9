"""The pipeline dashboard: throughput per stage, lag, end-to-end latency, dead letters, sinks, market anomalies,
WebSocket, API, CPU and memory per process.

Every expression here runs against a real Prometheus in tests/integration/test_dashboards.py; metric names and
labels are documented in docs/metrics.md.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard, stat
from grafana_foundation_sdk.models import dashboard as models

from grafana.common import PROMETHEUS, prom, timeseries_panel

UID = "md-pipeline"
JOB = 'job=~"$job"'


def _rate(metric: str, by: str = "") -> str:
    """Per-second rate of counter ``metric`` over the selected jobs, summed (by ``by`` when given)."""
    rate = f"rate({metric}{{{JOB}}}[$__rate_interval])"
    return f"sum by ({by}) ({rate})" if by else f"sum({rate})"


def _quantile(q: float, metric: str, by: str = "") -> str:
    """Quantile ``q`` of histogram ``metric`` over the selected jobs (split by ``by`` when given)."""
    labels = f"le, {by}" if by else "le"
    return f"histogram_quantile({q}, sum by ({labels}) (rate({metric}_bucket{{{JOB}}}[$__rate_interval])))"


def _quantiles(metric: str, by: str, legend: str) -> list[object]:
    """p50 and p99 of a histogram, split by ``by``."""
    return [
        prom(
            _quantile(q, metric, by),
            f"p{round(q * 100)} {legend}",
            ref_id,
        )
        for q, ref_id in ((0.5, "A"), (0.99, "B"))
    ]


def _job_variable() -> dashboard.QueryVariable:
    return (
        dashboard.QueryVariable("job")
        .label("Process")
        .datasource(PROMETHEUS)
        .query({"query": "label_values(up, job)", "refId": "PrometheusVariableQueryEditor-VariableQuery"})
        .refresh(models.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .current(models.VariableOption(selected=True, text="All", value="$__all"))
    )


def build() -> models.Dashboard:
    """The dashboard model."""
    board = (
        dashboard.Dashboard("Market data pipeline")
        .uid(UID)
        .tags(["market-data", "pipeline"])
        .description("Simulator -> Kafka -> flows -> PostgreSQL/Redis -> gateway: rates, lag, latency, errors")
        .refresh("10s")
        .time("now-30m", "now")
        .timezone("utc")
        .with_variable(_job_variable())
        .with_row(dashboard.Row("Throughput"))
        .with_panel(
            stat.Panel()
            .title("Processes up")
            .description("Scrape targets answering (1) or not (0)")
            .datasource(PROMETHEUS)
            .with_target(prom(f"up{{{JOB}}}", "{{job}} {{instance}}"))
            .height(4)
            .span(24)
        )
        .with_panel(
            timeseries_panel(
                "Ticks per second by stage", "short", "messages_per_second recording rule", datasource=PROMETHEUS
            ).with_target(prom(f"sum by (stage) (messages_per_second{{{JOB}}})", "{{stage}}"))
        )
        .with_panel(
            timeseries_panel(
                "Kafka consumer lag",
                "short",
                "Messages behind the high watermark, per consumer and topic",
                datasource=PROMETHEUS,
            ).with_target(prom(f"sum by (job, topic) (kafka_consumer_lag{{{JOB}}})", "{{job}} {{topic}}"))
        )
        .with_panel(
            timeseries_panel(
                "Bars emitted per second",
                "short",
                "Final and live bars per timeframe from the bars flow",
                datasource=PROMETHEUS,
            ).with_target(
                prom(
                    _rate("flow_bars_emitted_total", "timeframe, final"),
                    "{{timeframe}} final={{final}}",
                )
            )
        )
        .with_panel(
            timeseries_panel(
                "Event-time lag of the bars flow", "s", "System time minus the newest tick time", datasource=PROMETHEUS
            ).with_target(prom(f"max by (job) (flow_event_time_lag_seconds{{{JOB}}})", "{{job}}"))
        )
        .with_row(dashboard.Row("Latency"))
        .with_panel(
            timeseries_panel(
                "End-to-end latency p50 / p99",
                "s",
                "Tick event time to stored bar (flows) and to WebSocket fan-out (gateway)",
                datasource=PROMETHEUS,
            ).targets(_quantiles("end_to_end_latency_seconds", "path", "{{path}}"))  # type: ignore[arg-type]
        )
        .with_panel(
            timeseries_panel(
                "Processing time per batch p50 / p99", "s", "Decode and aggregate one batch", datasource=PROMETHEUS
            ).targets(_quantiles("processing_latency_seconds", "stage", "{{stage}}"))  # type: ignore[arg-type]
        )
        .with_row(dashboard.Row("Errors"))
        .with_panel(
            timeseries_panel(
                "Late and dead-lettered ticks per second",
                "short",
                "Ticks sent to the dead-letter topic, by kind",
                datasource=PROMETHEUS,
            ).with_target(prom(_rate("flow_dead_letters_total", "kind"), "{{kind}}"))
        )
        .with_panel(
            timeseries_panel(
                "Sink errors and write time",
                "short",
                "Failed write attempts per second, by sink",
                datasource=PROMETHEUS,
            )
            .with_target(prom(_rate("flow_sink_errors_total", "sink"), "errors {{sink}}"))
            .with_target(
                prom(
                    _quantile(0.99, "flow_sink_write_seconds", "sink"),
                    "p99 write s {{sink}}",
                    "B",
                )
            )
        )
        .with_panel(
            timeseries_panel(
                "Ticks skipped or delivered late",
                "short",
                "Kafka records deleted by retention before a flow read them (should stay 0; docs/flows.md), and "
                "records that arrived behind a partition's idle clock (flow_idle_clock_overrun_total)",
                datasource=PROMETHEUS,
            )
            .with_target(
                prom(f"sum by (job) (increase(flow_kafka_source_offset_gap_total{{{JOB}}}[5m]))", "lost {{job}}")
            )
            .with_target(
                prom(f"sum by (job) (increase(flow_idle_clock_overrun_total{{{JOB}}}[5m]))", "late {{job}}", "B")
            )
            .span(24)
        )
        .with_row(dashboard.Row("Anomalies"))
        .with_panel(
            timeseries_panel(
                "Market anomalies",
                "opm",
                "Anomalies detected per minute by the anomalies flow, by type and severity (docs/anomalies.md)",
                datasource=PROMETHEUS,
            )
            .with_target(
                prom(f"60 * {_rate('flow_anomalies_detected_total', 'type, severity')}", "{{type}} {{severity}}")
            )
            .span(24)
        )
        .with_row(dashboard.Row("Gateway"))
        .with_panel(
            timeseries_panel(
                "WebSocket clients", "short", "Connected WebSocket clients over all workers", datasource=PROMETHEUS
            ).with_target(prom(f"sum(api_ws_clients{{{JOB}}})", "clients"))
        )
        .with_panel(
            timeseries_panel(
                "WebSocket deliveries and drops per second", "short", "Events sent and dropped", datasource=PROMETHEUS
            )
            .with_target(
                prom(
                    _rate("api_ws_messages_sent_total", "channel"),
                    "sent {{channel}}",
                )
            )
            .with_target(
                prom(
                    _rate("api_ws_messages_dropped_total", "channel"),
                    "dropped {{channel}}",
                    "B",
                )
            )
        )
        .with_panel(
            timeseries_panel(
                "API latency per route p99", "s", "HTTP request latency by route template", datasource=PROMETHEUS
            ).with_target(
                prom(
                    _quantile(0.99, "api_request_duration_seconds", "route"),
                    "{{route}}",
                )
            )
        )
        .with_panel(
            timeseries_panel(
                "API requests per second by status", "reqps", "HTTP requests by status code", datasource=PROMETHEUS
            ).with_target(prom(_rate("api_requests_total", "status"), "{{status}}"))
        )
        .with_row(dashboard.Row("Processes"))
        .with_panel(
            timeseries_panel(
                "CPU per process",
                "short",
                "CPU cores used (process_cpu_seconds_total per second), per scrape target; a multi-worker gateway"
                " is summed over its processes",
                datasource=PROMETHEUS,
            ).with_target(
                prom(f"sum by (job, instance) (rate(process_cpu_seconds_total{{{JOB}}}[$__rate_interval]))", "{{job}}")
            )
        )
        .with_panel(
            timeseries_panel(
                "Resident memory per process",
                "bytes",
                "process_resident_memory_bytes per scrape target (flat in a healthy run)",
                datasource=PROMETHEUS,
            ).with_target(prom(f"sum by (job, instance) (process_resident_memory_bytes{{{JOB}}})", "{{job}}"))
        )
        .with_row(dashboard.Row("Simulator"))
        .with_panel(
            timeseries_panel(
                "Simulator delivery",
                "short",
                "Ticks produced and acknowledged by Kafka per second",
                datasource=PROMETHEUS,
            )
            .with_target(prom(_rate("sim_ticks_produced_total"), "produced"))
            .with_target(prom(_rate("sim_ticks_delivered_total"), "delivered", "B"))
        )
        .with_panel(
            timeseries_panel(
                "Simulator pacing lag p99",
                "s",
                "Real-time steps behind their simulated timestamp",
                datasource=PROMETHEUS,
            ).with_target(
                prom(
                    _quantile(0.99, "sim_pacing_lag_seconds"),
                    "p99",
                )
            )
        )
    )
    return board.build()
