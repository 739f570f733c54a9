"""The produce loop shared by ``run`` and ``backfill``: as fast as possible up to now, then paced to the clock.

Ticks whose simulated timestamp is already in the past are produced in large batches (backfill); once the
stream has caught up, each step is produced when the wall clock reaches its timestamp and the lag is
recorded in ``sim_pacing_lag_seconds``. The next simulated block is computed right after a step is sent, in
the idle time before the next one is due, so block generation never delays a step.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol

from tqdm import tqdm

from common.clock import now_ms
from simulator.engine import TickBatch, TickEngine
from simulator.metrics import SimulatorMetrics


class TickSink(Protocol):
    """Anything that accepts tick batches (the Kafka producer, a file writer, a test list)."""

    def send(self, batch: TickBatch) -> None:
        """Take ownership of ``batch``'s rows (a sink may hold the last batch back until :meth:`drain`)."""

    def drain(self) -> None:
        """Hand on everything received so far (called before waiting for the clock and at the end)."""


def stream(
    engine: TickEngine,
    sink: TickSink,
    metrics: SimulatorMetrics,
    stop: threading.Event,
    *,
    end_ms: int | None = None,
    realtime: bool = True,
    batch_ticks: int = 50_000,
    progress: bool = False,
    clock: Callable[[], int] = now_ms,
) -> int:
    """Produce ticks until ``end_ms`` (None: forever) or ``stop`` is set; returns the number of ticks sent.

    ``realtime=False`` ignores the wall clock (pure backfill of ``[start, end_ms)``).
    """
    sent = 0
    start_wall = clock()
    first_ts = engine.next_ts_ms()
    horizon = end_ms if end_ms is not None else start_wall
    bar = tqdm(
        total=max(0, horizon - first_ts) // 1000, unit="sim-s", disable=not progress, mininterval=1.0, desc="backfill"
    )
    done_s = 0
    try:
        while not stop.is_set():
            ts = engine.next_ts_ms()
            if end_ms is not None and ts >= end_ms:
                break
            now = clock()
            if realtime and ts > now:
                bar.close()
                stop.wait((ts - now) / 1000.0)
                continue
            upto = now + 1 if realtime else (end_ms if end_ms is not None else ts + 1)
            if end_ms is not None:
                upto = min(upto, end_ms)
            for batch in engine.batches(batch_ticks, end_ms=upto):
                sink.send(batch)
                sent += len(batch)
                prog = (int(batch.ts_ms[-1]) - first_ts) // 1000
                if prog > done_s:
                    bar.update(min(prog, bar.total or prog) - done_s)
                    done_s = prog
                if stop.is_set():
                    break
            sink.drain()
            if realtime and ts >= start_wall:
                metrics.pacing_lag.observe(max(0, clock() - ts) / 1000.0)
            if realtime:
                engine.prefetch()
    finally:
        bar.close()
    return sent
