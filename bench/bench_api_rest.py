"""Benchmark of the gateway's REST hot paths: ``/quote`` (Redis) and ``/bars`` (500 bars from PostgreSQL).

One command, private servers: starts its own Redis and PostgreSQL (as the test fixtures do), seeds one ticker,
runs ``python -m api`` with 1 and 2 workers and drives it from a separate load process with a minimal
keep-alive HTTP/1.1 client (asyncio streams on uvloop: far cheaper per request than an HTTP library, so the
gateway, not the load generator, is what is measured; its CPU share is printed). Closed loop: N connections,
each sending its next request when the previous answer arrives; an open-loop run at a fixed offered rate for
latency (latency counted from the scheduled send time, so a stalled server is not hidden); a run with the
Redis-backed rate limiter on (a limit too high to trip, so every request pays the limiter's cost).

``--baseline REV`` runs the ``api`` package of git revision REV in the same run (exported to a temporary
directory; everything else from the working tree), so before/after ratios come from the same machine state.

    .venv/bin/python bench/bench_api_rest.py [--seconds 6] [--connections 32] [--baseline HEAD~1]

Load generator and gateway share this machine's two cores, so absolute numbers are lower bounds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import os
import queue
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import redis
import uvloop

from contracts import redis_keys
from contracts.tick import Tick, encode_tick
from stack.services import free_port

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchstack import export_revision, local_stack  # noqa: E402 - bench/ is not a package
from gateway import gateway_spec, running_gateway  # noqa: E402
from procstat import cpu_seconds  # noqa: E402


@dataclass(frozen=True, slots=True)
class Result:
    """One measured scenario."""

    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    load_cpu: float  # load generator CPU seconds per wall second (1.0 = one core)
    gw_cpu: float  # gateway processes' CPU seconds per wall second


async def _conn_loop(
    port: int, path: str, stop_at: float, lat: list[float], rate: float | None, errors: list[int]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    req = f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()
    interval = 1.0 / rate if rate else 0.0
    next_at = time.perf_counter() + (np.random.default_rng().random() * interval if rate else 0.0)
    while True:
        now = time.perf_counter()
        if now >= stop_at:
            break
        if rate:
            if now < next_at:
                await asyncio.sleep(next_at - now)
            sent = next_at  # scheduled time: queueing behind a slow answer counts as latency
            next_at += interval
        else:
            sent = now
        writer.write(req)
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        await reader.readexactly(length)
        if not head.startswith(b"HTTP/1.1 200"):
            errors[0] += 1
        lat.append(time.perf_counter() - sent)
    writer.close()


def _load(port: int, path: str, seconds: float, conns: int, rate: float | None, out: mp.Queue) -> None:  # type: ignore[type-arg]
    lat: list[float] = []
    errors = [0]

    async def main() -> None:
        stop_at = time.perf_counter() + seconds
        per_conn = None if rate is None else rate / conns
        await asyncio.gather(*[_conn_loop(port, path, stop_at, lat, per_conn, errors) for _ in range(conns)])

    cpu0 = time.process_time()
    uvloop.run(main())
    out.put((lat, errors[0], (time.process_time() - cpu0) / seconds))


def _result(p: mp.Process, q: mp.Queue, timeout_s: float, path: str) -> Any:  # type: ignore[type-arg]
    """The load process's report; a clear error (not a hang) when it died or sent nothing in ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return q.get(timeout=1.0)
        except queue.Empty:
            if p.exitcode is not None:  # its report, if any, was flushed before it exited
                with contextlib.suppress(queue.Empty):
                    return q.get(timeout=1.0)
                msg = f"load process for {path} exited with code {p.exitcode} without a result"
                raise RuntimeError(msg) from None
            if time.monotonic() > deadline:
                p.terminate()
                p.join(5)
                msg = f"load process for {path} sent no result within {timeout_s:.0f} s"
                raise RuntimeError(msg) from None


def measure(gw_pid: int, port: int, path: str, seconds: float, conns: int, rate: float | None = None) -> Result:
    """Throughput, latency percentiles and CPU shares of one load run."""
    q: mp.Queue = mp.Queue()  # type: ignore[type-arg]
    p = mp.Process(target=_load, args=(port, path, seconds, conns, rate, q))
    gw0 = cpu_seconds(gw_pid, tree=True)
    p.start()
    lat_list, errors, load_cpu = _result(p, q, seconds + 60, path)
    gw_cpu = (cpu_seconds(gw_pid, tree=True) - gw0) / seconds
    p.join()
    lat = np.array(lat_list, dtype=float)
    return Result(
        len(lat) / seconds,
        float(np.percentile(lat, 50) * 1e3),
        float(np.percentile(lat, 99) * 1e3),
        errors,
        load_cpu,
        gw_cpu,
    )


