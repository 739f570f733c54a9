"""``RawKafkaSource`` with log times against real Kafka: each value's log time, the idle clock, the snapshot."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from bytewax.inputs import StatefulSourcePartition
from prometheus_client import REGISTRY

from common.clock import now_ms
from flows.decode import RawBatch
from flows.logclock import LogTimes
from flows.sources import RawKafkaSource
from stack.services import TICKS_TOPIC_CONFIG
from tests.support import produce

pytestmark = pytest.mark.integration


Part = StatefulSourcePartition[RawBatch, Any]


def read_values(part: Part, want: int, timeout_s: float = 30) -> list[RawBatch]:
    """The partition's batches (clock-only ones included) until ``want`` values were read."""
    batches: list[RawBatch] = []
    deadline = time.monotonic() + timeout_s
    while sum(len(b.values) for b in batches) < want:
        assert time.monotonic() < deadline, f"read {sum(len(b.values) for b in batches)} of {want} values"
        batches += part.next_batch()
    return batches


def read(
    source: RawKafkaSource, topic: str, state: object, want: int, timeout_s: float = 30
) -> tuple[list[RawBatch], object]:
    """Batches from partition 0 until ``want`` values were read; returns them and the partition's snapshot."""
    part = source.build_part("in", f"{topic}#0", state)  # type: ignore[arg-type]
    try:
        return read_values(part, want, timeout_s), part.snapshot()
    finally:
        part.close()


def test_values_carry_their_partitions_log_time_and_an_idle_partitions_clock_runs_on(
    kafka_bootstrap: str, make_topic: Callable[..., str]
) -> None:
    topic = make_topic(partitions=1)
    base = now_ms() - 600_000
    stamps = [base, base - 100, base + 500, now_ms() + 86_400_000, base + 400]  # 4th: a producer clock a day ahead
    produce(kafka_bootstrap, topic, [("K", f"v{i}".encode(), stamp) for i, stamp in enumerate(stamps)])
    source = RawKafkaSource(kafka_bootstrap, topic, log_times=LogTimes(idle_close_ms=200, max_future_ms=60_000))

    part = source.build_part("in", f"{topic}#0", None)
    try:
        batches = read_values(part, len(stamps))
        read_at = now_ms()
        times = [t for b in batches for t in b.log_times.tolist()]
        assert times == [base, base, base + 500, base + 500, base + 500]  # running max; the day-ahead one ignored
        assert batches[-1].log_end == base + 500
        assert part.snapshot() == (len(stamps), base + 500)

        # caught up and idle: the clock runs on at wall speed from the last read, idle_close_ms behind
        idle: list[RawBatch] = []
        deadline = time.monotonic() + 10
        while len(idle) < 2 and time.monotonic() < deadline:
            idle += [b for b in part.next_batch() if not b.values]
        assert len(idle) == 2, "an idle, caught-up partition emits clock-only batches"
        first, second = (b.log_end for b in idle)
        assert first is not None
        assert second is not None
        assert base + 500 < first < second <= base + 500 + (now_ms() - read_at)
        assert part.snapshot() == (len(stamps), second)
        snapshot = part.snapshot()
    finally:
        part.close()

    # resumed from the snapshot: the clock goes on from there (a later record's older stamp does not lower it)
    produce(kafka_bootstrap, topic, [("K", b"v5", base + 450)])
    batches, state = read(source, topic, snapshot, 1)
    values = [b for b in batches if b.values]
    assert values[0].log_times.tolist() == [second]
    assert state[0] == len(stamps) + 1  # type: ignore[index]


