"""Final-bar latency of the bars flow in real time: ``python bench/bench_flow_latency.py [--minutes 3]``.

Starts its own Kafka, PostgreSQL and Redis (:func:`benchstack.local_stack`) and the deployed flow as a
separate process (``python -m bytewax.run flows.bars``, live mode, timeframe ``1m`` only so that a window
closes every minute, grace 2 s, live bars on). This process then produces ticks stamped with the wall clock:

* *active* tickers trade all the time (``--rate`` ticks/s each): their windows close on the next tick;
* *quiet* tickers trade only in the first 20 s of every minute and then go silent: their windows close on the
  partition's log time, carried by the active tickers' records (``flows.logclock``).

It watches the three places a final bar must reach and records, per ``(ticker, window)``, the delay after the
window's end: Redis ``bar:{ticker}:1m:final`` (polled every 10 ms), PostgreSQL ``market_bars.updated_at``
(set by the upsert's ``now()``), and ``market-bars`` (consumer receive time, fetch wait 10 ms). Windows that
ended before the flow was up are skipped. Target: every final within grace + 250 ms = 2,250 ms (p99).
Three minutes give two or three complete windows per ticker; ``--minutes`` runs longer.

``--pattern`` shapes the arrivals: ``burst`` (default) writes every ticker's tick at once every ``1/rate`` s, so
a partition is idle in between and its windows mostly close on the idle clock (``FLOW_IDLE_CLOSE_MS``);
``steady`` spreads the tickers over that period in 10 ms steps, as trades of many tickers arrive (and as the
simulator writes), so the partition's records carry its log time every few ms.

``--timestamps append,create`` runs once per item on the same servers: the ticks topic with the broker's
``LogAppendTime`` (as ``make up`` creates ``market-ticks``; idle margin ``FLOW_IDLE_CLOSE_APPEND_MS``) or the
producer's ``CreateTime`` (``FLOW_IDLE_CLOSE_MS``). Each run also prints how long after its record timestamp a
consumer set up like the flow's source receives each tick: the delay the idle margin has to cover; and, from the
flow's /metrics, the ticks it dead-lettered as late and its idle-clock overruns (records that came later than the
margin), both of which should be 0.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import msgspec
import numpy as np
import psycopg
import redis
from confluent_kafka import Consumer, Producer
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchstack import LocalStack, local_stack  # noqa: E402 -- bench/ is not a package

from contracts import redis_keys  # noqa: E402
from contracts.bar import decode_bar  # noqa: E402
from flows.decode import WireTick  # noqa: E402
from stack.services import TICKS_TOPIC_CONFIG, create_topics, free_port  # noqa: E402
from stack.settings import REPO_ROOT  # noqa: E402

MINUTE = 60_000
GRACE_MS = 2_000
#: (sink, quiet?) -> {(ticker, window start): delay after the window end in ms}
Samples = dict[tuple[str, bool], dict[tuple[str, int], int]]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def start_flow(stack: LocalStack, topics: dict[str, str], log: Path, metrics_port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap,
        "DATABASE_URL": stack.database_url,
        "REDIS_URL": stack.redis_url,
        "TOPIC_TICKS": topics["ticks"],
        "TOPIC_BARS": topics["bars"],
        "TOPIC_DEAD_LETTER": topics["dlq"],
        "FLOW_MODE": "live",
        "FLOW_TIMEFRAMES": "1m",
        "FLOW_GRACE_MS": str(GRACE_MS),
        "FLOW_METRICS_PORT": str(metrics_port),
    }
    with log.open("wb") as out:
        return subprocess.Popen(  # noqa: S603 -- our own interpreter and module
            [sys.executable, "-m", "bytewax.run", "flows.bars"], cwd=REPO_ROOT, env=env, stdout=out, stderr=out
        )


def produce(
    bootstrap: str, topic: str, active: list[str], quiet: list[str], rate: float, steady: bool, stop: threading.Event
) -> int:
    """Ticks stamped with the wall clock until ``stop``; quiet tickers only in seconds 0-20 of each minute.
    Ticker ``i`` of ``n`` trades when ``rate * t + phase`` passes a whole number, ``phase = i / n`` if ``steady``
    (spread over the period), else 0 (all at once)."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    rng = np.random.default_rng(7)
    names = active + quiet
    cents = dict.fromkeys(names, 10000)
    step_s = 0.01 if steady else 0.05
    phase = np.arange(len(names)) / len(names) if steady else np.zeros(len(names))
    per_step = rate * step_s
    seq = sent = step = 0
    while not stop.is_set():
        t = now_ms()
        counts = np.floor(per_step * (step + 1) + phase) - np.floor(per_step * step + phase)
        trading = len(names) if t % MINUTE < 20_000 else len(active)
        for i in np.flatnonzero(counts[:trading]):
            name = names[i]
            for _ in range(int(counts[i])):
                c = cents[name] = max(100, cents[name] + int(rng.integers(-3, 4)))
                tick = WireTick(name, seq, now_ms(), c / 100, (c - 1) / 100, (c + 1) / 100, 100, 100, 10, 1)
                producer.produce(topic, msgspec.json.encode(tick), name.encode())
                seq += 1
                sent += 1
        step += 1
        producer.poll(0)
        time.sleep(max(0.0, step_s - (now_ms() - t) / 1000))
    producer.flush(30)
    return sent


