"""Benchmark of the gateway's WebSocket fan-out: deliveries per second and relay latency, seed and batched.

One command, private servers: starts its own Kafka, Redis and PostgreSQL (stack code), runs ``python -m api``
(one worker: the targets are per process), a producer process writing ticks to Kafka at a fixed rate (each
tick's ``timestamp`` is its production time), and client processes holding many WebSocket connections with
a minimal protocol-level client (raw frames on asyncio/uvloop; an ordinary client library costs more CPU per
message than the server, which would measure the client). Latency is tick timestamp -> client receive, so it
includes Kafka produce and consume. Scenarios:

* ``seed``: N clients, one ``tick`` frame per tick, all tickers (``"*"``);
* ``batch``: N clients with ``"batch": true`` (frames every ``API_WS_BATCH_INTERVAL_MS`` holding arrays);
* ``stall``: the seed scenario again plus five clients that subscribe and never read, for longer than the
  kernel socket buffers hide them (~20 s); compare deliveries and p99 with ``seed`` and watch gateway memory.

    .venv/bin/python bench/bench_api_ws.py [--clients 100] [--rate 1000] [--batch-clients 1000] [--seconds 10]
        [--ws-protocols frame-writer,websockets-sansio]   # API_WS_PROTOCOL values, one gateway each, same run
        [--baseline REV]   # also the api package of git revision REV (its default protocol), same run
        [--rounds N]   # every gateway N times, interleaved: the first of a run measures worse
        [--variant 'int15:API_WS_BATCH_INTERVAL_MS=15'] ...   # also a gateway with these settings, same run

Everything shares this machine's two cores: the CPU columns say who used what.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import multiprocessing as mp
import os
import re
import sys
import time
import urllib.request
from array import array
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import uvloop
from confluent_kafka import Producer

from contracts.tick import Tick, encode_tick
from stack.runner import ManagedProcess
from stack.services import (
    create_topics,
    free_port,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchstack import export_revision, local_stack  # noqa: E402 - bench/ is not a package
from gateway import gateway_spec, running_gateway  # noqa: E402
from procstat import cpu_seconds, rss_mb  # noqa: E402

TS_RE = re.compile(rb'"timestamp":(\d+)')
COUNT_RE = re.compile(rb'"count":(\d+)')
MASK = b"\x00\x00\x00\x00"  # client frames must be masked; a zero mask keeps the payload as is


def _client_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    n = len(payload)
    head = bytes([0x80 | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
    return head + MASK + payload


class Stats:
    """Counters shared by the clients of one process."""

    def __init__(self) -> None:
        self.measuring = False
        self.deliveries = 0
        self.frames = 0
        self.lat_ms: array[float] = array("d")
        self.wire_ms: array[float] = array("d")  # batched frames: receive time - the frame's own timestamp
        self.built_ms: array[float] = array("d")  # batched frames: the frame's own timestamp - each event's
        self.per_client: list[int] = []
        self.subscribed = 0
        self.closed = 0


class WsClient(asyncio.Protocol):
    """A minimal WebSocket client: handshake, one subscribe, counts events, answers pings, may stall."""

    def __init__(self, stats: Stats, index: int, subscribe: bytes, sample: bool, stall: bool) -> None:
        self.stats = stats
        self.index = index
        self.subscribe = subscribe
        self.sample = sample
        self.stall = stall
        self.buf = bytearray()
        self.upgraded = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not subclasses
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(
            (
                "GET /ws HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self.stats.closed += 1

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                raise RuntimeError(bytes(buf[:80]))
            del buf[: end + 4]
            self.upgraded = True
            assert self.transport is not None
            self.transport.write(_client_frame(self.subscribe))
        stats = self.stats
        off, size = 0, len(buf)
        now_ms = time.time() * 1000.0
        count = 0
        while size - off >= 2:
            opcode = buf[off] & 0x0F
            n = buf[off + 1] & 0x7F
            head = 2
            if n == 126:
                if size - off < 4:
                    break
                n = int.from_bytes(buf[off + 2 : off + 4], "big")
                head = 4
            elif n == 127:
                if size - off < 10:
                    break
                n = int.from_bytes(buf[off + 2 : off + 10], "big")
                head = 10
            if size - off < head + n:
                break
            start = off + head
            off = start + n
            if opcode == 0x1:
                kind = bytes(buf[start : start + 16])
                if kind.startswith(b'{"type":"tick"'):
                    events = 1
                elif kind.startswith(b'{"type":"batch"'):
                    m = COUNT_RE.match(buf, start + 16)
                    events = int(m.group(1)) if m else 0
                else:
                    if kind.startswith(b'{"type":"subscri'):
                        stats.subscribed += 1
                        if self.stall and self.transport is not None:
                            self.transport.pause_reading()  # never read again
                    continue
                if stats.measuring:
                    count += events
                    stats.frames += 1
                    if self.sample:
                        payload = bytes(buf[start:off])
                        cut = payload.find(b'"events":')  # a batch's own timestamp is not an event's
                        own = TS_RE.search(payload, 0, cut) if cut > 0 else None
                        if own is not None:
                            stats.wire_ms.append(now_ms - int(own.group(1)))
                        stamps = TS_RE.findall(payload, cut if cut > 0 else 0)
                        stats.lat_ms.extend(now_ms - int(s) for s in stamps)
                        if own is not None:  # tick -> frame built: the gateway's part (relay, hub, frame wait)
                            built = int(own.group(1))
                            stats.built_ms.extend(built - int(s) for s in stamps)
            elif opcode == 0x9 and self.transport is not None:  # ping -> pong
                self.transport.write(_client_frame(bytes(buf[start:off]), 0xA))
        if count:
            stats.deliveries += count
            stats.per_client[self.index] += count
        if off:
            del buf[:off]


def _clients(
    port: int,
    n: int,
    stalled: int,
    batch: bool,
    sample_every: int,
    ready: Any,
    go: Any,
    stop: Any,
    out: Any,
) -> None:
    """Process body: connect ``n + stalled`` clients, wait for ``go``, count until ``stop``, report."""
    msg: dict[str, object] = {"type": "subscribe", "tickers": ["*"]}
    if batch:
        msg["batch"] = True
    import orjson

    sub = orjson.dumps(msg)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stats = Stats()
        stats.per_client = [0] * (n + stalled)
        transports = []
        for i in range(n + stalled):
            proto = WsClient(stats, i, sub, sample=i % sample_every == 0 and i < n, stall=i >= n)
            tr, _ = await loop.create_connection(lambda p=proto: p, "127.0.0.1", port)  # type: ignore[misc]
            transports.append(tr)
            if i % 50 == 49:
                await asyncio.sleep(0.05)  # the gateway's accept loop shares the cores
        while stats.subscribed < n + stalled:  # noqa: ASYNC110 - counted by the protocol callbacks
            await asyncio.sleep(0.05)
        ready.set()
        await asyncio.to_thread(go.wait)
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        stats.measuring = True
        await asyncio.to_thread(stop.wait)
        stats.measuring = False
        wall = time.perf_counter() - t0
        cpu = (time.process_time() - cpu0) / wall
        out.put(
            {
                "deliveries": stats.deliveries,
                "frames": stats.frames,
                "lat": stats.lat_ms.tobytes(),
                "wire": stats.wire_ms.tobytes(),
                "built": stats.built_ms.tobytes(),
                "per_client": stats.per_client[:n],
                "stalled_received": stats.per_client[n:],
                "wall": wall,
                "cpu": cpu,
                "closed": stats.closed,
            }
        )
        for tr in transports:
            tr.abort()

    uvloop.run(main())


def _producer(bootstrap: str, topic: str, rate: float, tickers: int, stop: Any) -> None:
    """Process body: ``rate`` ticks/s round-robin over ``tickers`` tickers, stamped at production."""
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 2, "acks": 1, "socket.nagle.disable": True})
    names = [f"T{i:04d}" for i in range(tickers)]
    seq = 0
    step = 0.005
    per_step = rate * step
    owed = 0.0
    next_at = time.perf_counter()
    while not stop.is_set():
        owed += per_step
        now_ms = time.time_ns() // 1_000_000
        while owed >= 1.0:
            owed -= 1.0
            name = names[seq % tickers]
            seq += 1
            tick = Tick(
                ticker=name,
                seq=seq,
                timestamp=now_ms,
                price=100.0,
                bid=99.99,
                ask=100.01,
                bid_size=100,
                ask_size=100,
                volume=10,
                version=1,
            )
            p.produce(topic, encode_tick(tick), key=name.encode())
        p.poll(0)
        next_at += step
        delay = next_at - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    p.flush(5)


def _kafka_probe(bootstrap: str, topic: str, go: Any, stop: Any, out: Any) -> None:
    """Process body: a plain consumer of the ticks topic with the relay's fetch settings; reports, for the measured
    window, the share of ticks it received within 25/50/100 ms of their timestamp and its p99 -- the producer and
    broker part of the relay latency, without the gateway."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "bench-probe",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 10,
            "socket.nagle.disable": True,
        }
    )
    parts = c.list_topics(topic, timeout=10).topics[topic].partitions
    c.assign([TopicPartition(topic, p, -1) for p in parts])  # from the end
    lat: list[float] = []
    while not go.is_set():
        c.consume(10_000, 0.05)
    while not stop.is_set():
        msgs = c.consume(10_000, 0)  # what is queued now; else wait for the first to arrive (as the relay does)
        if not msgs:
            first = c.poll(0.05)
            msgs = [first] if first is not None and first.error() is None else []
        for m in msgs:
            now_ms = time.time_ns() / 1e6
            found = TS_RE.search(m.value() or b"")
            if found is not None:
                lat.append(now_ms - int(found.group(1)))
    c.close()
    a = np.array(lat)
    out.put(
        "; kafka probe within 25/50/100 ms "
        + "/".join(f"{(a <= t).mean():.1%}" for t in (25, 50, 100))
        + f" p50 {np.percentile(a, 50):.1f} p99 {np.percentile(a, 99):.1f} ms"
        if a.size
        else ""
    )


