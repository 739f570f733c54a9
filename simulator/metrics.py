"""Prometheus metrics of the simulator (served by ``prometheus_client`` on ``SIM_METRICS_PORT``)."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)


class SimulatorMetrics:
    """Counters and histograms; one instance per process (own registry, so tests can make several).

    The registry also carries prometheus-client's standard ``process_*`` and ``python_*`` metrics (CPU, memory,
    file descriptors, GC), as the default registry of the other services does.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self.ticks_produced = Counter("sim_ticks_produced", "Ticks handed to the Kafka producer", registry=r)
        self.ticks_delivered = Counter("sim_ticks_delivered", "Ticks acknowledged by Kafka", registry=r)
        self.delivery_errors = Counter(
            "sim_delivery_errors", "Ticks Kafka could not deliver (after retries)", ["reason"], registry=r
        )
        self.buffer_full = Counter(
            "sim_producer_buffer_full", "Times the producer queue was full (backpressure)", registry=r
        )
        self.pacing_lag = Histogram(
            "sim_pacing_lag_seconds",
            "Wall-clock lag of a real-time step behind its simulated timestamp",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
            registry=r,
        )
        self.sim_time = Gauge("sim_clock_ms", "Simulated timestamp of the last tick produced (epoch ms)", registry=r)
        self.resumed_tickers = Gauge(
            "sim_resumed_tickers", "Tickers continued from their last tick in the topic at start (run)", registry=r
        )
        self.resume_gap = Gauge(
            "sim_resume_gap_seconds",
            "Simulated time from the resume point to the wall clock at start",
            registry=r,
        )
        self.in_flight = Gauge("sim_in_flight", "Messages queued in the producer, not yet acknowledged", registry=r)

    def serve(self, port: int) -> None:
        """Expose ``/metrics`` on ``port`` (0 = disabled)."""
        if port:
            start_http_server(port, registry=self.registry)
