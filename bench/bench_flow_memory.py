"""Bars flow memory over a long real-time run: ``python bench/bench_flow_memory.py [--minutes 30]``.

Runs the flow (``flows.bars.build_flow``: live mode, all five timeframes, indicators, live bars, timers) in a
child process fed by an in-memory source that emits, every 100 ms, ticks stamped with the wall clock for
``--tickers`` tickers (default 1,000) at ``--rate`` ticks/s each, into counting sinks -- no Kafka or
databases, so the numbers are the flow's own memory. This process samples the child's resident set size
(``/proc/<pid>/status`` VmRSS) ``--samples`` times and prints RSS over time and the least-squares slope over
the second half of the run (after the warm-up: imports, every ticker's first windows, allocator pools).

Nothing should grow with time: the per-ticker state is a fixed-size ring of closes per timeframe (allocated
up front for the longest indicator period), the open windows of at most ``grace`` past the newest tick, and
a few scalars; so after the warm-up the slope should be ~0 (allocator noise: a few MB either way).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
from bytewax.inputs import DynamicSource, StatelessSourcePartition
from bytewax.testing import run_main

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_flow_bars import Counter  # noqa: E402 -- bench/ is not a package
from procstat import cpu_seconds, rss_mb  # noqa: E402

from flows.bars import build_flow, tune_gc  # noqa: E402
from flows.decode import RawBatch, WireTick  # noqa: E402
from flows.settings import FlowSettings  # noqa: E402

STEP_S = 0.1


class _ClockPartition(StatelessSourcePartition[RawBatch]):
    def __init__(self, tickers: int, rate: float) -> None:
        self.names = [f"M{i:04d}" for i in range(tickers)]
        self.per_step = tickers * rate * STEP_S
        self.rng = np.random.default_rng(11)
        self.cents = np.full(tickers, 10_000, dtype=np.int64)
        self.encoder = msgspec.json.Encoder()
        self.carry = 0.0
        self.offset = 0
        self.awake = datetime.now(tz=UTC)

    def next_batch(self) -> list[RawBatch]:
        self.awake = datetime.now(tz=UTC) + timedelta(seconds=STEP_S)
        self.carry += self.per_step
        n = int(self.carry)
        self.carry -= n
        if n == 0:
            return []
        which = self.rng.integers(0, len(self.names), n)
        self.cents[which] = np.maximum(100, self.cents[which] + self.rng.integers(-3, 4, n))
        now = time.time_ns() // 1_000_000
        encode = self.encoder.encode
        values = [
            encode(
                WireTick(self.names[k], self.offset + i, now, c / 100, (c - 1) / 100, (c + 1) / 100, 100, 100, 10, 1)
            )
            for i, (k, c) in enumerate(zip(which.tolist(), self.cents[which].tolist(), strict=True))
        ]
        offsets = list(range(self.offset, self.offset + n))
        self.offset += n
        return [RawBatch("memory-bench", 0, offsets, values)]

    def next_awake(self) -> datetime | None:
        return self.awake


class ClockSource(DynamicSource[RawBatch]):
    """Ticks stamped with the wall clock, forever (one partition per worker)."""

    def __init__(self, tickers: int, rate: float) -> None:
        self.tickers, self.rate = tickers, rate

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _ClockPartition:
        return _ClockPartition(self.tickers, self.rate)


def child(tickers: int, rate: float) -> None:
    """Run the flow until killed."""
    settings = FlowSettings(mode="live", metrics_port=0)
    tune_gc(settings)
    source: Any = ClockSource(tickers, rate)
    flow = build_flow(
        source, final_sink=Counter(), live_sink=Counter(), dead_letter_sink=Counter(), latest_sink=Counter(),
        settings=settings,
    )  # fmt: skip
    run_main(flow)  # type: ignore[no-untyped-call]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--tickers", type=int, default=1_000)
    parser.add_argument("--rate", type=float, default=2.0, help="ticks/s per ticker")
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.tickers, args.rate)
        return
    argv = [sys.executable, __file__, "--child", "--tickers", str(args.tickers), "--rate", str(args.rate)]
    proc = subprocess.Popen(argv)  # noqa: S603 -- this script, our interpreter
    every = args.minutes * 60 / args.samples
    print(
        f"bars flow memory: {args.tickers:,} tickers x {args.rate} ticks/s, live mode, 5 timeframes + indicators, "
        f"{args.minutes} min, RSS every {every:.0f} s"
    )
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    print(f"{'minute':>7} {'RSS MB':>8} {'cpu s':>7}")
    start = time.monotonic()
    points: list[tuple[float, float]] = []
    try:
        for i in range(1, args.samples + 1):
            time.sleep(max(0.0, start + i * every - time.monotonic()))
            if proc.poll() is not None:
                msg = f"the flow process exited with {proc.returncode}"
                raise RuntimeError(msg)
            minute = (time.monotonic() - start) / 60
            mb = rss_mb(proc.pid)
            cpu = cpu_seconds(proc.pid)
            points.append((minute, mb))
            print(f"{minute:>7.1f} {mb:>8.1f} {cpu:>7.0f}", flush=True)
    finally:
        proc.terminate()
        proc.wait(30)
    half = [p for p in points if p[0] >= args.minutes / 2]
    slope = float(np.polyfit([p[0] for p in half], [p[1] for p in half], 1)[0]) * 60 if len(half) > 1 else 0.0
    print(f"slope over the second half: {slope:+.2f} MB/hour; load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
