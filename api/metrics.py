"""Prometheus metrics of the gateway and the ``/metrics`` endpoint.

With ``PROMETHEUS_MULTIPROC_DIR`` set (several uvicorn workers) every process writes its samples to that
directory and ``/metrics`` merges them (prometheus-client multiprocess mode); gauges then sum live processes,
and :class:`GatewayProcessCollector` adds the ``process_*`` metrics of each of the gateway's processes.
Hot paths count in plain integers and :class:`~api.hub.Hub` flushes them here about once a second, so a
million deliveries a second do not mean a million locked counter increments.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from pathlib import Path

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess as prom_multiprocess
from prometheus_client.metrics_core import Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from common.metrics import END_TO_END

REQUESTS = Counter("api_requests_total", "HTTP requests", ["method", "route", "status"])
LATENCY = Histogram(
    "api_request_duration_seconds",
    "HTTP request latency",
    ["method", "route", "status"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
RATE_LIMITED = Counter("api_rate_limited_total", "requests refused with 429", ["kind"])
WS_CLIENTS = Gauge("api_ws_clients", "connected WebSocket clients", multiprocess_mode="livesum")
#: each worker runs its own Kafka relay, so per-worker rates of the relayed counters are their sum over this
WORKERS = Gauge("api_workers", "running gateway worker processes", multiprocess_mode="livesum")
WS_SENT = Counter("api_ws_messages_sent_total", "events delivered to WebSocket clients", ["channel"])
WS_DROPPED = Counter("api_ws_messages_dropped_total", "events dropped for lagging clients", ["channel"])
WS_DISCONNECTS = Counter("api_ws_disconnects_total", "WebSocket disconnections", ["reason"])
RELAY_MESSAGES = Counter("api_relay_messages_total", "Kafka messages relayed", ["channel"])
RELAY_BAD = Counter("api_relay_bad_messages_total", "Kafka messages that broke the contract", ["channel"])
RELAY_WAIT = Counter(
    "api_relay_wait_seconds_total", "seconds the Kafka relay waited for the event loop (API_RELAY_MAX_PENDING reached)"
)
#: relayed channels (``api.hub.CHANNEL_NAMES``, which imports this module) and the WebSocket label values
RELAY_CHANNELS: tuple[str, ...] = ("ticks", "bars", "indicators", "anomalies")
WS_CHANNELS: tuple[str, ...] = (*RELAY_CHANNELS, "batch")  # plus batched frames
# known label values are exported as 0 from the start
for _channel in WS_CHANNELS:
    WS_SENT.labels(_channel)
    WS_DROPPED.labels(_channel)
for _channel in RELAY_CHANNELS:
    RELAY_MESSAGES.labels(_channel)


def relay_latency(channel: str) -> Histogram:
    """``end_to_end_latency_seconds{path="ws_<channel>"}``: now minus the event time when the relay hands a message
    to the hub's fan-out (every relayed message, subscribed or not; before the socket writes)."""
    return END_TO_END.labels(f"ws_{channel}")


def mark_worker_started(multiproc_dir: Path | None) -> None:
    """Count this worker in ``api_workers``; first drop the live gauges of workers that died without
    :func:`mark_worker_stopped` (uvicorn replaces a crashed worker), so neither they nor their clients count."""
    if multiproc_dir is not None:
        for pid in _live_gauge_pids(multiproc_dir):
            if not _alive(pid):
                prom_multiprocess.mark_process_dead(pid, str(multiproc_dir))  # type: ignore[no-untyped-call]
    WORKERS.inc()


def _live_gauge_pids(multiproc_dir: Path) -> set[int]:
    """The process ids with live-gauge files (``gauge_live*_<pid>.db``) in ``multiproc_dir``: the workers that
    started and have not been marked dead."""
    pids = set()
    for path in multiproc_dir.glob("gauge_live*_*.db"):
        pid = path.stem.rsplit("_", 1)[1]
        if pid.isdigit():
            pids.add(int(pid))
    return pids


def mark_worker_stopped(multiproc_dir: Path | None) -> None:
    """Drop this worker's live gauges (``api_ws_clients``, ``api_workers``) at shutdown."""
    WORKERS.dec()
    if multiproc_dir is not None:
        prom_multiprocess.mark_process_dead(os.getpid(), str(multiproc_dir))  # type: ignore[no-untyped-call]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class GatewayProcessCollector(Collector):
    """``process_*`` of a multi-worker gateway: one series per process (label ``pid``) for each live worker
    (those with live gauge files in the multiprocess directory) and uvicorn's supervisor.

    prometheus-client's multiprocess collector exports no ``process_*`` metrics (it cannot attribute them to a
    worker), so a gateway with several workers showed no CPU or memory at all. One series per process, not one
    sum: a sum of CPU counters drops when a worker exits, and ``rate()`` would read that drop as a reset and
    count the whole remaining total as new CPU time (a spike of hundreds of cores). Per process, an exited
    worker's series just ends; ``sum by (job, instance) (rate(...))`` is the gateway's CPU.
    """

    def __init__(self, multiproc_dir: Path, supervisor: int | None = None, proc: str = "/proc") -> None:
        self.multiproc_dir = multiproc_dir
        self.supervisor = supervisor
        self.proc = proc

    def pids(self) -> list[int]:
        """The live workers' process ids (and the supervisor's), each once."""
        pids = _live_gauge_pids(self.multiproc_dir)
        if self.supervisor is not None:
            pids.add(self.supervisor)
        return sorted(pid for pid in pids if os.path.isdir(os.path.join(self.proc, str(pid))))

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        for pid in self.pids():
            for family in ProcessCollector(pid=functools.partial(int, pid), proc=self.proc, registry=None).collect():
                out = families.get(family.name)
                if out is None:
                    out = families[family.name] = Metric(family.name, family.documentation, family.type)
                for sample in family.samples:
                    out.add_sample(sample.name, {**sample.labels, "pid": str(pid)}, sample.value)
        yield from families.values()


router = APIRouter(tags=["service"])


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """Prometheus exposition of this process (or of all workers in multiprocess mode, ``process_*`` per process)."""
    multiproc_dir = request.app.state.md.settings.prometheus_multiproc_dir
    if multiproc_dir is not None:
        registry = CollectorRegistry()
        prom_multiprocess.MultiProcessCollector(registry, path=str(multiproc_dir))  # type: ignore[no-untyped-call]
        supervisor = os.getppid() if request.app.state.md.settings.workers > 1 else None
        registry.register(GatewayProcessCollector(multiproc_dir, supervisor))
        body = generate_latest(registry)
    else:
        body = generate_latest()
    return Response(body, media_type=CONTENT_TYPE_LATEST)