@dataclass(frozen=True, slots=True)
class WsResult:
    """One scenario."""

    name: str
    protocol: str
    clients: int
    offered: float  # deliveries/s offered (clients x ticks/s)
    delivered: float
    p50_ms: float
    p99_ms: float
    min_share: float  # slowest client's deliveries / mean
    gw_cpu: float
    clients_cpu: float
    rss_mb: float
    note: str


def run_scenario(
    name: str,
    protocol: str,
    gw: ManagedProcess,
    port: int,
    bootstrap: str,
    topic: str,
    clients: int,
    rate: float,
    seconds: float,
    batch: bool,
    stalled: int = 0,
    procs: int = 1,
    warmup_s: float = 3.0,
) -> WsResult:
    """Connect clients, produce for ``seconds`` (after a warm-up), collect counts and latencies."""
    ctx = mp.get_context("spawn")
    go, stop, pstop = ctx.Event(), ctx.Event(), ctx.Event()
    out: Any = ctx.Queue()
    readies = []
    workers: list[Any] = []  # client processes
    prod: Any = None
    try:
        for k in range(procs):
            ready = ctx.Event()
            n = clients // procs + (1 if k < clients % procs else 0)
            s = stalled if k == 0 else 0
            w = ctx.Process(target=_clients, args=(port, n, s, batch, 10 if batch else 4, ready, go, stop, out))
            w.start()
            readies.append(ready)
            workers.append(w)
        for ready in readies:
            if not ready.wait(120):
                msg = f"{name}: clients did not subscribe in time"
                raise RuntimeError(msg)
        prod = ctx.Process(target=_producer, args=(bootstrap, topic, rate, 100, pstop))
        prod.start()
        probe_out: Any = ctx.Queue()
        probe = ctx.Process(target=_kafka_probe, args=(bootstrap, topic, go, stop, probe_out))
        probe.start()
        workers.append(probe)
        time.sleep(warmup_s)  # warm-up: relay assigned, caches, GC, the clients' first frames
        cpu0 = cpu_seconds(gw.pid, tree=True)
        rss_max = 0.0
        hub0 = _hub_buckets(port)
        t0 = time.perf_counter()
        go.set()
        end = t0 + seconds
        rss_first = rss_mb(gw.pid)
        while time.perf_counter() < end:
            time.sleep(0.5)
            rss_max = max(rss_max, rss_mb(gw.pid))
        stop.set()
        gw_cpu = (cpu_seconds(gw.pid, tree=True) - cpu0) / (time.perf_counter() - t0)
        hub = _hub_shares(hub0, _hub_buckets(port))
        reports = [out.get(timeout=60) for _ in workers[:-1]]
        hub += probe_out.get(timeout=60)
        pstop.set()
        prod.join(15)
        for w in workers:
            w.join(15)
    finally:  # a failure above must not leave (non-daemon) children blocking the interpreter's exit
        pstop.set()
        for w in [*workers, prod]:
            if w is not None and w.is_alive():
                w.terminate()
                w.join(5)
    lat = np.concatenate([np.frombuffer(r["lat"], dtype=float) for r in reports])
    per_client = np.array([c for r in reports for c in r["per_client"]], dtype=float)
    wall = max(r["wall"] for r in reports)
    delivered = sum(r["deliveries"] for r in reports) / wall
    stalled_got = [c for r in reports for c in r["stalled_received"]]
    note = f"rss {rss_first:.0f}->{rss_max:.0f} MB"
    wire = np.concatenate([np.frombuffer(r["wire"], dtype=float) for r in reports])
    if wire.size:  # batched: how much of the latency is after the frame was built (write, network, client)
        note += f"; frame->client p50 {np.percentile(wire, 50):.1f} p99 {np.percentile(wire, 99):.1f} ms"
        per_client_rate = sum(r["frames"] for r in reports) / clients / wall
        note += f"; {per_client_rate:.1f} frames/s per client"
        built = np.concatenate([np.frombuffer(r["built"], dtype=float) for r in reports])
        note += f"; tick->frame p50 {np.percentile(built, 50):.1f} p99 {np.percentile(built, 99):.1f} ms"
    note += hub  # how much is before the hub: producer, broker, relay
    if stalled:
        note += f"; stalled clients got {stalled_got} events, closed {sum(r['closed'] for r in reports)}"
    return WsResult(
        name=name,
        protocol=protocol,
        clients=clients,
        offered=clients * rate,
        delivered=delivered,
        p50_ms=float(np.percentile(lat, 50)) if lat.size else float("nan"),
        p99_ms=float(np.percentile(lat, 99)) if lat.size else float("nan"),
        min_share=float(per_client.min() / per_client.mean()) if per_client.size and per_client.mean() else 0.0,
        gw_cpu=gw_cpu,
        clients_cpu=sum(r["cpu"] for r in reports),
        rss_mb=rss_max,
        note=note,
    )


