"""Throughput of the bars flow in memory: ``python bench/bench_flow_bars.py [--ticks N] [--profile]``.

Feeds pre-encoded ``market-ticks`` values through ``flows.bars.build_flow`` with Bytewax's ``TestingSource``
(batches of the ``FLOW_BATCH_SIZE`` default unless ``--batch``), one process, one worker, all five timeframes
and indicators, and counts what comes out. Prints one table row per scenario (tickers x event-time tick rate
per ticker, live bars on/off) with wall-clock and per-CPU-second throughput (the latter is less sensitive to
other processes on a shared machine); ``--profile`` runs one scenario under cProfile instead and prints its top
functions.

Three ways of feeding (``--feed``): ``values`` gives ``TestingSource`` the values of a batch one by one
(its per-item Python loop costs ~0.3 us per tick, a harness cost the deployed flow does not have), ``batches``
gives it one :class:`~flows.decode.RawBatch` per batch -- what ``flows.sources.RawKafkaSource``
emits per poll -- in backfill mode, and ``backlog`` the same batches with Kafka log times to the flow in live
mode: a backlog written just now at 1 M records/s, as the flow reads it when catching up.
To compare with another checkout in the same run, point ``PYTHONPATH`` at it:
``PYTHONPATH=/path/to/old .venv/bin/python bench/bench_flow_bars.py``, or let the script do it:
``--baseline REV`` exports the ``flows`` package of git revision ``REV`` and runs every scenario ``--rounds``
times, alternating the baseline and the working tree in child processes (order swapped every round), then
prints both with the ratio; ``final digest`` compares the final bars and dead letters byte for byte.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import hashlib
import json
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.testing import TestingSource, cluster_main, run_main

import flows.bars
from common.clock import now_ms
from flows.bars import build_flow, tune_gc
from flows.decode import RawBatch, WireTick
from flows.settings import FlowSettings

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchstack import export_revision  # noqa: E402 -- bench/ is not a package

T0 = 1_705_276_800_000


@dataclass(frozen=True)
class Scenario:
    tickers: int
    rate_per_ticker: float  # ticks per second of event time, per ticker
    live: bool


def make_values(n: int, scenario: Scenario, seed: int = 1) -> list[bytes]:
    """``n`` ticks over ``scenario.tickers`` tickers in event-time order with a little jitter."""
    return make_keyed_values(n, scenario, seed)[0]


def make_keyed_values(n: int, scenario: Scenario, seed: int = 1) -> tuple[list[bytes], list[bytes]]:
    """:func:`make_values` and, per value, its ticker as bytes (the Kafka message key)."""
    rng = np.random.default_rng(seed)
    names = [f"T{i:04d}" for i in range(scenario.tickers)]
    market_rate = scenario.tickers * scenario.rate_per_ticker
    ts = T0 + (np.arange(n) * 1000.0 / market_rate).astype(np.int64) + rng.integers(0, 50, n)
    which = rng.integers(0, scenario.tickers, n)
    walk = 10_000 + np.cumsum(rng.integers(-2, 3, n)) % 5_000
    volume = rng.integers(1, 1_000, n)
    enc = msgspec.json.Encoder()
    values = [
        enc.encode(WireTick(names[k], i, t, c / 100, (c - 1) / 100, (c + 1) / 100, 100, 100, v, 1))
        for i, (k, t, c, v) in enumerate(zip(which.tolist(), ts.tolist(), walk.tolist(), volume.tolist(), strict=True))
    ]
    keys = [name.encode() for name in names]
    return values, [keys[k] for k in which.tolist()]


class _CountPartition(StatelessSinkPartition[Any]):
    def __init__(self, counter: Counter) -> None:
        self.counter = counter

    def write_batch(self, items: list[Any]) -> None:
        self.counter.n += len(items)
        if self.counter.encoded is not None:
            self.counter.encoded.extend(map(_ENCODE, items))


_ENCODE = msgspec.json.Encoder().encode


class Counter(DynamicSink[Any]):
    """A sink that only counts what it receives (keeps memory flat for big runs)."""

    def __init__(self, keep: bool = False) -> None:
        self.n = 0
        #: with ``keep``: every item JSON-encoded, for an order-independent digest of the output
        self.encoded: list[bytes] | None = [] if keep else None

    def digest(self) -> str:
        """SHA-256 over the sorted encodings (the same output in any order gives the same digest)."""
        return hashlib.sha256(b"\n".join(sorted(self.encoded or []))).hexdigest()[:16]

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _CountPartition:
        return _CountPartition(self)


#: ``--feed backlog``: records written per millisecond of log time
BACKLOG_PER_MS = 1_000


def as_raw_batches(values: list[bytes], batch: int, written_ms: int | None = None) -> list[RawBatch]:
    """The values cut into ``RawBatch`` es of ``batch`` values, as the Kafka source emits them; with
    ``written_ms``, with the log times of a backlog written from then on at ``BACKLOG_PER_MS``."""
    out = []
    for i in range(0, len(values), batch):
        offsets = list(range(i, min(i + batch, len(values))))
        if written_ms is None:
            out.append(RawBatch("market-ticks", 0, offsets, values[i : i + batch]))
            continue
        logs = written_ms + np.arange(i, i + len(offsets), dtype=np.int64) // BACKLOG_PER_MS
        out.append(RawBatch("market-ticks", 0, offsets, values[i : i + batch], logs, int(logs[-1])))
    return out


def run(
    values: list[bytes],
    scenario: Scenario,
    batch: int,
    gc_threshold: int = 100_000,
    workers: int = 1,
    feed: str = "values",
    digest: bool = False,
) -> tuple[float, dict[str, Any]]:
    mode = "live" if feed == "backlog" else "backfill"
    settings = FlowSettings(mode=mode, live_enabled=scenario.live, gc_threshold=gc_threshold)
    gc.set_threshold(700, 10, 10)
    tune_gc(settings)
    finals, lives, dead, latest = Counter(digest), Counter(), Counter(digest), Counter()
    source: TestingSource[Any] = (
        TestingSource(values, batch_size=batch)
        if feed == "values"
        else TestingSource(as_raw_batches(values, batch, now_ms() if feed == "backlog" else None), batch_size=1)
    )
    flow = build_flow(
        source,
        final_sink=finals,
        live_sink=lives,
        dead_letter_sink=dead,
        latest_sink=latest,
        settings=settings,
    )
    gc.collect()
    start, cpu_start = time.perf_counter(), time.process_time()
    if workers == 1:
        run_main(flow)  # type: ignore[no-untyped-call]
    else:
        cluster_main(flow, [], 0, worker_count_per_proc=workers)  # type: ignore[no-untyped-call]
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    counts: dict[str, Any] = {"final": finals.n, "live": lives.n, "dead": dead.n, "cpu_ms": round(cpu * 1000)}
    if digest:
        counts["digest"] = f"{finals.digest()}/{dead.digest()}"
    return elapsed, counts


SCENARIOS = [
    Scenario(10, 100.0, live=True),
    Scenario(100, 10.0, live=True),
    Scenario(1_000, 1.0, live=True),
    Scenario(1_000, 1.0, live=False),
    Scenario(1_000, 0.1, live=True),
    Scenario(5_000, 1.0, live=True),
]


def _child(args: argparse.Namespace, scenarios: list[tuple[int, Scenario]], feeds: list[str]) -> None:
    """One JSON line per (scenario, feed): what :func:`_compare` reads from each child process."""
    for number, scenario in scenarios:
        values = make_values(args.ticks, scenario)
        for feed in feeds:
            elapsed, counts = run(values, scenario, args.batch, args.gc_threshold, args.workers, feed, digest=True)
            print(json.dumps({"scenario": number, "feed": feed, "seconds": elapsed, **counts}), flush=True)


def _run_child(args: argparse.Namespace, number: int, feed: str, pythonpath: Path | None) -> dict[str, Any]:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pythonpath), env.get("PYTHONPATH", "")]))
    command = [sys.executable, __file__, "--child", "--scenarios", str(number), "--feed", feed]
    command += ["--ticks", str(args.ticks), "--batch", str(args.batch), "--workers", str(args.workers)]
    command += ["--gc-threshold", str(args.gc_threshold)]
    proc = subprocess.run(command, env=env, check=False, capture_output=True, text=True)  # noqa: S603
    if proc.returncode != 0:
        msg = f"child {' '.join(command[2:])} (PYTHONPATH={pythonpath}) failed:\n{proc.stderr[-3000:]}"
        raise RuntimeError(msg)
    out = proc.stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def _compare(args: argparse.Namespace, scenarios: list[tuple[int, Scenario]], feeds: list[str]) -> None:
    """``--baseline``: the exported ``flows`` of REV and the working tree, alternated in child processes."""
    with tempfile.TemporaryDirectory(prefix="bench-flow-") as home:
        base = export_revision(args.baseline, Path(home) / "base", ("flows",))
        candidate = export_revision(args.candidate, Path(home) / "candidate", ("flows",)) if args.candidate else None
        versions: list[tuple[str, Path | None]] = [
            (f"base {args.baseline}", base),
            (args.candidate or "work tree", candidate),
        ]
        print(
            f"bars flow, same run: flows of {args.baseline} vs {args.candidate or 'the work tree'}, "
            f"{args.ticks:,} ticks, "
            f"batches of {args.batch:,}, {args.rounds} round(s) alternating, 1 process x {args.workers} worker(s)"
        )
        print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
        print(f"{'tickers':>8} {'tkr rate':>8} {'live':>5} {'feed':>8} {'version':>16} {'ticks/s':>10} "
              f"{'ticks/cpu-s':>11} {'cpu us/tick':>11} {'finals':>7} {'lives':>7}  final digest")  # fmt: skip
        for number, scenario in scenarios:
            for feed in feeds:
                cpu: dict[str, list[float]] = {label: [] for label, _ in versions}
                for round_ in range(args.rounds):
                    for label, path in versions if round_ % 2 == 0 else versions[::-1]:
                        r = _run_child(args, number, feed, path)
                        cpu[label].append(r["cpu_ms"] / 1000)
                        print(
                            f"{scenario.tickers:>8,} {scenario.rate_per_ticker:>8} {scenario.live!s:>5} {feed:>8} "
                            f"{label:>16} {args.ticks / r['seconds']:>10,.0f} "
                            f"{args.ticks / (r['cpu_ms'] / 1000):>11,.0f} {r['cpu_ms'] * 1000 / args.ticks:>11.3f} "
                            f"{r['final']:>7,} {r['live']:>7,}  {r['digest']}  (load {os.getloadavg()[0]:.2f})",
                            flush=True,
                        )
                old, new = (cpu[label] for label, _ in versions)
                paired = statistics.median(o / n for o, n in zip(old, new, strict=True))
                us = 1e6 / args.ticks
                print(
                    f"{'':>8} CPU us/tick min / median: base {min(old) * us:.3f} / {statistics.median(old) * us:.3f}, "
                    f"candidate {min(new) * us:.3f} / {statistics.median(new) * us:.3f}; speed-up per CPU-second: "
                    f"{min(old) / min(new):.3f}x best-of, {paired:.3f}x median of the per-round ratios",
                    flush=True,
                )
    print(f"load average after: {os.getloadavg()[0]:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=1_000_000)
    # the field's default, not flows.settings.DEFAULT_BATCH_SIZE: a --baseline child imports an older flows
    parser.add_argument("--batch", type=int, default=FlowSettings.model_fields["batch_size"].default)
    parser.add_argument("--workers", type=int, default=1, help="Bytewax workers in this process")
    parser.add_argument("--gc-threshold", type=int, default=100_000, help="FLOW_GC_THRESHOLD (0: Python's)")
    parser.add_argument("--profile", action="store_true", help="cProfile the 1,000-ticker scenario")
    parser.add_argument(
        "--feed",
        choices=["values", "batches", "backlog", "both"],
        default="both",
        help="see the docstring (both: values and batches)",
    )
    parser.add_argument("--scenarios", default="", help="comma-separated row numbers to run (default: all)")
    parser.add_argument("--baseline", default="", help="git revision whose flows package to compare with")
    parser.add_argument("--rounds", type=int, default=2, help="with --baseline: runs of each version")
    parser.add_argument("--candidate", default="", help="with --baseline: a revision instead of the work tree")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    numbers = [int(i) for i in args.scenarios.split(",")] if args.scenarios else list(range(len(SCENARIOS)))
    scenarios = [(number, SCENARIOS[number]) for number in numbers]
    feeds = ["values", "batches"] if args.feed == "both" else [args.feed]
    if args.child:
        _child(args, scenarios, feeds)
        return
    if args.baseline:
        _compare(args, scenarios, feeds)
        return
    if args.profile:
        scenario = scenarios[min(2, len(scenarios) - 1)][1]
        values = make_values(args.ticks, scenario)
        profiler = cProfile.Profile()
        profiler.enable()
        run(values, scenario, args.batch, feed=feeds[-1])
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        return
    print(
        f"bars flow, TestingSource batches of {args.batch:,}, 1 process x {args.workers} worker(s), "
        f"{args.ticks:,} ticks, "
        f"gc threshold {args.gc_threshold or 'default'}"
    )
    print(f"code under test: {flows.bars.__file__}")
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs (other processes slow wall time)")
    print(f"{'tickers':>8} {'ticks/s/tkr':>11} {'live':>5} {'feed':>8} {'seconds':>8} {'ticks/s':>12} "
          f"{'ticks/cpu-s':>12} {'final bars':>11} {'live bars':>10}")  # fmt: skip
    for _, scenario in scenarios:
        values = make_values(args.ticks, scenario)
        for feed in feeds:
            elapsed, counts = run(values, scenario, args.batch, args.gc_threshold, args.workers, feed)
            print(
                f"{scenario.tickers:>8,} {scenario.rate_per_ticker:>11} {scenario.live!s:>5} {feed:>8} "
                f"{elapsed:>8.2f} {args.ticks / elapsed:>12,.0f} {args.ticks / (counts['cpu_ms'] / 1000):>12,.0f} "
                f"{counts['final']:>11,} {counts['live']:>10,}"
            )
        del values
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
