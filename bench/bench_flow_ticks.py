"""Throughput of the raw tick archive (``flows.ticks``) into ``market_ticks``: ``python bench/bench_flow_ticks.py``.

Starts a private PostgreSQL (``stack.services``, as the tests do; ``--durable`` keeps fsync on), applies the
migrations, and runs ``flows.ticks.build_flow`` with ``TestingSource`` batches of pre-encoded ticks into the
production ``TickArchiveSink`` (COPY into a staging table, then ``INSERT ... ON CONFLICT DO NOTHING``), one
process, one worker. Kafka is left out: the source is measured in ``bench_flow_bars.py``. Each batch size runs
into a fresh database in the same run, then once more over the same ticks (a replay after a crash: every row
conflicts). Prints rows/s and the load average; target >= 100,000 rows/s.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import msgspec
import numpy as np
import psycopg
from bytewax.testing import TestingSource, run_main

from flows.decode import WireTick
from flows.sinks import TickArchiveSink
from flows.ticks import build_flow
from stack.migrate import apply_migrations
from stack.runner import running
from stack.services import create_database, database_url_for, free_port, prepare_postgres
from stack.settings import REPO_ROOT, StackSettings

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def make_values(n: int, tickers: int, seed: int = 1) -> list[bytes]:
    """``n`` ticks over ``tickers`` tickers, 20 ms apart in event time (spans a few hours for 1 M ticks)."""
    rng = np.random.default_rng(seed)
    cents = 10_000 + np.cumsum(rng.integers(-2, 3, n)) % 5_000
    volume = rng.integers(1, 1_000, n)
    enc = msgspec.json.Encoder()
    return [
        enc.encode(WireTick(f"T{i % tickers:04d}", i // tickers, T0 + i * 20, c / 100, (c - 1) / 100,
                            (c + 1) / 100, 100, 100, v))
        for i, (c, v) in enumerate(zip(cents.tolist(), volume.tolist(), strict=True))
    ]  # fmt: skip


def archive(values: list[bytes], url: str, batch: int) -> float:
    """Seconds to run the archive flow over ``values`` into ``url``."""
    t0 = time.perf_counter()
    run_main(build_flow(TestingSource(values, batch_size=batch), TickArchiveSink(url)))
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=500_000)
    parser.add_argument("--tickers", type=int, default=100)
    parser.add_argument("--batches", default="2000,10000,50000", help="comma-separated source batch sizes")
    parser.add_argument("--durable", action="store_true", help="PostgreSQL with fsync on (as `make up`)")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="md-bench-ticks-"))
    home.chmod(0o755)  # PostgreSQL runs as the 'postgres' user when this runs as root
    settings = StackSettings(home=REPO_ROOT / ".local", postgres_port=free_port())
    values = make_values(args.ticks, args.tickers)
    rows: list[tuple[int, float, float, float]] = []
    try:
        with running(prepare_postgres(settings, home / "data", durable=args.durable), home / "logs", timeout_s=60):
            for batch in (int(b) for b in args.batches.split(",")):
                name = f"bench_{uuid.uuid4().hex[:8]}"
                create_database(settings, name)
                url = database_url_for(settings, name)
                apply_migrations(url)
                first = archive(values, url, batch)
                replay = archive(values, url, batch)
                with psycopg.connect(url) as conn:
                    stored = conn.execute("SELECT count(*) FROM market_ticks").fetchone()
                if stored is None or stored[0] != len(values):
                    msg = f"stored {stored} of {len(values)} ticks"
                    raise RuntimeError(msg)
                rows.append((batch, len(values) / first, len(values) / replay, first))
    finally:
        shutil.rmtree(home, ignore_errors=True)

    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\ntick archive, {args.ticks:,} ticks over {args.tickers} tickers, fsync {'on' if args.durable else 'off'}")
    print(f"load average: {load}")
    print(f"| {'batch':>7} | {'rows/s (new)':>13} | {'rows/s (replay)':>15} | {'seconds':>8} | target >= 100,000 |")
    print(f"|{'-' * 9}|{'-' * 15}|{'-' * 17}|{'-' * 10}|{'-' * 19}|")
    for batch, new, replay, secs in rows:
        verdict = "met" if new >= 100_000 else "NOT met"
        print(f"| {batch:>7,} | {new:>13,.0f} | {replay:>15,.0f} | {secs:>8.2f} | {verdict:<17} |")


if __name__ == "__main__":
    main()