def seed(db_url: str, redis_url: str) -> None:
    """One ticker, 600 final 1m bars, a latest tick in Redis."""
    with psycopg.connect(db_url) as conn:
        conn.execute("INSERT INTO tickers VALUES ('SYNTH', 'Synthetic Corp', 'Technology', 150, now(), now())")
        minute = datetime.now(UTC).replace(second=0, microsecond=0)
        rows = [
            (
                minute - timedelta(minutes=600 - i),
                "SYNTH",
                "1m",
                150,
                151,
                149,
                150.5,
                1000,
                150.2,
                10,
                minute - timedelta(minutes=600 - i),
                minute - timedelta(minutes=600 - i) + timedelta(seconds=59),
            )
            for i in range(600)
        ]
        conn.cursor().executemany(
            "INSERT INTO market_bars (time, ticker, timeframe, open, high, low, close, volume, vwap, trades,"
            " first_tick_time, last_tick_time) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
            rows,
        )
    tick = Tick(
        ticker="SYNTH",
        seq=1,
        timestamp=int(time.time() * 1000),
        price=150.25,
        bid=150.24,
        ask=150.26,
        bid_size=100,
        ask_size=100,
        volume=500,
        version=1,
    )
    r = redis.Redis.from_url(redis_url)
    r.set(redis_keys.latest_price("SYNTH"), encode_tick(tick))
    r.close()


def main() -> None:
    """Run every scenario for each code version and worker count; print one table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--rate", type=float, default=2000.0, help="offered load of the open-loop /quote run")
    ap.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    ap.add_argument("--baseline", default=None, help="git revision whose api package runs in the same run")
    args = ap.parse_args()
    rows: list[tuple[str, str, int, str, Result]] = []
    quote = "/api/v1/quote/SYNTH"
    with local_stack(kafka=False) as stack:
        home = stack.home
        versions: list[tuple[str, Path]] = [("current", ROOT)]
        if args.baseline:
            versions.append((f"base {args.baseline}", export_revision(args.baseline, home / "baseline")))
        db_url, redis_url = stack.database_url, stack.redis_url
        seed(db_url, redis_url)
        for workers in (int(w) for w in args.workers.split(",")):
            for label, code_dir in versions:
                for limited in (False, True):
                    port = free_port()
                    spec = gateway_spec(
                        f"api-{label.replace(' ', '_')}-{workers}-{limited}",
                        port,
                        {
                            "DATABASE_URL": db_url,
                            "REDIS_URL": redis_url,
                            "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",  # nothing there: relay off
                            "API_RELAY_ENABLED": "false",
                            "API_DB_POOL_MAX": "8",
                        },
                        workers=workers,
                        rate_limit="100000000/minute" if limited else "",
                        code_dir=code_dir,
                    )
                    # settle: let every worker finish its start-up after the first answer
                    with running_gateway(spec, home, timeout_s=30, settle_s=0.5 * workers) as proc:
                        measure(proc.pid, port, quote, 1.0, 4)  # warm-up
                        if limited:
                            r = measure(proc.pid, port, quote, args.seconds, args.connections)
                            rows.append((label, "/quote + rate limiter", workers, f"{args.connections} conns", r))
                            continue
                        r = measure(proc.pid, port, quote, args.seconds, args.connections)
                        rows.append((label, "/quote closed loop", workers, f"{args.connections} conns", r))
                        r = measure(proc.pid, port, quote, args.seconds, 16, rate=args.rate)
                        rows.append((label, "/quote open loop", workers, f"{args.rate:.0f}/s offered", r))
                        r = measure(proc.pid, port, "/api/v1/bars/SYNTH?limit=500", args.seconds, 4)
                        rows.append((label, "/bars 500 bars", workers, "4 conns", r))
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} (2 vCPU shared)")
    head = f"{'code':<14}{'scenario':<23}{'wrk':>4}  {'load':<15}{'req/s':>8}{'p50 ms':>8}{'p99 ms':>8}"
    print(head + f"{'errors':>7}{'loadgen cpu':>12}{'gw cpu':>8}")
    for label, name, w, load, r in rows:
        print(
            f"{label:<14}{name:<23}{w:>4}  {load:<15}{r.rps:>8.0f}{r.p50_ms:>8.2f}{r.p99_ms:>8.2f}"
            f"{r.errors:>7}{r.load_cpu:>12.2f}{r.gw_cpu:>8.2f}"
        )


if __name__ == "__main__":
    main()
