"""Final bars into ``market_bars``: binary COPY + one upsert per batch vs one statement per bar.

``python bench/bench_pg_bars.py [--bars N] [--batch N] [--rounds N]``

Starts a private PostgreSQL (migrated, TimescaleDB when installed), then upserts the same ``--bars`` final bars in
batches of ``--batch`` (one transaction each) three ways, alternated over ``--rounds``: ``copy`` (what
``flows.sinks`` does, through its own sink partition: binary ``COPY`` into a temporary staging table, then one
``INSERT ... SELECT ... ON CONFLICT DO UPDATE``), ``executemany`` (the previous writer: the same upsert as one
pipelined ``INSERT ... VALUES`` per bar) and ``unnest`` (one statement per batch with an array parameter per
column). Each round writes the bars twice: into an empty table (inserts) and again (the conflict path, as after
a replay).
Prints wall and client-CPU microseconds per bar, and checks both writers leave identical rows.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import psycopg

from common.clock import from_ms
from contracts.bar import TIMEFRAMES, Bar, Indicators
from flows.sinks import (
    _BAR_COLUMNS,
    _BAR_NAMES,
    _BAR_STAGE_TYPES,
    _ROUNDED,
    BAR_CONFLICT,
    BAR_VALUES,
    _BarStorePartition,
    stage_row,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchstack import local_stack  # noqa: E402 -- bench/ is not a package

#: the writer before session 6: one ``INSERT ... VALUES`` per bar (datetimes built per bar), pipelined by
#: ``executemany``
_UPSERT_PER_BAR = (
    f"INSERT INTO market_bars ({_BAR_COLUMNS}, updated_at) VALUES ("  # noqa: S608 -- constants only
    + ", ".join("round(%s::numeric, 2)" if c in _ROUNDED else "%s" for c in _BAR_NAMES)
    + f", now()) {BAR_CONFLICT}"
)
#: the rejected middle option: one statement per batch, each column one array parameter (psycopg dumps the
#: arrays element by element in Python); the same staged values and conversions as the sink
_UPSERT_UNNEST = (
    f"INSERT INTO market_bars ({_BAR_COLUMNS}, updated_at) SELECT {', '.join(BAR_VALUES)}, now() FROM unnest("  # noqa: S608
    + ", ".join(f"%s::{t}[]" for t in _BAR_STAGE_TYPES)
    + f") AS b({_BAR_COLUMNS}) {BAR_CONFLICT}"
)
_TIME_INDEXES = tuple(_BAR_NAMES.index(c) for c in ("time", "first_tick_time", "last_tick_time"))


def datetime_row(bar: Bar) -> tuple[Any, ...]:
    """The row the previous writer sent: the staged row with its three times as datetimes."""
    row = list(stage_row(bar))
    for i in _TIME_INDEXES:
        row[i] = from_ms(row[i])
    return tuple(row)


def make_bars(n: int, tickers: int = 1_000) -> list[Bar]:
    """``n`` final bars over ``tickers`` tickers, all five timeframes, with indicators on some."""
    t0 = 1_767_225_600_000  # 2026-01-01
    out = []
    for i in range(n):
        tf = list(TIMEFRAMES)[i // tickers % len(TIMEFRAMES)]
        length = TIMEFRAMES[tf]
        start = t0 + (i // (tickers * len(TIMEFRAMES))) * length  # (ticker, timeframe, start) unique per i
        price = 100 + (i % 997) / 100
        ind = Indicators(sma_20=price + 0.123456789, rsi_14=55.5, macd=-0.25) if i % 3 else None
        out.append(
            Bar(
                ticker=f"T{i % tickers:04d}", timeframe=tf, start=start, end=start + length, open=price,
                high=price + 0.5, low=price - 0.25, close=price + 0.01, volume=1_000 + i, vwap=price + 0.1234567,
                trades=1 + i % 50, first_tick=start, last_tick=start + length - 1, final=True, indicators=ind,
            )
        )  # fmt: skip
    return out


def write_copy(sink: _BarStorePartition, batch: list[Bar]) -> None:
    """What ``flows.sinks`` does (binary COPY into a staging table, one upsert), through its own partition."""
    sink.write_batch(batch)


def write_unnest(sink: _BarStorePartition, batch: list[Bar]) -> None:
    conn = sink._conn
    with conn.cursor() as cur:
        columns = [list(c) for c in zip(*map(stage_row, batch), strict=True)]
        cur.execute(_UPSERT_UNNEST, columns)
    conn.commit()


def write_per_bar(sink: _BarStorePartition, batch: list[Bar]) -> None:
    conn = sink._conn
    with conn.cursor() as cur:
        cur.executemany(_UPSERT_PER_BAR, [datetime_row(b) for b in batch])
    conn.commit()


WRITERS = {"copy": write_copy, "executemany": write_per_bar, "unnest": write_unnest}


def _rows(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return conn.execute(f"SELECT {_BAR_COLUMNS} FROM market_bars ORDER BY ticker, timeframe, time").fetchall()  # noqa: S608


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=1_000, help="bars per transaction")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    bars = make_bars(args.bars)
    batches = [bars[i : i + args.batch] for i in range(0, len(bars), args.batch)]
    results: dict[tuple[str, str], list[tuple[float, float]]] = {}
    tables: dict[str, list[tuple[Any, ...]]] = {}
    with local_stack(kafka=False, redis=False) as stack, psycopg.connect(stack.database_url) as conn:
        sink = _BarStorePartition(stack.database_url)
        sink._parts.ensure(sink._conn, {b.start for b in bars})
        print(f"market_bars upserts: {args.bars:,} final bars in batches of {args.batch:,}, {args.rounds} rounds")
        for round_ in range(args.rounds):
            for name in list(WRITERS) if round_ % 2 == 0 else list(WRITERS)[::-1]:
                conn.execute("TRUNCATE market_bars")
                conn.commit()
                for phase in ("insert", "update"):
                    wall, cpu = time.perf_counter(), time.process_time()
                    for batch in batches:
                        WRITERS[name](sink, batch)
                    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                    results.setdefault((name, phase), []).append((wall, cpu))
                    print(f"  round {round_ + 1} {name:>12} {phase:>6}: {wall * 1e6 / len(bars):8.1f} us/bar wall")
                tables[name] = _rows(conn)
        sink.close()
        same = tables["copy"] == tables["executemany"] == tables["unnest"]
    print(f"\n{'writer':>12} {'phase':>7} {'wall us/bar':>12} {'client cpu us/bar':>18}  (median of rounds)")
    for (name, phase), runs in results.items():
        wall = statistics.median(w for w, _ in runs) * 1e6 / len(bars)
        cpu = statistics.median(c for _, c in runs) * 1e6 / len(bars)
        print(f"{name:>12} {phase:>7} {wall:>12.1f} {cpu:>18.1f}")
    for phase in ("insert", "update"):
        for other in ("executemany", "unnest"):
            ratio = statistics.median(
                a[0] / b[0] for a, b in zip(results[other, phase], results["copy", phase], strict=True)
            )
            print(f"copy vs {other} ({phase}): {ratio:.2f}x (median of per-round wall ratios)")
    print(f"rows identical across writers: {same} ({len(tables['copy']):,} rows)")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
