"""Throughput of the raw tick archive (``flows.ticks``) into ``market_ticks``: ``python bench/bench_flow_ticks.py``.

Starts a private PostgreSQL (``stack.services``, as the tests do; ``--durable`` keeps fsync and synchronous
commit on), applies the migrations and measures, in the same run:

1. **Levers** (``bench/tick_archive_variants.py``): each write strategy's sink partition is fed the same
   pre-decoded batches (``--batch`` ticks each) into an emptied ``market_ticks``, then the same batches again
   (a replay after a crash: every row conflicts). ``--rounds`` repetitions, best kept (the machine is shared).
   Client CPU per row (``process_time``) against wall time shows where the time goes; every variant must leave
   an identical table (count and content hash).
2. **Flow**: ``flows.ticks.build_flow`` with ``TestingSource`` batches of pre-encoded ticks, one process, one
   worker, into the previous sink (``baseline``) and the production ``TickArchiveSink``, new then replay.

Kafka is left out (the source is measured in ``bench_flow_bars.py``). Prints tables and the load average;
target >= 100,000 rows/s.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import msgspec
import numpy as np
import psycopg
from bytewax.testing import TestingSource, run_main

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchstack import local_stack  # noqa: E402
from tick_archive_variants import VARIANTS, VariantSink  # noqa: E402

from flows.decode import DecodedBatch, WireTick, decode_batch  # noqa: E402
from flows.tick_archive_sink import TickArchiveSink  # noqa: E402
from flows.ticks import build_flow  # noqa: E402
from stack.migrate import apply_migrations  # noqa: E402
from stack.services import database_url_for  # noqa: E402

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
TARGET = 100_000


def make_values(n: int, tickers: int, seed: int = 1) -> list[bytes]:
    """``n`` ticks over ``tickers`` tickers, 20 ms apart in event time (spans a few hours for 1 M ticks)."""
    rng = np.random.default_rng(seed)
    cents = 10_000 + np.cumsum(rng.integers(-2, 3, n)) % 5_000
    volume = rng.integers(1, 1_000, n)
    enc = msgspec.json.Encoder()
    return [
        enc.encode(WireTick(f"T{i % tickers:04d}", i // tickers, T0 + i * 20, c / 100, (c - 1) / 100,
                            (c + 1) / 100, 100, 100, v, 1))
        for i, (c, v) in enumerate(zip(cents.tolist(), volume.tolist(), strict=True))
    ]  # fmt: skip


def fingerprint(url: str) -> tuple[int, int]:
    """Row count and an order-independent hash of every stored row."""
    with psycopg.connect(url) as conn:
        sql = "SELECT count(*), coalesce(sum(hashtext(t::text)::bigint), 0) FROM market_ticks t"
        row = conn.execute(sql).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def truncate(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE market_ticks")
        conn.execute("CHECKPOINT")


def timed(fn: Callable[[], None]) -> tuple[float, float]:
    """Wall and client-CPU seconds of ``fn()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def levers(runs: dict[str, tuple[str, str]], batches: list[DecodedBatch], rounds: int) -> dict[str, list[float]]:
    """Per label (variant, database url): best rows/s new, best rows/s replay, client CPU µs/row (new, replay)."""
    n = sum(len(b) for b in batches)
    best: dict[str, list[float]] = {name: [0.0, 0.0, 0.0, 0.0] for name in runs}
    expected: tuple[int, int] | None = None
    for _ in range(rounds):
        for name, (variant, url) in runs.items():
            truncate(url)
            part = VARIANTS[variant](url)

            def write(part: object = part) -> None:
                for batch in batches:
                    part.write_batch([batch])  # type: ignore[attr-defined]

            new_wall, new_cpu = timed(write)
            replay_wall, replay_cpu = timed(write)
            part.close()
            got = fingerprint(url)
            expected = expected or got
            if got != expected or got[0] != n:
                msg = f"{name}: table {got} differs from {expected} ({n} ticks)"
                raise RuntimeError(msg)
            row = best[name]
            if n / new_wall > row[0]:
                row[0], row[2] = n / new_wall, new_cpu / n * 1e6
            if n / replay_wall > row[1]:
                row[1], row[3] = n / replay_wall, replay_cpu / n * 1e6
    return best


