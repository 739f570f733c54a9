"""``RawKafkaSource`` and its partition readers against real Kafka: where a partition starts reading when its
snapshot's offset is gone, and the native reader returning what confluent-kafka's returns, for every codec."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from confluent_kafka import Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from flows.decode import RawBatch
from flows.kafka_readers import Read, open_reader
from flows.observe import SOURCE_OFFSET_GAP
from flows.settings import ReaderKind
from flows.sources import RawKafkaSource
from tests.support import produce

pytestmark = pytest.mark.integration

READERS: list[ReaderKind] = ["native", "confluent"]


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


@pytest.mark.parametrize("reader", READERS)
def test_a_snapshot_offset_deleted_by_retention_resumes_at_the_oldest_kept_record_and_is_counted(
    kafka_bootstrap: str, make_topic: Callable[..., str], reader: ReaderKind
) -> None:
    topic = make_topic(partitions=1)
    produce(kafka_bootstrap, topic, [("K", f"v{i}".encode()) for i in range(50)])
    # retention deletes offsets 0-29 while the flow is down; its snapshot says "next: 10"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    for future in admin.delete_records([TopicPartition(topic, 0, 30)]).values():
        future.result(timeout=30)
    source = RawKafkaSource(kafka_bootstrap, topic, tail=False, reader=reader)

    batches, snapshot = _read(source, topic, 10, 20)

    offsets = [o for b in batches for o in b.offsets]
    values = [v for b in batches for v in b.values]
    # librdkafka's default would jump to the partition's end and skip all 20 records that are still there
    assert offsets == list(range(30, 50))
    assert values == [f"v{i}".encode() for i in range(30, 50)]
    assert snapshot == 50
    assert _gaps(topic) == 20  # offsets 10-29: lost to retention before the flow read them


@pytest.mark.parametrize("reader", READERS)
def test_reading_from_the_start_and_from_a_snapshot_skips_nothing_and_counts_no_gap(
    kafka_bootstrap: str, make_topic: Callable[..., str], reader: ReaderKind
) -> None:
    topic = make_topic(partitions=1)
    produce(kafka_bootstrap, topic, [("K", f"v{i}".encode()) for i in range(30)])
    source = RawKafkaSource(kafka_bootstrap, topic, tail=False, reader=reader)

    first, snapshot = _read(source, topic, None, 30)
    again, _ = _read(source, topic, 12, 18)

    assert [o for b in first for o in b.offsets] == list(range(30))
    assert snapshot == 30
    assert [o for b in again for o in b.offsets] == list(range(12, 30))
    assert _gaps(topic) == 0


def _read_all(kind: ReaderKind, bootstrap: str, topic: str, offset: int) -> Read:
    """Everything from ``offset`` to the end of partition 0, with timestamps, in reads of at most 7 records."""
    config = {"bootstrap.servers": bootstrap, "group.id": "readers-test", "enable.partition.eof": True}
    reader = open_reader(kind, config, topic, 0)
    offsets: list[int] = []
    values: list[bytes] = []
    stamps: list[tuple[int, int]] = []
    errors: list[tuple[str, bool]] = []
    deadline = time.monotonic() + 30
    try:
        reader.fetch_metadata(10.0)
        reader.assign(offset)
        while True:
            assert time.monotonic() < deadline, f"{kind}: no end of partition after {len(offsets)} records"
            read = reader.read(7, 0.05, stamps=True)
            if read is None:
                continue
            assert read[2] is not None
            offsets += read[0]
            values += read[1]
            stamps += read[2]
            errors += read[4]
            if read[3]:
                assert reader.watermarks() == (0, 203)
                return offsets, values, stamps, True, errors
    finally:
        reader.close()


@pytest.mark.parametrize("codec", ["lz4", "zstd", "snappy", "gzip"])
def test_the_native_reader_returns_what_confluent_kafka_returns(
    kafka_bootstrap: str, make_topic: Callable[..., str], codec: str
) -> None:
    # the broker stores the batches in ``codec`` whatever the producer sent: every codec our producers may choose
    topic = make_topic(partitions=1, config={"compression.type": codec})
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 5})
    sent: list[tuple[bytes | None, bytes | None, int]] = [
        (b"k%d" % i, b'{"i": %d, "pad": "%s"}' % (i, b"x" * (i % 40)), 1_700_000_000_000 + i) for i in range(200)
    ]
    sent += [(b"tombstone", None, 1_700_000_000_500), (None, b"", 1_700_000_000_501), (b"k", "é".encode(), 0)]
    for key, value, stamp in sent:
        producer.produce(topic, key=key, value=value, timestamp=stamp)
    assert producer.flush(30) == 0

    native = _read_all("native", kafka_bootstrap, topic, 3)
    confluent = _read_all("confluent", kafka_bootstrap, topic, 3)

    assert native == confluent
    offsets, values, stamps, _, errors = native
    assert stamps is not None
    assert offsets == list(range(3, 203))
    assert values[:197] == [v for _, v, _ in sent[3:200]]
    assert values[197:199] == [b"", b""]  # a null value reads as empty bytes, as the source always did
    assert [ms for _, ms in stamps[:198]] == [s for _, _, s in sent[3:201]]
    assert {kind for kind, _ in stamps} == {1}  # CreateTime
    assert errors == []


def test_both_readers_report_broker_time_stamps_and_error_records(
    kafka_bootstrap: str, make_topic: Callable[..., str]
) -> None:
    topic = make_topic(partitions=1, config={"message.timestamp.type": "LogAppendTime"})
    produce(kafka_bootstrap, topic, [("K", b"v%d" % i, 1_000) for i in range(203)])  # 1970: replaced by the broker
    native = _read_all("native", kafka_bootstrap, topic, 0)
    confluent = _read_all("confluent", kafka_bootstrap, topic, 0)
    assert native[:2] == confluent[:2]
    for _, _, stamps, _, _ in (native, confluent):
        assert stamps is not None
        assert {kind for kind, _ in stamps} == {2}  # LogAppendTime
        assert min(ms for _, ms in stamps) > 1_600_000_000_000

    # an offset past the end with auto.offset.reset=error: librdkafka hands the reader an error record
    for kind in READERS:
        config = {"bootstrap.servers": kafka_bootstrap, "group.id": "readers-test", "auto.offset.reset": "error"}
        reader = open_reader(kind, config, topic, 0)
        errors: list[tuple[str, bool]] = []
        deadline = time.monotonic() + 30
        try:
            reader.assign(10_000)
            while not errors:
                assert time.monotonic() < deadline, f"{kind}: no error record for an offset out of range"
                read = reader.read(10, 0.1)
                if read is not None:
                    assert read[0] == []
                    errors = read[4]
        finally:
            reader.close()
        assert len(errors) == 1
        text, fatal = errors[0]
        assert "_AUTO_OFFSET_RESET" in text
        assert "Offset out of range" in text
        assert fatal is False