def test_without_log_times_the_snapshot_is_the_offset_and_a_log_snapshot_still_resumes(
    kafka_bootstrap: str, make_topic: Callable[..., str]
) -> None:
    topic = make_topic(partitions=1)
    produce(kafka_bootstrap, topic, [("K", f"v{i}".encode()) for i in range(3)])
    plain = RawKafkaSource(kafka_bootstrap, topic)
    batches, state = read(plain, topic, None, 3)
    assert state == 3
    assert all(b.log_times is None for b in batches)
    produce(kafka_bootstrap, topic, [("K", b"v3")])
    batches, state = read(plain, topic, (3, 12_345), 1)  # a snapshot written with log times
    assert [v for b in batches for v in b.values] == [b"v3"]
    assert state == 4


def idle_clock_after(part: Part, seconds: float) -> int | None:
    """The newest clock-only batch's log time within ``seconds`` of reading (None: the clock did not move)."""
    end: int | None = None
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for batch in part.next_batch():
            if not batch.values:
                end = batch.log_end
    return end


@pytest.mark.parametrize("append_time", [True, False], ids=["LogAppendTime", "CreateTime"])
def test_an_idle_partitions_margin_follows_its_timestamp_type(
    kafka_bootstrap: str, make_topic: Callable[..., str], append_time: bool
) -> None:
    """Broker append times are readable at once (small margin); producer stamps may lag by linger (large one)."""
    config = TICKS_TOPIC_CONFIG if append_time else None
    topic = make_topic(partitions=1, config=config)
    stamp = now_ms() - 3_600_000  # a producer stamp an hour old: the broker replaces it with its append time
    before = now_ms()
    produce(kafka_bootstrap, topic, [("K", b"v0", stamp)])
    margins = LogTimes(idle_close_ms=600_000, max_future_ms=60_000, idle_close_append_ms=100)
    source = RawKafkaSource(kafka_bootstrap, topic, log_times=margins)
    part = source.build_part("in", f"{topic}#0", None)
    try:
        batches = read_values(part, 1)
        read_at = now_ms()
        logged = [b for b in batches if b.values][0].log_times.tolist()[0]
        end = idle_clock_after(part, 1.0)
        if append_time:
            assert before <= logged <= read_at  # the broker's append time, not the producer's stamp
            assert end is not None, "an idle append-time partition's clock runs on, 100 ms behind"
            assert logged < end <= now_ms() - 100
            assert end >= logged + 1_000 - 100 - 250  # a second of idling from the record, less margin and slack
        else:
            assert logged == stamp
            assert end is None, "a create-time partition keeps its 10-minute margin"
    finally:
        part.close()


def test_a_record_stamped_behind_an_advanced_idle_clock_is_counted(
    kafka_bootstrap: str, make_topic: Callable[..., str]
) -> None:
    """The one way a replay can judge a tick differently (delivered later than the margin) is made visible."""
    topic = make_topic(partitions=1)
    produce(kafka_bootstrap, topic, [("K", b"v0", now_ms())])
    source = RawKafkaSource(kafka_bootstrap, topic, log_times=LogTimes(idle_close_ms=100, max_future_ms=60_000))
    labels = {"topic": topic, "partition": "0"}
    part = source.build_part("in", f"{topic}#0", None)
    try:
        read_values(part, 1)

        def read_one(value: bytes, stamp: int) -> int:
            """Produce ``value`` stamped ``stamp`` once the idle clock moved; its log time when read."""
            assert idle_clock_after(part, 0.5) is not None
            produce(kafka_bootstrap, topic, [("K", value, stamp)])
            return int(next(b for b in read_values(part, 1) if b.values).log_times[0])

        assert REGISTRY.get_sample_value("flow_idle_clock_overrun_total", labels) == 0  # exported from the start
        read_one(b"on time", now_ms())
        assert REGISTRY.get_sample_value("flow_idle_clock_overrun_total", labels) == 0
        clock = part.snapshot()[1]  # type: ignore[index]
        logged = read_one(b"stale", now_ms() - 5_000)
        assert REGISTRY.get_sample_value("flow_idle_clock_overrun_total", labels) == 1
        assert logged >= clock  # judged at the idle clock, which never goes back
    finally:
        part.close()
