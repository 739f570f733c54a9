"""Bars flow consuming a backlog from a real local Kafka: ``python bench/bench_flow_kafka.py [--ticks N]``.

Starts its own Kafka broker, PostgreSQL (migrated) and Redis in a temporary directory with the stack code
(as ``tests/conftest.py`` does), produces a backlog of ``--ticks`` ticks over ``--tickers`` tickers into a fresh
``market-ticks`` topic, then runs the flow in this process (one worker, ``RawKafkaSource`` reading to the end
of each partition) three ways, and prints one table row each:

* ``kcat (C)``: a reference, not our code: ``kcat`` (librdkafka in C, no Python) reads the whole topic with the
  same fetch size and discards it -- how fast this broker and machine hand out the backlog at all;
* ``source only``: the Kafka source alone (consume + RawBatch), every batch counted and dropped;
* ``flow, no sinks``: decode, bars and indicators (backfill mode, live bars on), counting sinks;
* ``flow + sinks``: the deployed wiring -- PostgreSQL ``market_bars``, Redis, ``market-bars``, the dead-letter
  topic and the latest-quote sink (``flows.sinks``).

The differences between rows show where the time goes; ``host busy`` is how many of the machine's cores
were busy during the row (all processes: the broker, the servers behind the sinks, this one); ``worker busy``
the share of the row the flow's worker thread spent on a core (1.00: the Python thread is the bound; less: it
waited, for fetches or sinks); ``start s`` the seconds from starting the flow to its first value (connecting,
metadata, the first fetch) and ``steady/s`` the rate after it; ``peak +MB``
how far this process's resident memory rose above its level at the row's start (``VmHWM`` after a reset): the
memory a batch size costs while catching up.
Target: >= 500,000 ticks/s per process into the sinks.
``--modes source,flow`` runs some rows only; ``--consumer KEY=VALUE`` (repeatable) runs every row a second time,
right after the first over the same backlog, with those librdkafka consumer settings added (marked ``*``).
``--readers native,confluent`` runs every row with each partition reader in turn (``FLOW_KAFKA_READER``: the
native one against confluent-kafka's ``Consumer``, same backlog, same run).
The servers come from :func:`benchstack.local_stack`, shared with the other benchmarks.
"""

from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.testing import run_main
from confluent_kafka import Producer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_flow_bars import Counter, Scenario, make_keyed_values  # noqa: E402 -- bench/ is not a package
from benchstack import LocalStack, local_stack  # noqa: E402
from procstat import host_busy_seconds, peak_rss_mb, reset_peak_rss  # noqa: E402

from flows import sinks  # noqa: E402
from flows.bars import build_flow, tune_gc  # noqa: E402
from flows.settings import FlowSettings  # noqa: E402
from flows.sources import MAX_PARTITION_FETCH_BYTES, RawKafkaSource  # noqa: E402
from stack.services import create_topics  # noqa: E402

#: ``--modes`` names of the three rows
MODES = {"kcat": "kcat (C)", "source": "source only", "flow": "flow, no sinks", "sinks": "flow + sinks"}


def produce_backlog(bootstrap: str, topic: str, values: list[bytes], tickers: list[bytes]) -> float:
    """Write ``values`` keyed by ticker (``tickers[i]``); returns the produce rate in messages/s."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 20,
            "batch.size": 1_000_000,
            "compression.type": "lz4",
            # a retried request must not reorder the backlog: out-of-order ticks would become late dead letters
            "enable.idempotence": True,
        }
    )
    start = time.perf_counter()
    for key, value in zip(tickers, values, strict=True):
        while True:
            try:
                producer.produce(topic, value, key)
                break
            except BufferError:
                producer.poll(0.05)
    if (left := producer.flush(120)) > 0:
        msg = f"backlog incomplete: {left} of {len(values)} ticks not delivered to {topic!r}"
        raise RuntimeError(msg)
    return len(values) / (time.perf_counter() - start)


def _source_only(settings: FlowSettings, topic: str, counter: Counter, extra: dict[str, object] | None) -> Dataflow:
    flow = Dataflow("source_only")
    batches = op.input("market_ticks", flow, _source(settings, topic, extra))
    sizes = op.map("count_values", batches, lambda batch: len(batch.values))
    op.output("count_out", sizes, _SumSink(counter))
    return flow


class _SumPartition(StatelessSinkPartition[int]):
    def __init__(self, counter: Counter) -> None:
        self.counter = counter

    def write_batch(self, items: list[int]) -> None:
        self.counter.n += sum(items)


class _SumSink(DynamicSink[int]):
    """Adds up integers (the source-only row counts values, not batches)."""

    def __init__(self, counter: Counter) -> None:
        self.counter = counter

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _SumPartition:
        return _SumPartition(self.counter)


class _TimedSource(RawKafkaSource):
    """The flow's source, noting when the first value arrived (the start-up before it is not backlog reading)."""

    first_value_at: float | None = None

    def build_part(self, step_id: str, for_part: str, resume_state: Any) -> Any:
        part = super().build_part(step_id, for_part, resume_state)
        read = part.next_batch

        def next_batch() -> list[Any]:
            batches = read()
            if _TimedSource.first_value_at is None and any(b.values for b in batches):
                _TimedSource.first_value_at = time.perf_counter()
            return batches

        part.next_batch = next_batch  # type: ignore[method-assign]
        return part