def watch_redis(url: str, tickers: list[str], quiet: set[str], out: Samples, stop: threading.Event) -> None:
    client = redis.Redis.from_url(url)
    keys = [redis_keys.final_bar(t, "1m") for t in tickers]
    seen: dict[str, bytes] = {}
    while not stop.is_set():
        t = now_ms()
        for ticker, raw in zip(tickers, client.mget(keys), strict=True):
            if raw is not None and seen.get(ticker) != raw:
                seen[ticker] = raw
                bar = decode_bar(raw)
                out["redis", ticker in quiet].setdefault((ticker, bar.start), t - bar.end)
        time.sleep(0.01)
    client.close()


def watch_kafka(bootstrap: str, topic: str, quiet: set[str], out: Samples, stop: threading.Event) -> None:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex[:6]}", "auto.offset.reset": "earliest",
         "fetch.wait.max.ms": 10, "enable.auto.commit": False}
    )  # fmt: skip
    consumer.subscribe([topic])
    while not stop.is_set():
        for msg in consumer.consume(1_000, 0.05):
            if msg.error() is not None:
                continue
            t = now_ms()
            bar = decode_bar(msg.value() or b"")
            if bar.final:
                out["kafka", bar.ticker in quiet].setdefault((bar.ticker, bar.start), t - bar.end)
    consumer.close()


def read_database(url: str, quiet: set[str], out: Samples) -> None:
    query = "SELECT ticker, time, updated_at FROM market_bars WHERE timeframe = '1m'"
    with psycopg.connect(url) as conn:
        for ticker, start, updated in conn.execute(query):
            start_ms = int(start.timestamp() * 1000)
            delay = int(updated.timestamp() * 1000) - (start_ms + MINUTE)
            out["database", ticker in quiet][ticker, start_ms] = delay


def flow_counters(port: int) -> dict[str, float]:
    """Late ticks dead-lettered and idle-clock overruns so far, from the flow's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:  # noqa: S310 - ours
        text = response.read().decode()
    out = {"late": 0.0, "overrun": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "flow_dead_letters_total" and sample.labels.get("kind") == "late":
                out["late"] += sample.value
            elif sample.name == "flow_idle_clock_overrun_total":
                out["overrun"] += sample.value
    return out


def watch_delivery(bootstrap: str, topic: str, out: list[int], stop: threading.Event) -> None:
    """How long after its record timestamp each tick reaches a consumer configured as the flow's source is (the
    delay the idle margin must cover): producer linger included for CreateTime, not for LogAppendTime."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex[:6]}", "auto.offset.reset": "latest",
         "fetch.wait.max.ms": 50, "fetch.min.bytes": 1, "enable.auto.commit": False}
    )  # fmt: skip
    consumer.subscribe([topic])
    while not stop.is_set():
        msgs = consumer.consume(1_000, 0.01)
        t = now_ms()
        out.extend(t - msg.timestamp()[1] for msg in msgs if msg.error() is None)
    consumer.close()


