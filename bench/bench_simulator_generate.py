"""Benchmark: in-process tick generation (prices, bid/ask, sizes, volume) for 1,000 tickers.

Run: ``.venv/bin/python bench/bench_simulator_generate.py`` - prints a table (target >= 20 M ticks/s).
Also times the batch JSON encoder and a 20-year daily-bar export of 100 tickers.

Same-run comparison with an earlier revision (the machine is shared, so only ratios are meaningful):
``.venv/bin/python bench/bench_simulator_generate.py --ab REV [--rounds 3]`` exports ``REV`` with ``git archive``
and alternates old/new generation runs in subprocesses, printing the best of each.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from simulator.encode import BatchEncoder
from simulator.engine import TickEngine
from simulator.export import export
from simulator.session import Session
from simulator.universe import Universe, UniverseConfig

#: 2024-01-02T00:00Z in epoch ms. A literal: the ``--ab`` children import this module (the working tree's) with the
#: compared revision's packages, so its top-level imports must exist in every revision compared
START = 1_704_153_600_000


def universe(n: int) -> Universe:
    return Universe(UniverseConfig(factors=["market", "a", "b", "c"], generate={"count": n, "seed": 1}))


def generation_rates(threads: int, ticks: int = 60_000_000, slice_ms: int | None = None) -> tuple[float, float]:
    """(ticks per wall second, ticks per CPU-second) of the engine for 1,000 tickers."""
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
    return n / wall, n / cpu


def generation(threads: int, ticks: int = 60_000_000, slice_ms: int | None = None) -> str:
    """Wall-clock rate and, less sensitive to other load on the machine, ticks per CPU-second."""
    wall, cpu = generation_rates(threads, ticks, slice_ms)
    return f"{wall / 1e6:.1f} M/s ({cpu / 1e6:.1f} M/CPU-s)"


_CHILD = """
import sys
sys.path.insert(0, {root!r})
sys.path.insert(0, {bench!r})
from bench_simulator_generate import generation_rates
print(*generation_rates({threads}, {ticks}, {slice_ms}))
"""


def _child_rates(root: Path, threads: int, ticks: int, slice_ms: int | None) -> tuple[float, float]:
    """Generation rates measured in a fresh interpreter importing the simulator from ``root``."""
    code = _CHILD.format(
        root=str(root), bench=str(Path(__file__).parent), threads=threads, ticks=ticks, slice_ms=slice_ms
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=root, check=True, capture_output=True, text=True)
    wall, cpu = out.stdout.split()
    return float(wall), float(cpu)


def ab(rev: str, rounds: int, ticks: int) -> None:
    """Alternate generation runs of ``rev`` and the working tree; print the best rate of each and the ratio."""
    here = Path(__file__).resolve().parent.parent
    cases = [(1, None), (2, None), (2, 10)]
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from benchstack import export_revision  # here, not at the top: the children import this module (see START)

    with tempfile.TemporaryDirectory() as tmp:
        d = export_revision(rev, Path(tmp) / "tree", ())
        print(f"A/B: old = {rev}, new = working tree; best of {rounds} alternating runs of {ticks / 1e6:.0f} M ticks")
        print(f"| {'case':<22} | {'old M/s (M/CPU-s)':<18} | {'new M/s (M/CPU-s)':<18} | {'new/old':<14} |")
        print(f"|{'-' * 24}|{'-' * 20}|{'-' * 20}|{'-' * 16}|")
        for threads, slice_ms in cases:
            best: dict[str, list[float]] = {"old": [0.0, 0.0], "new": [0.0, 0.0]}
            for _ in range(rounds):
                for name, root in (("old", Path(d)), ("new", here)):
                    wall, cpu = _child_rates(root, threads, ticks, slice_ms)
                    best[name] = [max(best[name][0], wall), max(best[name][1], cpu)]
            o, n = best["old"], best["new"]
            case = f"{threads} thread(s)" + (f", {slice_ms} ms slices" if slice_ms else "")
            cell = [f"{v[0] / 1e6:.1f} ({v[1] / 1e6:.1f})" for v in (o, n)]
            ratio = f"{n[0] / o[0]:.2f} ({n[1] / o[1]:.2f})"
            print(f"| {case:<22} | {cell[0]:<18} | {cell[1]:<18} | {ratio:<14} |")
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


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
    from common.clock import to_ms  # noqa: PLC0415 -- not at the top: see START

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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ab", metavar="REV", help="compare generation with git revision REV in the same run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ticks", type=int, default=30_000_000)
    args = parser.parse_args()
    if args.ab:
        ab(args.ab, args.rounds, args.ticks)
        return
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
