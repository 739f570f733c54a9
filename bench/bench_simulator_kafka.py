"""Benchmark: backfill into a local Kafka (JSON, idempotent producer) and real-time pacing lag.

Run: ``.venv/bin/python bench/bench_simulator_kafka.py [--bootstrap HOST:PORT | --start-broker]``. Prints a
table: backfill ticks/s (target >= 300k/s) for the producer variants side by side in the same run (the previous
per-message ``produce`` + callback path, ``produce_batch`` without and with the encode thread, compression
codecs) and the pacing lag p50/p99 of 10,000 tickers at 1 tick/s (target p99 <= 50 ms), with the load average.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from common.clock import now_ms, to_ms
from simulator.engine import TickBatch, TickEngine
from simulator.metrics import SimulatorMetrics
from simulator.producer import TickProducer
from simulator.session import Session
from simulator.settings import SimulatorSettings
from simulator.stream import stream
from simulator.universe import Universe, UniverseConfig, load_universe
from stack.services import create_topics

sys.path.insert(0, str(Path(__file__).resolve().parent))
from procstat import cpu_seconds  # noqa: E402 -- bench/ is not a package


def topic(bootstrap: str) -> str:
    name = f"bench-ticks-{uuid.uuid4().hex[:8]}"
    create_topics(bootstrap, [name], 6)
    return name


class LegacyProducer(TickProducer):
    """The previous path: one ``produce()`` call per message with a per-message delivery callback."""

    def __init__(self, settings: SimulatorSettings, symbols: list[str], metrics: SimulatorMetrics, topic: str) -> None:
        super().__init__(settings, symbols, metrics, topic, pipeline=False)
        from confluent_kafka import Producer

        from simulator.producer import producer_config

        conf = producer_config(settings)
        conf["delivery.report.only.error"] = False
        self._producer = Producer(conf)

    def _records(self, batch: TickBatch) -> list[dict[str, Any]]:
        return [{"value": v} for v in self.encoder.messages(batch)]

    def _queue(self, msgs: list[dict[str, Any]], batch: TickBatch) -> None:
        values = [m["value"] for m in msgs]
        keys = self.encoder.keys
        tick = batch.ticker.tolist()
        produce, poll, cb = self._producer.produce, self._producer.poll, self._on_delivery
        for i in range(len(tick)):
            while True:
                try:
                    produce(self.topic, values[i], keys[tick[i]], on_delivery=cb)
                    break
                except BufferError:
                    poll(0.05)
            if not i & 1023:
                poll(0)
        poll(0)
        self.produced += len(tick)


VARIANTS: dict[str, tuple[str, dict[str, object]]] = {
    "legacy: produce() per message + callback": ("legacy", {}),
    "produce_batch, no encode thread": ("batch", {}),
    "produce_batch + encode thread (default)": ("pipeline", {}),
    "  same, compression zstd": ("pipeline", {"compression": "zstd"}),
    "  same, compression none": ("pipeline", {"compression": "none"}),
    "  same, linger.ms 5": ("pipeline", {"linger_ms": 5}),
}


def cpu_s(pid: int | None = None) -> float:
    """CPU seconds (user + system, all threads) of this process or of ``pid`` (the broker)."""
    if pid is None:
        return time.process_time()
    return cpu_seconds(pid)


class Rate(NamedTuple):
    """Wall-clock throughput and CPU microseconds per tick of the simulator and of the broker."""

    per_s: float
    sim_us: float
    broker_us: float | None


def backfill(
    bootstrap: str,
    variant: str = "pipeline",
    overrides: dict[str, object] | None = None,
    seconds: int = 60,
    broker_pid: int | None = None,
) -> Rate:
    u = Universe(UniverseConfig(factors=["market", "a"], generate={"count": 1000, "seed": 1}))
    settings = SimulatorSettings(kafka_bootstrap_servers=bootstrap, metrics_port=0, **(overrides or {}))  # type: ignore[arg-type]
    metrics = SimulatorMetrics()
    name = topic(bootstrap)
    prod: TickProducer
    if variant == "legacy":
        prod = LegacyProducer(settings, u.symbols, metrics, name)
    else:
        prod = TickProducer(settings, u.symbols, metrics, topic=name, pipeline=variant == "pipeline")
    prod.wait_for_broker()
    start = to_ms(datetime(2024, 1, 2, tzinfo=UTC))
    eng = TickEngine(u, Session(), 1, start, threads=2)
    t, c, cb = time.perf_counter(), cpu_s(), cpu_s(broker_pid) if broker_pid else 0.0
    n = stream(eng, prod, metrics, threading.Event(), end_ms=start + seconds * 1000, realtime=False)
    prod.flush(120)
    wall, cpu = time.perf_counter() - t, cpu_s() - c
    broker = (cpu_s(broker_pid) - cb) / n * 1e6 if broker_pid else None
    eng.close()
    assert prod.failed == 0, prod.failed
    return Rate(n / wall, cpu / n * 1e6, broker)


def realtime(bootstrap: str, seconds: float = 60.0, slice_ms: int = 10) -> tuple[float, float, float]:
    """Lag = wall time when a slice's last tick was queued minus the slice's (earliest) timestamp."""
    u = load_universe("large")
    settings = SimulatorSettings(kafka_bootstrap_servers=bootstrap, metrics_port=0, tick_rate=1.0)
    metrics = SimulatorMetrics()
    prod = TickProducer(settings, u.symbols, metrics, topic=topic(bootstrap))
    prod.wait_for_broker()
    lags: list[float] = []
    metrics.pacing_lag.observe = lags.append  # type: ignore[method-assign,assignment]
    eng = TickEngine(u, Session(), 1, now_ms() + 1000, tick_ms=1000, threads=2, slice_ms=slice_ms)
    # the first block starts on the next whole minute: measure `seconds` from there, not from now
    wait_s = max(0, eng.next_ts_ms() - now_ms()) / 1000.0
    stop = threading.Event()
    threading.Timer(wait_s + seconds, stop.set).start()
    stream(eng, prod, metrics, stop, realtime=True)
    prod.flush(60)
    eng.close()
    if not lags:
        msg = f"real time, {slice_ms} ms slices: no slice was sent in {wait_s + seconds:.0f} s (no lag measured)"
        raise RuntimeError(msg)
    a = np.array(lags) * 1000
    return float(np.percentile(a, 50)), float(np.percentile(a, 99)), float(a.max())


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--bootstrap", default=SimulatorSettings().kafka_bootstrap_servers)
    p.add_argument("--seconds", type=float, default=60.0, help="real-time run length")
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds of the backfill variants")
    p.add_argument("--only", choices=["backfill", "realtime"], help="run one part only")
    p.add_argument("--start-broker", action="store_true", help="start a throw-away local broker (stack helpers)")
    p.add_argument("--broker-pid", type=int, help="pid of the broker at --bootstrap, to report its CPU per tick")
    args = p.parse_args()
    if args.start_broker:
        from stack.private import private_settings, run_kafka, temp_home

        st = private_settings(kafka_partitions=6)
        with temp_home("bench-kafka-") as home, run_kafka(st, home) as broker:
            report(st.kafka_bootstrap_servers, args.seconds, args.rounds, args.only, broker.pid)
    else:
        report(args.bootstrap, args.seconds, args.rounds, args.only, args.broker_pid)


def report(
    bootstrap: str, seconds: float, rounds: int = 2, only: str | None = None, broker_pid: int | None = None
) -> None:
    rows: list[tuple[str, str, str]] = []
    rates: dict[str, list[Rate]] = {k: [] for k in VARIANTS}
    # interleaved rounds, so a load change on the shared machine hits every variant
    for _ in range(rounds if only != "realtime" else 0):
        for name, (variant, overrides) in VARIANTS.items():
            rates[name].append(backfill(bootstrap, variant, overrides, broker_pid=broker_pid))
    for name, r in rates.items():
        if not r:
            continue
        res = " / ".join(f"{x.per_s / 1e3:,.0f}" for x in r) + " k/s; CPU "
        res += " / ".join(f"{x.sim_us:.1f}" for x in r) + " us/tick"
        if broker_pid:
            res += " (broker " + " / ".join(f"{x.broker_us or 0:.1f}" for x in r) + ")"
        rows.append((f"backfill 1,000 tickers: {name}", res, ">= 300 k/s" if "default" in name else ""))
    if only != "backfill":
        for slice_ms, label in ((1000, "one burst per second (previous)"), (10, "10 ms slices (default)")):
            p50, p99, mx = realtime(bootstrap, seconds, slice_ms)
            res = f"p50 {p50:.1f} / p99 {p99:.1f} / max {mx:.1f} ms"
            rows.append((f"real time 10,000 tickers x 1 tick/s, lag: {label}", res, "p99 <= 50 ms"))
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}; {os.cpu_count()} cpus")
    print(f"| {'benchmark':<64} | {'result':<60} | {'target':<12} |")
    print(f"|{'-' * 66}|{'-' * 62}|{'-' * 14}|")
    for name, res, target in rows:
        print(f"| {name:<64} | {res:<60} | {target:<12} |")


if __name__ == "__main__":
    main()