def measure(stack: LocalStack, args: argparse.Namespace, timestamps: str) -> None:
    """One run: a fresh topic with ``timestamps`` (``append``: LogAppendTime, as ``make up``; ``create``), the flow,
    the producer and the watchers; prints the table."""
    active = [f"A{i:03d}" for i in range(args.active)]
    quiet = [f"Q{i:03d}" for i in range(args.quiet)]
    samples: Samples = {(s, q): {} for s in ("redis", "database", "kafka") for q in (False, True)}
    delivery: list[int] = []
    with psycopg.connect(stack.database_url, autocommit=True) as conn:  # earlier runs' bars
        conn.execute("TRUNCATE market_bars")
    redis.Redis.from_url(stack.redis_url).flushdb()
    suffix = uuid.uuid4().hex[:8]
    topics = {"ticks": f"lat-ticks-{suffix}", "bars": f"lat-bars-{suffix}", "dlq": f"lat-dlq-{suffix}"}
    create_topics(stack.bootstrap, [topics["ticks"]], 3, TICKS_TOPIC_CONFIG if timestamps == "append" else None)
    create_topics(stack.bootstrap, [topics["bars"], topics["dlq"]], 3)
    log = Path(f"/tmp/bench-flow-latency-{suffix}.log")
    metrics_port = free_port()
    flow = start_flow(stack, topics, log, metrics_port)
    stop_produce, stop = threading.Event(), threading.Event()
    quiet_set = set(quiet)
    threads = [
        threading.Thread(target=watch_redis, args=(stack.redis_url, active + quiet, quiet_set, samples, stop)),
        threading.Thread(target=watch_kafka, args=(stack.bootstrap, topics["bars"], quiet_set, samples, stop)),
        threading.Thread(target=watch_delivery, args=(stack.bootstrap, topics["ticks"], delivery, stop)),
    ]
    for thread in threads:
        thread.start()
    sent: list[int] = []

    def run_producer() -> None:
        steady = args.pattern == "steady"
        sent.append(produce(stack.bootstrap, topics["ticks"], active, quiet, args.rate, steady, stop_produce))

    producer = threading.Thread(target=run_producer)
    producer.start()
    try:
        client = redis.Redis.from_url(stack.redis_url)
        deadline = time.monotonic() + 120
        while client.get(redis_keys.latest_price(active[0])) is None:  # the flow is consuming
            if flow.poll() is not None or time.monotonic() > deadline:
                msg = f"the flow did not start; see {log}"
                raise RuntimeError(msg)
            time.sleep(0.1)
        up_ms = now_ms()
        first_window = (up_ms // MINUTE + 1) * MINUTE  # the first window fully observed
        time.sleep(args.minutes * 60)
        stop_produce.set()
        producer.join()
        stopped_ms = now_ms()
        time.sleep((GRACE_MS + 3_000) / 1000)  # let the last windows close by the timer
        counters = flow_counters(metrics_port)
    finally:
        stop_produce.set()
        stop.set()
        for thread in threads:
            thread.join()
        flow.terminate()
        flow.wait(30)
    read_database(stack.database_url, set(quiet), samples)
    last_window_end = stopped_ms // MINUTE * MINUTE  # windows ending after the producer stopped are partial
    print(
        f"\nfinal-bar latency after the window end, live mode, timeframe 1m, grace {GRACE_MS} ms; {len(active)} "
        f"active tickers x {args.rate} ticks/s ({args.pattern}) + {len(quiet)} quiet ones (timer close); "
        f"{args.minutes} min, {sum(sent):,} ticks; windows {first_window}..{last_window_end}; "
        f"record timestamps: {'LogAppendTime' if timestamps == 'append' else 'CreateTime'}"
    )
    print(f"load average: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    print(f"late ticks dead-lettered: {counters['late']:.0f}; idle-clock overruns: {counters['overrun']:.0f}")
    if delivery:
        d = np.array(delivery)
        print(
            f"tick delivery, record timestamp -> consumer: p50 {np.percentile(d, 50):.0f} ms, "
            f"p99 {np.percentile(d, 99):.0f} ms, p99.9 {np.percentile(d, 99.9):.0f} ms, max {d.max()} ms "
            f"({len(d):,} records)"
        )
    print(f"{'sink':<9} {'tickers':<7} {'bars':>5} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'<= grace+250':>13}")
    for (sink, is_quiet), found in samples.items():
        delays = np.array(
            [d for (_, start), d in found.items() if first_window <= start and start + MINUTE <= last_window_end]
        )
        if not len(delays):
            print(f"{sink:<9} {'quiet' if is_quiet else 'active':<7} {0:>5}")
            continue
        ok = float(np.mean(delays <= GRACE_MS + 250)) * 100
        print(
            f"{sink:<9} {'quiet' if is_quiet else 'active':<7} {len(delays):>5} {np.percentile(delays, 50):>7.0f} "
            f"{np.percentile(delays, 99):>7.0f} {delays.max():>7.0f} {ok:>12.1f}%"
        )
    log.unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--active", type=int, default=150, help="tickers trading all the time")
    parser.add_argument("--quiet", type=int, default=50, help="tickers silent after second 20 of each minute")
    parser.add_argument("--rate", type=float, default=2.0, help="ticks/s per trading ticker")
    parser.add_argument("--pattern", choices=("burst", "steady"), default="burst", help="arrival shape (see above)")
    parser.add_argument(
        "--timestamps",
        default="append",
        help="comma list of runs, in order: append (the topic uses LogAppendTime, as make up creates market-ticks) "
        "or create (the producer's CreateTime)",
    )
    args = parser.parse_args()
    runs = args.timestamps.split(",")
    if not set(runs) <= {"append", "create"}:
        parser.error("--timestamps: a comma list of append and create")
    with local_stack(partitions=3) as stack:
        for timestamps in runs:
            measure(stack, args, timestamps)


if __name__ == "__main__":
    main()