def flow(url: str, values: list[bytes], batch: int, sink: Callable[[], object]) -> tuple[float, float]:
    """rows/s of the whole flow into an emptied table, then of a replay of the same ticks."""
    truncate(url)
    out = []
    for _ in range(2):
        wall, _cpu = timed(lambda: run_main(build_flow(TestingSource(values, batch_size=batch), sink())))  # type: ignore[arg-type]
        out.append(len(values) / wall)
    if fingerprint(url)[0] != len(values):
        msg = f"flow stored {fingerprint(url)[0]} of {len(values)} ticks"
        raise RuntimeError(msg)
    return out[0], out[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=300_000)
    parser.add_argument("--tickers", type=int, default=100)
    parser.add_argument("--batch", type=int, default=10_000, help="ticks per batch in the lever comparison")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated, from: " + ",".join(VARIANTS))
    parser.add_argument("--flow-batches", default="2000,10000,50000", help="source batch sizes of the flow runs")
    parser.add_argument("--durable", action="store_true", help="PostgreSQL with fsync on (as `make up`)")
    args = parser.parse_args()

    values = make_values(args.ticks, args.tickers)
    t0 = time.process_time()
    batches = [decode_batch(values[i : i + args.batch])[0] for i in range(0, len(values), args.batch)]
    decode_us = (time.process_time() - t0) / len(values) * 1e6
    flows: list[tuple[int, float, float, float, float]] = []
    with local_stack(kafka=False, redis=False, durable=args.durable) as stack:
        settings, url = stack.settings, stack.database_url
        runs = {name: (name, url) for name in args.variants.split(",")}
        if "direct" in runs:  # the same sink on a database whose text collation is "C" (byte order)
            with psycopg.connect(database_url_for(settings, "postgres"), autocommit=True) as conn:
                conn.execute("CREATE DATABASE bench_c TEMPLATE template0 LC_COLLATE 'C' LC_CTYPE 'C.UTF-8'")
            runs["direct, db collation C"] = ("direct", database_url_for(settings, "bench_c"))
            apply_migrations(runs["direct, db collation C"][1])
        results = levers(runs, batches, args.rounds)
        for size in (int(b) for b in args.flow_batches.split(",") if b):
            old = flow(url, values, size, lambda: VariantSink("baseline", url))
            new = flow(url, values, size, lambda: TickArchiveSink(url))
            flows.append((size, *old, *new))

    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    mode = "fsync on, synchronous_commit on" if args.durable else "fsync off, synchronous_commit off"
    print(f"\ntick archive, {args.ticks:,} ticks over {args.tickers} tickers, PostgreSQL {mode}")
    print(f"load average: {load}; batch decode (msgspec + NumPy checks): {decode_us:.2f} µs/tick, not in the tables")
    print(f"\nlevers: sink partition only, batches of {args.batch:,}, best of {args.rounds}")
    print("| variant | rows/s new | rows/s replay | client CPU µs/row new | replay | new vs baseline |")
    print("|---|---:|---:|---:|---:|---:|")
    base = results.get("baseline", [0.0])[0]
    for name, (new_rate, replay_rate, new_cpu, replay_cpu) in results.items():
        ratio = f"{new_rate / base:.2f}x" if base else "-"
        print(f"| {name} | {new_rate:,.0f} | {replay_rate:,.0f} | {new_cpu:.2f} | {replay_cpu:.2f} | {ratio} |")
    if flows:
        print("\nflow: TestingSource -> decode -> sink, one worker (new rows, then a replay of the same ticks)")
        print("| source batch | baseline new | baseline replay | production new | production replay | new: ratio |")
        print("|---:|---:|---:|---:|---:|---:|")
        for size, old_new, old_replay, new_new, new_replay in flows:
            verdict = "met" if new_new >= TARGET else "NOT met"
            print(f"| {size:,} | {old_new:,.0f} | {old_replay:,.0f} | {new_new:,.0f} | {new_replay:,.0f} |"
                  f" {new_new / old_new:.2f}x ({verdict}) |")  # fmt: skip


if __name__ == "__main__":
    main()
