"""Prometheus metrics shared by several processes: one definition, so names, help texts and labels agree.

``flows.observe`` (flow processes) and ``api.metrics`` (gateway) import these; a process exposes only the
label values it uses. Every metric is documented in docs/metrics.md (a unit test keeps the two in sync).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

#: latency buckets from 5 ms to an hour (a backfill replays hours-old event times)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0)
#: per-batch work: from a tenth of a millisecond to ten seconds
BATCH_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)

TICKS_RECEIVED = Counter(
    "tick_messages_received_total", "Valid ticks received from Kafka by a pipeline stage", ["stage", "ticker"]
)
PROCESSING_LATENCY = Histogram(
    "processing_latency_seconds",
    "Wall time a pipeline stage spends on one batch of ticks (decode and aggregate)",
    ["stage"],
    buckets=BATCH_BUCKETS,
)
CONSUMER_LAG = Gauge("kafka_consumer_lag", "Messages behind the partition's high watermark", ["topic", "partition"])
END_TO_END = Histogram(
    "end_to_end_latency_seconds",
    "Wall clock when an output is written or sent minus the event time of the newest tick in it",
    ["path"],
    buckets=LATENCY_BUCKETS,
)