def _source(settings: FlowSettings, topic: str, extra: dict[str, object] | None = None) -> Any:
    log_times = settings.log_times()
    return _TimedSource(
        settings.kafka_bootstrap_servers,
        topic,
        tail=False,
        batch_size=settings.batch_size,
        extra_config=extra,
        log_times=log_times,
        reader=settings.kafka_reader,
    )


def _kcat(bootstrap: str, topic: str, extra: dict[str, object] | None) -> tuple[float, float]:
    """Read ``topic`` from the beginning to its end with ``kcat`` into /dev/null; (seconds, child CPU seconds)."""
    config = {"fetch.max.bytes": 52_428_800, "max.partition.fetch.bytes": MAX_PARTITION_FETCH_BYTES, **(extra or {})}
    cmd = ["kcat", "-C", "-b", bootstrap, "-t", topic, "-o", "beginning", "-e", "-q", "-f", "%o\\n"]
    for key, value in config.items():
        cmd += ["-X", f"{key}={value}"]
    before = os.times()
    start = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, check=True)  # noqa: S603 -- our own fixed command
    elapsed = time.perf_counter() - start
    after = os.times()
    return elapsed, (after.children_user - before.children_user) + (after.children_system - before.children_system)


def run_once(
    stack: LocalStack,
    topic: str,
    mode: str,
    extra: dict[str, object] | None = None,
    batch_size: int | None = None,
    flow_mode: str = "backfill",
    reader: str = "native",
) -> tuple[float, float, float, float, dict[str, int]]:
    """One pass over the whole topic (``extra``: more consumer settings, ``batch_size``: messages per consume
    instead of ``FLOW_BATCH_SIZE``, ``flow_mode``: ``FLOW_MODE``, live reading log times); returns (seconds,
    cpu seconds, the worker thread's cpu seconds, seconds until the first value, counts)."""
    if mode == "kcat (C)":
        elapsed, cpu_s = _kcat(stack.bootstrap, topic, extra)
        return elapsed, cpu_s, float("nan"), float("nan"), {}
    overrides: dict[str, object] = {"kafka_reader": reader}
    if batch_size is not None:
        overrides["batch_size"] = batch_size
    settings = stack.flow_settings(mode=flow_mode, **overrides)
    tune_gc(settings)
    counts: dict[str, int] = {}
    if mode == "source only":
        counter = Counter()
        flow = _source_only(settings, topic, counter, extra)
    elif mode == "flow, no sinks":
        finals, lives, dead, latest = Counter(), Counter(), Counter(), Counter()
        flow = build_flow(
            _source(settings, topic, extra),
            final_sink=finals,
            live_sink=lives,
            dead_letter_sink=dead,
            latest_sink=latest,
            settings=settings,
        )
    else:
        flow = build_flow(
            _source(settings, topic, extra),
            final_sink=sinks.final_bar_sink(settings),
            live_sink=sinks.live_bar_sink(settings),
            dead_letter_sink=sinks.dead_letter_sink(settings),
            latest_sink=sinks.latest_tick_sink(settings),
            settings=settings,
        )
    before = _sink_seconds()
    _TimedSource.first_value_at = None
    start, cpu, own = time.perf_counter(), time.process_time(), time.thread_time()
    run_main(flow)  # type: ignore[no-untyped-call]  # the worker runs on this thread
    elapsed, cpu_s, own_s = time.perf_counter() - start, time.process_time() - cpu, time.thread_time() - own
    spent = {sink: round(s - before.get(sink, 0.0), 3) for sink, s in _sink_seconds().items()}
    if mode == "source only":
        counts["values"] = counter.n
    elif mode == "flow, no sinks":
        counts.update(final=finals.n, live=lives.n, dead=dead.n)
    else:  # wall seconds inside each sink's write_batch (flow_sink_write_seconds), the flow thread waits on them
        counts["sink seconds"] = {sink: s for sink, s in spent.items() if s}  # type: ignore[assignment]
    first = (_TimedSource.first_value_at or start) - start
    return elapsed, cpu_s, own_s, first, counts


