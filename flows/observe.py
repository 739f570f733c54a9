"""Process-level observability of a flow: the Prometheus exporter and the event-time lag gauge."""

from __future__ import annotations

import logging
import threading

from prometheus_client import start_http_server

log = logging.getLogger(__name__)
_started: set[int] = set()
_lock = threading.Lock()


def start_metrics_server(port: int) -> None:
    """Serve ``/metrics`` on ``port`` once per process (0 disables it)."""
    if port == 0:
        return
    with _lock:
        if port in _started:
            return
        start_http_server(port, addr="127.0.0.1")
        _started.add(port)
    log.info("metrics on http://127.0.0.1:%d/metrics", port)
