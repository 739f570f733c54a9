"""Prometheus metrics of the flow processes (``flows.bars``, ``flows.ticks``) and their exporter.

Every flow-only metric (``flow_*``) is defined here; the names shared with other processes
(``tick_messages_received_total``, ``processing_latency_seconds``, ``kafka_consumer_lag``,
``end_to_end_latency_seconds``) come from :mod:`common.metrics` and are re-exported for the flow modules.
The ``ticker`` label is bounded: at most ``FLOW_METRICS_MAX_TICKERS`` distinct values per process (later
tickers are counted as ``other``; 0 turns the label into the constant ``all``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from common.metrics import CONSUMER_LAG, END_TO_END, PROCESSING_LATENCY, TICKS_RECEIVED

__all__ = [
    "ARCHIVE_REJECTED", "BARS", "CONSUMER_LAG", "DEAD_LETTERS", "DUPLICATES", "END_TO_END", "EVENT_LAG",
    "IDLE_OVERRUN", "PROCESSING_LATENCY", "SINK_ERRORS", "SINK_ROWS", "SINK_SECONDS", "SOURCE_OFFSET",
    "SOURCE_OFFSET_GAP",
    "TICKS_RECEIVED",
    "TickCounter", "observe_latency", "start_metrics_server",
]  # fmt: skip

log = logging.getLogger(__name__)
_started: set[int] = set()
_lock = threading.Lock()

#: label value of ticks whose ticker is beyond the per-process label budget
OTHER_TICKER = "other"
#: label value when per-ticker labels are turned off
ALL_TICKERS = "all"

# ---------------------------------------------------------------------------------------- flow only
BARS = Counter("flow_bars_emitted_total", "Bars emitted by the bars flow", ["timeframe", "final"])
DUPLICATES = Counter("flow_duplicate_finals_suppressed_total", "Second finals for a window that were dropped")
EVENT_LAG = Gauge("flow_event_time_lag_seconds", "System time minus the newest tick time of the last batch")
SOURCE_OFFSET = Gauge(
    "flow_kafka_source_offset", "Next offset the flow will read, per topic partition", ["topic", "partition"]
)
SOURCE_OFFSET_GAP = Counter(
    "flow_kafka_source_offset_gap_total",
    "Offsets skipped between the offset a partition was to read next and the first one it got: records deleted "
    "by retention before the flow read them (it resumes at the oldest record still kept); a transactional "
    "producer's commit markers and aborted records would count here too",
    ["topic", "partition"],
)
IDLE_OVERRUN = Counter(
    "flow_idle_clock_overrun_total",
    "Records read with a timestamp behind a log clock that the idle margin had already advanced (delivered later "
    "than FLOW_IDLE_CLOSE_MS / FLOW_IDLE_CLOSE_APPEND_MS; their windows may have closed without them)",
    ["topic", "partition"],
)
SINK_SECONDS = Histogram(
    "flow_sink_write_seconds",
    "Time to write one batch to a sink",
    ["sink"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
SINK_ROWS = Counter("flow_sink_rows_total", "Rows/messages written by a sink", ["sink"])
SINK_ERRORS = Counter("flow_sink_errors_total", "Failed sink write attempts (retried)", ["sink"])
DEAD_LETTERS = Counter("flow_dead_letters_total", "Messages sent to the dead-letter topic", ["kind"])
ARCHIVE_REJECTED = Counter("flow_archive_rejected_total", "Malformed tick values skipped by the tick archive")
ANOMALY_BARS_EXAMINED = Counter("flow_anomaly_bars_examined_total", "Final bars run through the anomaly detectors")
ANOMALIES = Counter("flow_anomalies_detected_total", "Anomalies detected", ["type", "severity"])
WEBHOOK_NOTIFICATIONS = Counter(
    "flow_webhook_notifications_total",
    "Anomalies offered to the webhook notifier, by outcome (sent, failed, cooldown, below_severity, queue_full)",
    ["outcome"],
)
for _kind in ("malformed", "late"):  # known label values are exported as 0 before the first event
    DEAD_LETTERS.labels(_kind)

#: ``end_to_end_latency_seconds`` paths written by the flows
PATH_FINAL_BAR = "final_bar_stored"
PATH_LIVE_BAR = "live_bar_stored"
#: final bars of this timeframe measure tick -> stored bar; longer ones mostly measure their window length
FINAL_BAR_LATENCY_TIMEFRAME = "1m"


class TickCounter:
    """``tick_messages_received_total`` of one stage, with a bounded number of ``ticker`` label values.

    Children are cached (``labels()`` costs about a microsecond), and one batch costs one C-level tally plus
    one increment per distinct ticker in it.
    """

    def __init__(self, stage: str, max_tickers: int) -> None:
        self.stage = stage
        self.max_tickers = max_tickers
        self._children: dict[str, Any] = {}
        self._other = TICKS_RECEIVED.labels(stage, OTHER_TICKER if max_tickers else ALL_TICKERS)

    def _child(self, ticker: str) -> Any:
        child = self._children.get(ticker)
        if child is None:
            if len(self._children) >= self.max_tickers:
                return self._other
            child = self._children[ticker] = TICKS_RECEIVED.labels(self.stage, ticker)
        return child

    def count_tallied(self, tickers: Sequence[str], counts: Sequence[int]) -> None:
        """Count ``counts[i]`` ticks of ``tickers[i]`` (distinct names: a batch already tallied by ticker).

        Tickers beyond ``max_tickers`` share one child, incremented once per batch (each ``inc`` takes a lock).
        """
        if not self.max_tickers:
            self._other.inc(sum(counts))
            return
        other = self._other
        overflow = 0
        get = self._children.get
        for ticker, n in zip(tickers, counts, strict=True):
            child = get(ticker)
            if child is None:
                child = self._child(ticker)
            if child is other:
                overflow += n
            else:
                child.inc(n)
        if overflow:
            other.inc(overflow)


def observe_latency(path: str, event_ms: Iterable[int], now_s: float | None = None) -> None:
    """Observe ``now - event time`` for each event time (epoch ms) on ``end_to_end_latency_seconds{path}``."""
    now = time.time() if now_s is None else now_s
    child = END_TO_END.labels(path)
    for ms in event_ms:
        child.observe(max(0.0, now - ms / 1000.0))


def start_metrics_server(port: int, host: str = "127.0.0.1") -> None:
    """Serve ``/metrics`` on ``host:port`` once per process (port 0 disables it)."""
    if port == 0:
        return
    with _lock:
        if port in _started:
            return
        start_http_server(port, addr=host)
        _started.add(port)
    log.info("metrics on http://%s:%d/metrics", host, port)
