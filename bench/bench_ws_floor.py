"""What the batched WebSocket fan-out costs this machine's kernel alone: a floor under ``bench_api_ws.py``.

No gateway, no Kafka, no WebSocket framing: one writer process sends a fixed-size frame to each of N loopback TCP
connections on a fixed cadence (one non-blocking ``send(2)`` per connection and frame, as the gateway's batched
flush does), and reader processes (uvloop, like the bench's clients) drain them. Each frame starts with the
time it was written; readers sample write -> receive. Rows compare the batched mode's nominal cadence (25 ms)
with the stretched ones a loaded gateway falls back to, at the frame sizes 1,000 ticks/s gives them.

    .venv/bin/python bench/bench_ws_floor.py [--clients 1000] [--seconds 10] [--readers 2]
        [--rows 25:3000,50:6000,75:9000]   # frame period ms : frame bytes

Prints, per row: writes/s; the writer's user and system CPU (cores, and µs per write); the readers' CPU; the
write -> receive latency p50/p99. The kernel's part (system CPU of writer + readers) is what any gateway pays
for that many frames, before a line of Python.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import multiprocessing as mp
import os
import resource
import socket
import struct
import time
from array import array
from typing import Any

import numpy as np
import uvloop

STAMP = struct.Struct("<d")  # the write time (time.time()) at the start of every frame


def _reader(port: int, n: int, size: int, seconds: float, out: Any) -> None:
    """Process body: open ``n`` connections, drain them for ``seconds`` (+ slack), report CPU and latencies."""

    lat = array("d")

    class Drain(asyncio.Protocol):
        def __init__(self, sample: bool) -> None:
            self.got = 0  # bytes into the current frame
            self.sample = sample

        def data_received(self, data: bytes) -> None:
            now = time.time()
            pos = 0
            left = len(data)
            while left:
                if self.got == 0 and self.sample and left >= STAMP.size:
                    lat.append((now - STAMP.unpack_from(data, pos)[0]) * 1000.0)
                take = min(left, size - self.got)
                self.got = (self.got + take) % size
                pos += take
                left -= take

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for i in range(n):
            await loop.create_connection(functools.partial(Drain, i % 10 == 0), "127.0.0.1", port)
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        await asyncio.sleep(seconds + 1.0)
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        out.put((r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime, seconds + 1.0, lat.tobytes()))

    uvloop.run(main())


def run_row(clients: int, period_ms: float, size: int, seconds: float, readers: int) -> dict[str, float]:
    """One writer and ``readers`` reader processes over ``clients`` connections; the row's measurements."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4096)
    port = srv.getsockname()[1]
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_reader, args=(port, clients // readers, size, seconds, out), daemon=True)
        for _ in range(readers)
    ]
    for p in procs:
        p.start()
    conns = [srv.accept()[0] for _ in range(clients // readers * readers)]
    for c in conns:
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c.setblocking(False)
    body = bytearray(size)
    period = period_ms / 1000.0
    writes = short = 0
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = next_at = time.monotonic()
    while time.monotonic() - t0 < seconds:
        STAMP.pack_into(body, 0, time.time())
        frame = bytes(body)
        for c in conns:
            try:
                if c.send(frame) < size:
                    short += 1
            except BlockingIOError:
                short += 1
            writes += 1
        next_at += period
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    wall = time.monotonic() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    results = [out.get(timeout=seconds + 60) for _ in procs]
    for p in procs:
        p.join(10)
    for c in conns:
        c.close()
    srv.close()
    lat = np.concatenate([np.frombuffer(r[3], dtype="d") for r in results])
    user, system = r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime
    return {
        "writes_s": writes / wall,
        "short": short,
        "w_user": user / wall,
        "w_sys": system / wall,
        "us_user": user / writes * 1e6,
        "us_sys": system / writes * 1e6,
        "r_user": sum(r[0] / r[2] for r in results),
        "r_sys": sum(r[1] / r[2] for r in results),
        "p50": float(np.percentile(lat, 50)) if lat.size else float("nan"),
        "p99": float(np.percentile(lat, 99)) if lat.size else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--readers", type=int, default=2, help="reader processes (the ws bench uses two)")
    parser.add_argument("--rows", default="25:3000,50:6000,75:9000", help="period_ms:bytes,...")
    args = parser.parse_args()
    rows = [(float(p), int(b)) for p, b in (r.split(":") for r in args.rows.split(","))]
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"load average {load}; {args.clients} connections, {args.readers} reader processes")
    print(
        f"{'period ms':>9} {'bytes':>6} {'writes/s':>9} {'short':>5} {'writer usr':>10} {'writer sys':>10} "
        f"{'us/write usr':>12} {'us/write sys':>12} {'readers usr':>11} {'readers sys':>11} "
        f"{'p50 ms':>7} {'p99 ms':>7}"
    )
    for period_ms, size in rows:
        r = run_row(args.clients, period_ms, size, args.seconds, args.readers)
        print(
            f"{period_ms:9.0f} {size:6d} {r['writes_s']:9,.0f} {r['short']:5d} {r['w_user']:10.2f} {r['w_sys']:10.2f} "
            f"{r['us_user']:12.1f} {r['us_sys']:12.1f} {r['r_user']:11.2f} {r['r_sys']:11.2f} "
            f"{r['p50']:7.1f} {r['p99']:7.1f}"
        )


if __name__ == "__main__":
    main()