_HUB_LE = re.compile(rb'le="([^"]+)"')


def _hub_buckets(port: int) -> dict[float, float]:
    """The gateway's ``end_to_end_latency_seconds{path="ws_ticks"}`` buckets (tick time -> handed to the hub)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:  # noqa: S310 - loopback
        text = resp.read()
    out: dict[float, float] = {}
    for line in text.splitlines():
        if line.startswith(b"end_to_end_latency_seconds_bucket{") and b'path="ws_ticks"' in line:
            le = _HUB_LE.search(line)
            if le is not None:
                out[float(le.group(1))] = float(line.rsplit(b" ", 1)[1])
    return out


def _hub_shares(before: dict[float, float], after: dict[float, float]) -> str:
    """Share of the ticks the relay handed to the hub within 5, 10, 25, 50 and 100 ms of their timestamp, in a
    window."""
    total = after.get(float("inf"), 0.0) - before.get(float("inf"), 0.0)
    if total <= 0:
        return ""
    shares = [f"{(after.get(le, 0.0) - before.get(le, 0.0)) / total:.1%}" for le in (0.005, 0.01, 0.025, 0.05, 0.1)]
    return "; tick->hub within 5/10/25/50/100 ms " + "/".join(shares)


def _warm_broker(bootstrap: str, topic: str, rate: float, seconds: float) -> None:
    """Produce at ``rate`` for ``seconds`` before any gateway starts, and consume it as the relay does: a fresh
    broker's JVM compiles its hot paths under the first load, which showed as seconds of latency in whichever
    scenario ran first. Producing alone left the fetch path cold: the first gateway's Kafka probe still saw
    p99 0.4-2.9 s (docs/benchmarks.md, session 17)."""
    if seconds <= 0:
        return
    ctx = mp.get_context("spawn")
    stop, go, done = ctx.Event(), ctx.Event(), ctx.Event()
    go.set()
    out: Any = ctx.Queue()
    prod = ctx.Process(target=_producer, args=(bootstrap, topic, rate, 100, stop))
    reader = ctx.Process(target=_kafka_probe, args=(bootstrap, topic, go, done, out))
    prod.start()
    reader.start()
    time.sleep(seconds)
    done.set()
    out.get(timeout=60)
    stop.set()
    for proc in (prod, reader):
        proc.join(15)


def _run_gateway(
    args: argparse.Namespace,
    protocol: str,
    env: dict[str, str],
    home: Path,
    bootstrap: str,
    ticks: str,
    code_dir: Path | None = None,
    extra_env: dict[str, str] | None = None,
    label: str = "",
) -> list[WsResult]:
    """One gateway with ``API_WS_PROTOCOL=protocol`` (of ``code_dir``'s api package, with ``extra_env``), the
    wanted scenarios."""
    results: list[WsResult] = []
    port = free_port()
    name = f"api-{label or protocol}" if code_dir is None else f"api-{code_dir.name}"
    # ready: /ready answers 200 once the relay is assigned
    spec = gateway_spec(
        name,
        port,
        {**env, "API_WS_PROTOCOL": protocol, **(extra_env or {})},
        ready_path="/ready",
        ready_timeout_s=2.0,
        code_dir=code_dir,
    )
    with running_gateway(spec, home, timeout_s=60, settle_s=1.0) as gw:
        wanted = args.scenarios.split(",")
        common = (protocol, gw, port, bootstrap, ticks)
        procs, warm = args.client_procs, args.warmup
        if "seed" in wanted:
            r = run_scenario("seed", *common, args.clients, args.rate, args.seconds, False, procs=procs, warmup_s=warm)
            results.append(r)
        if "batch" in wanted:
            n = args.batch_clients
            results.append(run_scenario("batch", *common, n, args.rate, args.seconds, True, procs=procs, warmup_s=warm))
        if "stall" in wanted:
            results.append(
                run_scenario(
                    "seed + 5 stalled", *common, args.clients, args.rate, args.stall_seconds, False, 5, procs, warm
                )
            )
    return results


def main() -> None:
    """Run the scenarios against one gateway and print a table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", type=int, default=100, help="seed-protocol clients")
    ap.add_argument("--rate", type=float, default=1000.0, help="ticks/s produced")
    ap.add_argument("--batch-clients", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--stall-seconds", type=float, default=35.0, help="> ~20 s so kernel buffers fill")
    ap.add_argument("--client-procs", type=int, default=2, help="processes holding the client connections")
    ap.add_argument("--scenarios", default="seed,batch,stall")
    ap.add_argument("--ws-protocols", default="frame-writer", help="API_WS_PROTOCOL values to compare")
    ap.add_argument("--warmup", type=float, default=3.0, help="seconds of traffic before measuring")
    ap.add_argument(
        "--broker-warmup", type=float, default=10.0, help="seconds of ticks into Kafka before the first gateway"
    )
    ap.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run every gateway this many times, interleaved (A B A B: the first "
        "gateway of a run measured worse than the same settings later, so compare from the second round on)",
    )
    ap.add_argument("--baseline", default=None, help="git revision whose api package also runs, same run")
    ap.add_argument(
        "--variant", action="append", default=[], help="LABEL:K=V[,K=V]: also a gateway with these settings"
    )
    args = ap.parse_args()
    results: list[WsResult] = []
    with local_stack(partitions=6) as stack:
        db_url, bootstrap = stack.database_url, stack.bootstrap
        ticks, bars = "bench-ticks", "bench-bars"
        create_topics(bootstrap, [ticks, bars], 6)
        env = {
            "DATABASE_URL": db_url,
            "REDIS_URL": stack.redis_url,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "TOPIC_TICKS": ticks,
            "TOPIC_BARS": bars,
        }
        _warm_broker(bootstrap, ticks, args.rate, args.broker_warmup)
        base = export_revision(args.baseline, stack.home / f"base-{args.baseline}") if args.baseline else None
        where = (env, stack.home, bootstrap, ticks)
        for rnd in range(1, args.rounds + 1):
            mark = f" #{rnd}" if args.rounds > 1 else ""
            for protocol in args.ws_protocols.split(","):
                results += [replace(r, protocol=protocol + mark) for r in _run_gateway(args, protocol, *where)]
                if base is not None:
                    for r in _run_gateway(args, "frame-writer", *where, base):
                        results.append(replace(r, protocol=f"rev {args.baseline}{mark}"))
                for variant in args.variant:
                    label, _, pairs = variant.partition(":")
                    extra = dict(pair.split("=", 1) for pair in pairs.split(",") if pair)
                    for r in _run_gateway(args, protocol, *where, None, extra, label):
                        results.append(replace(r, protocol=label + mark))
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} (2 vCPU shared); {args.rate:.0f} ticks/s")
    print(
        f"{'scenario':<18}{'ws protocol':<19}{'clients':>8}{'offered/s':>11}{'delivered/s':>13}{'p50 ms':>8}"
        f"{'p99 ms':>8}{'min share':>10}{'gw cpu':>8}{'cli cpu':>8}  note"
    )
    for r in results:
        print(
            f"{r.name:<18}{r.protocol:<19}{r.clients:>8}{r.offered:>11.0f}{r.delivered:>13.0f}{r.p50_ms:>8.1f}"
            f"{r.p99_ms:>8.1f}{r.min_share:>10.2f}{r.gw_cpu:>8.2f}{r.clients_cpu:>8.2f}  {r.note}"
        )


if __name__ == "__main__":
    main()
