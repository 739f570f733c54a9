"""Benchmark of the gateway's REST hot paths: ``/quote`` (Redis) and ``/bars`` (500 bars from PostgreSQL).

One command, private servers: starts its own Redis and PostgreSQL (as the test fixtures do), seeds one ticker,
runs ``python -m api`` with 1 and 2 workers and drives it from a separate load process with a minimal
keep-alive HTTP/1.1 client (asyncio streams: far cheaper per request than an HTTP library, so the gateway,
not the load generator, is what is measured). Closed loop: N connections, each sending its next request when
the previous answer arrives; and an open-loop run at a fixed offered rate for latency. Prints a table.

    .venv/bin/python bench/bench_api_rest.py [--seconds 8] [--connections 32]

Both processes share this machine's two cores, so absolute numbers are lower bounds.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import psycopg
import redis

from contracts import redis_keys
from contracts.tick import Tick, encode_tick
from stack.migrate import apply_migrations
from stack.runner import running
from stack.services import create_database, free_port, prepare_postgres, prepare_redis
from stack.settings import StackSettings

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


async def _conn_loop(port: int, path: str, stop_at: float, lat: list[float], rate: float | None) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    req = f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()
    next_at = time.perf_counter()
    while True:
        now = time.perf_counter()
        if now >= stop_at:
            break
        if rate is not None:
            if now < next_at:
                await asyncio.sleep(next_at - now)
            sent = max(next_at, time.perf_counter()) if rate else time.perf_counter()
            next_at += 1.0 / rate
        else:
            sent = time.perf_counter()
        writer.write(req)
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        await reader.readexactly(length)
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(head[:60])
        lat.append(time.perf_counter() - sent)
    writer.close()


def _load(port: int, path: str, seconds: float, conns: int, rate: float | None, out: mp.Queue) -> None:  # type: ignore[type-arg]
    lat: list[float] = []

    async def main() -> None:
        stop_at = time.perf_counter() + seconds
        per_conn = None if rate is None else rate / conns
        await asyncio.gather(*[_conn_loop(port, path, stop_at, lat, per_conn) for _ in range(conns)])

    asyncio.run(main())
    out.put(lat)


def measure(port: int, path: str, seconds: float, conns: int, rate: float | None = None) -> tuple[float, float, float]:
    """(requests/s, p50 ms, p99 ms) from one load process."""
    q: mp.Queue = mp.Queue()  # type: ignore[type-arg]
    p = mp.Process(target=_load, args=(port, path, seconds, conns, rate, q))
    p.start()
    lat = np.array(q.get(), dtype=float)
    p.join()
    return len(lat) / seconds, float(np.percentile(lat, 50) * 1e3), float(np.percentile(lat, 99) * 1e3)


def seed(db_url: str, redis_url: str) -> None:
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
    )
    r = redis.Redis.from_url(redis_url)
    r.set(redis_keys.latest_price("SYNTH"), encode_tick(tick))
    r.close()


def start_gateway(port: int, workers: int, db_url: str, redis_url: str, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "REDIS_URL": redis_url,
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",  # nothing there: the relay is off
        "API_PORT": str(port),
        "API_WORKERS": str(workers),
        "API_RELAY_ENABLED": "false",
        "API_RATE_LIMIT": "",
        "API_RATE_LIMIT_WS_CONNECT": "",
        "API_ACCESS_LOG": "false",
        "API_LOG_LEVEL": "WARNING",
        "API_BIND_HOST": "127.0.0.1",
        "API_DB_POOL_MAX": "8",
    }
    proc = subprocess.Popen([sys.executable, "-m", "api"], env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    for _ in range(200):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.terminate()
    raise RuntimeError(f"gateway did not start; see {log}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--rate", type=float, default=2000.0, help="offered load of the open-loop /quote run")
    args = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="md-bench-api-"))
    home.chmod(0o755)
    st = StackSettings(postgres_port=free_port(), redis_port=free_port(), kafka_port=free_port())
    rows: list[tuple[str, int, str, float, float, float]] = []
    try:
        with (
            running(prepare_postgres(st, home / "data", durable=False), home / "logs", timeout_s=60),
            running(prepare_redis(st, home / "data", durable=False), home / "logs", timeout_s=30),
        ):
            create_database(st, "bench")
            pw = st.postgres_password.get_secret_value()
            db_url = f"postgresql://{st.postgres_user}:{pw}@127.0.0.1:{st.postgres_port}/bench"
            apply_migrations(db_url)
            redis_url = f"redis://127.0.0.1:{st.redis_port}/0"
            seed(db_url, redis_url)
            for workers in (1, 2):
                port = free_port()
                proc = start_gateway(port, workers, db_url, redis_url, home / f"api-{workers}.log")
                try:
                    measure(port, "/api/v1/quote/SYNTH", 1.0, 4)  # warm-up
                    q = measure(port, "/api/v1/quote/SYNTH", args.seconds, args.connections)
                    rows.append(("/quote closed loop", workers, f"{args.connections} conns", *q))
                    o = measure(port, "/api/v1/quote/SYNTH", args.seconds, 16, rate=args.rate)
                    rows.append(("/quote open loop", workers, f"{args.rate:.0f} req/s offered", *o))
                    b = measure(port, "/api/v1/bars/SYNTH?limit=500", args.seconds, 4)
                    rows.append(("/bars 500 bars", workers, "4 conns", *b))
                finally:
                    proc.terminate()
                    proc.wait(10)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    print(f"{'scenario':<22}{'workers':>8}  {'load':<24}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}")
    for name, w, load, rps, p50, p99 in rows:
        print(f"{name:<22}{w:>8}  {load:<24}{rps:>9.0f}{p50:>9.2f}{p99:>9.2f}")


if __name__ == "__main__":
    main()
