"""``RawKafkaSource`` against real Kafka: where a partition starts reading when its snapshot's offset is gone."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient

from flows.decode import RawBatch
from flows.observe import SOURCE_OFFSET_GAP
from flows.sources import RawKafkaSource
from tests.support import produce

pytestmark = pytest.mark.integration


def _read(source: RawKafkaSource, topic: str, state: int | None, want: int) -> tuple[list[RawBatch], object]:
    part = source.build_part("in", f"{topic}#0", state)
    batches: list[RawBatch] = []
    deadline = time.monotonic() + 30
    try:
        while sum(len(b.values) for b in batches) < want:
            assert time.monotonic() < deadline, f"read {sum(len(b.values) for b in batches)} of {want} values"
            batches += part.next_batch()
        return batches, part.snapshot()
    finally:
        part.close()


def _gaps(topic: str) -> float:
    return SOURCE_OFFSET_GAP.labels(topic, "0")._value.get()  # noqa: SLF001 -- the counter's current value


def test_a_snapshot_offset_deleted_by_retention_resumes_at_the_oldest_kept_record_and_is_counted(
    kafka_bootstrap: str, make_topic: Callable[..., str]
) -> None:
    topic = make_topic(partitions=1)
    produce(kafka_bootstrap, topic, [("K", f"v{i}".encode()) for i in range(50)])
    # retention deletes offsets 0-29 while the flow is down; its snapshot says "next: 10"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    for future in admin.delete_records([TopicPartition(topic, 0, 30)]).values():
        future.result(timeout=30)
    source = RawKafkaSource(kafka_bootstrap, topic, tail=False)

    batches, snapshot = _read(source, topic, 10, 20)

    offsets = [o for b in batches for o in b.offsets]
    values = [v for b in batches for v in b.values]
    # librdkafka's default would jump to the partition's end and skip all 20 records that are still there
    assert offsets == list(range(30, 50))
    assert values == [f"v{i}".encode() for i in range(30, 50)]
    assert snapshot == 50
    assert _gaps(topic) == 20  # offsets 10-29: lost to retention before the flow read them


def test_reading_from_the_start_and_from_a_snapshot_skips_nothing_and_counts_no_gap(
    kafka_bootstrap: str, make_topic: Callable[..., str]
) -> None:
    topic = make_topic(partitions=1)
    produce(kafka_bootstrap, topic, [("K", f"v{i}".encode()) for i in range(30)])
    source = RawKafkaSource(kafka_bootstrap, topic, tail=False)

    first, snapshot = _read(source, topic, None, 30)
    again, _ = _read(source, topic, 12, 18)

    assert [o for b in first for o in b.offsets] == list(range(30))
    assert snapshot == 30
    assert [o for b in again for o in b.offsets] == list(range(12, 30))
    assert _gaps(topic) == 0