def _sink_seconds() -> dict[str, float]:
    """``flow_sink_write_seconds_sum`` per sink so far in this process."""
    from prometheus_client import REGISTRY

    return {
        sample.labels["sink"]: sample.value
        for metric in REGISTRY.collect()
        if metric.name == "flow_sink_write_seconds"
        for sample in metric.samples
        if sample.name.endswith("_sum")
    }


def _stored_bars(database_url: str) -> int:
    import psycopg

    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) FROM market_bars").fetchone()
    return int(row[0]) if row else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=2_000_000)
    parser.add_argument("--tickers", type=int, default=100)
    parser.add_argument("--rate", type=float, default=10.0, help="event-time ticks/s per ticker")
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument(
        "--consumer",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="librdkafka consumer setting for a second pass of every row in the same run (repeatable)",
    )
    parser.add_argument("--modes", default="kcat,source,flow,sinks", help=f"comma-separated, some of {list(MODES)}")
    parser.add_argument(
        "--batch-sizes",
        default="",
        help="comma-separated messages per consume() to run every row with, alternated (default: FLOW_BATCH_SIZE)",
    )
    parser.add_argument(
        "--readers",
        default="native",
        help="comma-separated FLOW_KAFKA_READER values to run every row with, alternated (native, confluent)",
    )
    parser.add_argument(
        "--flow-modes",
        default="backfill",
        help="comma-separated FLOW_MODE values to run every row with, alternated (live: the source reads log times)",
    )
    args = parser.parse_args()
    readers = [r.strip() for r in args.readers.split(",") if r.strip()]
    flow_modes = [m.strip() for m in args.flow_modes.split(",") if m.strip()]
    sizes: list[int | None] = [int(b) for b in args.batch_sizes.split(",") if b] or [None]
    extra: dict[str, object] = dict(item.split("=", 1) for item in args.consumer)
    variants: list[tuple[str, dict[str, object] | None]] = [("", None)] + ([(" *", extra)] if extra else [])
    modes = [MODES[m.strip()] for m in args.modes.split(",")]
    values, keys = make_keyed_values(args.ticks, Scenario(args.tickers, args.rate, live=True))
    with local_stack(args.partitions) as stack:
        topic = f"bench-ticks-{uuid.uuid4().hex[:8]}"
        create_topics(stack.bootstrap, [topic], args.partitions)
        produced = produce_backlog(stack.bootstrap, topic, values, keys)
        del values, keys
        print(
            f"bars flow from a local Kafka backlog: {args.ticks:,} ticks, {args.tickers:,} tickers x {args.rate} "
            f"ticks/s (event time), {args.partitions} partitions, 1 process x 1 worker, batches of "
            f"{', '.join(f'{b:,}' for b in sizes if b) or f'{FlowSettings().batch_size:,}'}; "
            f"backlog produced at {produced:,.0f} msgs/s"
        )
        print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
        if extra:
            print(f"rows marked * read with the consumer settings {extra}")
        columns = f"{'seconds':>8} {'ticks/s':>12} {'start s':>7} {'steady/s':>10} {'ticks/cpu-s':>12}"
        columns += f" {'host busy':>9} {'worker busy':>11} {'peak +MB':>8}"
        print(f"{'run':<27} {columns}  counts")
        for mode in modes:
            for (mark, config), size, flow_mode, reader in itertools.product(variants, sizes, flow_modes, readers):
                if mode == "kcat (C)" and (flow_mode != flow_modes[0] or reader != readers[0]):
                    continue
                busy, rss = host_busy_seconds(), reset_peak_rss()
                elapsed, cpu, own, first, counts = run_once(stack, topic, mode, config, size, flow_mode, reader)
                busy = (host_busy_seconds() - busy) / elapsed
                growth = peak_rss_mb() - rss if mode != "kcat (C)" else 0.0
                if mode == "flow + sinks":
                    counts["rows in market_bars"] = _stored_bars(stack.database_url)
                label = mode + mark + (f" /{size // 1000}k" if size else "")
                label += f" {flow_mode}" if len(flow_modes) > 1 and mode != "kcat (C)" else ""
                label += f" [{reader}]" if len(readers) > 1 and mode != "kcat (C)" else ""
                print(
                    f"{label:<27} {elapsed:>8.2f} {args.ticks / elapsed:>12,.0f} {first:>7.2f} "
                    f"{args.ticks / (elapsed - first):>10,.0f} {args.ticks / cpu:>12,.0f} "
                    f"{busy:>9.2f} {own / elapsed:>11.2f} {growth:>8.0f}  {counts}",
                    flush=True,
                )
        print(f"load average after: {os.getloadavg()[0]:.2f} (target: >= 500,000 ticks/s into the sinks)")


if __name__ == "__main__":
    main()
