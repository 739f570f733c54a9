"""Benchmark: in-process tick generation (prices, bid/ask, sizes, volume) for 1,000 tickers.

Run: ``.venv/bin/python bench/bench_simulator_generate.py`` - prints a table (target >= 20 M ticks/s).
Also times the batch JSON encoder and a 20-year daily-bar export of 100 tickers.
"""

from __future__ import annotations

import os
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from simulator.encode import BatchEncoder
from simulator.engine import TickEngine
from simulator.export import export
from simulator.session import Session, to_ms
from simulator.universe import Universe, UniverseConfig

START = to_ms(datetime(2024, 1, 2, tzinfo=UTC))


def universe(n: int) -> Universe:
    return Universe(UniverseConfig(factors=["market", "a", "b", "c"], generate={"count": n, "seed": 1}))


def generation(threads: int, ticks: int = 60_000_000, slice_ms: int | None = None) -> str:
    """Wall-clock rate and, less sensitive to other load on the machine, ticks per CPU-second."""
    eng = TickEngine(universe(1000), Session(), 1, START, threads=threads, slice_ms=slice_ms)
    next(eng.blocks())  # warm up
    t, c = time.perf_counter(), time.process_time()
    n = 0
    for b in eng.blocks():
        n += len(b)
        if n >= ticks:
            break
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    eng.close()
    return f"{n / wall / 1e6:.1f} M/s ({n / cpu / 1e6:.1f} M/CPU-s)"


def encoding(ticks: int = 2_000_000) -> float:
    u = universe(1000)
    eng = TickEngine(u, Session(), 1, START)
    batches = list(eng.batches(100_000, end_ms=START + ticks // 1000 * 100))
    enc = BatchEncoder(u.symbols)
    t = time.perf_counter()
    for b in batches:
        enc.encode(b)
    return sum(map(len, batches)) / (time.perf_counter() - t)


def daily_export() -> float:
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        export(
            universe(100),
            Session(mode="exchange"),
            1,
            to_ms(datetime(2000, 1, 1, tzinfo=UTC)),
            to_ms(datetime(2020, 1, 1, tzinfo=UTC)),
            "1d",
            "parquet",
            Path(d) / "d.parquet",
        )
        return time.perf_counter() - t


def main() -> None:
    rows = [
        ("generate 1,000 tickers, 1 thread", generation(1), ">= 20 M/s (2 threads)"),
        ("generate 1,000 tickers, 2 threads", generation(2), ">= 20 M/s"),
        ("  same, 10 ms slices (SIM_SLICE_MS default)", generation(2, slice_ms=10), ""),
        ("JSON batch encode (1 thread)", f"{encoding() / 1e6:.2f} M ticks/s", ""),
        ("export 20 y daily bars x 100 tickers", f"{daily_export():.1f} s", "seconds"),
    ]
    load = os.getloadavg()
    print(f"machine: {os.cpu_count()} cpus; {datetime.now(tz=UTC):%Y-%m-%d}; load average {load[0]:.2f} {load[1]:.2f}")
    print(f"| {'benchmark':<44} | {'result':<26} | {'target':<22} |")
    print(f"|{'-' * 46}|{'-' * 28}|{'-' * 24}|")
    for name, result, target in rows:
        print(f"| {name:<44} | {result:<26} | {target:<22} |")


if __name__ == "__main__":
    main()
