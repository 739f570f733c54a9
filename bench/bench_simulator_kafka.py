"""Benchmark: backfill into a local Kafka (JSON, idempotent producer) and real-time pacing lag.

Run: ``.venv/bin/python bench/bench_simulator_kafka.py [--bootstrap HOST:PORT]`` (a broker must be running,
e.g. the project's local stack). Prints a table: backfill ticks/s (target >= 300k/s) and the pacing lag
p50/p99 of 10,000 tickers at 1 tick/s (target p99 <= 50 ms).
"""

from __future__ import annotations

import argparse
import threading
import time
import uuid
from datetime import UTC, datetime

import numpy as np

from simulator.engine import TickEngine
from simulator.metrics import SimulatorMetrics
from simulator.producer import TickProducer
from simulator.session import Session, to_ms
from simulator.settings import SimulatorSettings
from simulator.stream import stream, wall_ms
from simulator.universe import Universe, UniverseConfig, load_universe
from stack.services import create_topics


def topic(bootstrap: str) -> str:
    name = f"bench-ticks-{uuid.uuid4().hex[:8]}"
    create_topics(bootstrap, [name], 6)
    return name


def backfill(bootstrap: str, seconds: int = 60) -> float:
    u = Universe(UniverseConfig(factors=["market", "a"], generate={"count": 1000, "seed": 1}))
    settings = SimulatorSettings(kafka_bootstrap_servers=bootstrap, metrics_port=0)
    metrics = SimulatorMetrics()
    prod = TickProducer(settings, u.symbols, metrics, topic=topic(bootstrap))
    prod.wait_for_broker()
    start = to_ms(datetime(2024, 1, 2, tzinfo=UTC))
    eng = TickEngine(u, Session(), 1, start, threads=2)
    t = time.perf_counter()
    n = stream(eng, prod, metrics, threading.Event(), end_ms=start + seconds * 1000, realtime=False)
    prod.flush(120)
    eng.close()
    assert prod.failed == 0, prod.failed
    return n / (time.perf_counter() - t)


def realtime(bootstrap: str, seconds: float = 60.0) -> tuple[float, float, float]:
    u = load_universe("large")
    settings = SimulatorSettings(kafka_bootstrap_servers=bootstrap, metrics_port=0, tick_rate=1.0)
    metrics = SimulatorMetrics()
    prod = TickProducer(settings, u.symbols, metrics, topic=topic(bootstrap))
    prod.wait_for_broker()
    lags: list[float] = []
    metrics.pacing_lag.observe = lags.append  # type: ignore[method-assign,assignment]
    eng = TickEngine(u, Session(), 1, wall_ms() + 1000, tick_ms=1000, threads=2)
    stop = threading.Event()
    threading.Timer(seconds, stop.set).start()
    stream(eng, prod, metrics, stop, realtime=True)
    prod.flush(60)
    eng.close()
    a = np.array(lags) * 1000
    return float(np.percentile(a, 50)), float(np.percentile(a, 99)), float(a.max())


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--bootstrap", default=SimulatorSettings().kafka_bootstrap_servers)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--start-broker", action="store_true", help="start a throw-away local broker (stack helpers)")
    args = p.parse_args()
    if args.start_broker:
        import contextlib
        import shutil
        import tempfile
        from pathlib import Path

        from stack.runner import running
        from stack.services import free_port, prepare_kafka
        from stack.settings import REPO_ROOT, StackSettings

        home = Path(tempfile.mkdtemp(prefix="bench-kafka-"))
        st = StackSettings(
            home=REPO_ROOT / ".local", kafka_port=free_port(), kafka_controller_port=free_port(), kafka_partitions=6
        )
        with contextlib.ExitStack() as es:
            es.callback(shutil.rmtree, home, True)
            es.enter_context(running(prepare_kafka(st, home / "data"), home / "logs", timeout_s=120))
            report(st.kafka_bootstrap_servers, args.seconds)
    else:
        report(args.bootstrap, args.seconds)


def report(bootstrap: str, seconds: float) -> None:
    rate = backfill(bootstrap)
    p50, p99, mx = realtime(bootstrap, seconds)
    print(f"| {'benchmark':<46} | {'result':<28} | {'target':<14} |")
    print(f"|{'-' * 48}|{'-' * 30}|{'-' * 16}|")
    res = f"{rate / 1e3:,.0f} k ticks/s"
    print(f"| {'backfill 1,000 tickers -> Kafka (JSON, lz4)':<46} | {res:<28} | >= 300 k/s     |")
    lag = f"p50 {p50:.1f} / p99 {p99:.1f} / max {mx:.1f} ms"
    print(f"| {'real time 10,000 tickers x 1 tick/s, lag':<46} | {lag:<28} | p99 <= 50 ms   |")


if __name__ == "__main__":
    main()
