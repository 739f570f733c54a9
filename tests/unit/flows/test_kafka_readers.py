"""The partition readers without a broker: confluent-kafka's behind a stub, the native one's argument checks."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import KafkaError, Message
from kafkaread import PartitionReader

import flows.kafka_readers as readers


class _Consumer:
    #: whether Python's collector was enabled during each ``consume`` call
    collecting: list[bool] = []
    #: what ``consume`` returns next, or raises
    batch: list[Message] | Exception = []

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    def consume(self, num_messages: int, timeout: float) -> list[Message]:
        _Consumer.collecting.append(gc.isenabled())
        if isinstance(_Consumer.batch, Exception):
            raise _Consumer.batch
        return _Consumer.batch


@pytest.fixture
def confluent(monkeypatch: pytest.MonkeyPatch) -> readers.ConfluentReader:
    monkeypatch.setattr(readers, "Consumer", _Consumer)
    _Consumer.collecting, _Consumer.batch = [], []
    return readers.ConfluentReader({}, "market-ticks", 0)


@pytest.fixture
def low_gc_threshold() -> Iterator[None]:
    """A generation-0 threshold of 100: a batch of thousands of messages would trigger collections."""
    old = gc.get_threshold()
    gc.set_threshold(100, old[1], old[2])
    try:
        yield
    finally:
        gc.set_threshold(*old)


@pytest.mark.usefixtures("low_gc_threshold")
def test_confluent_read_triggers_no_garbage_collection_and_leaves_the_collector_on(
    confluent: readers.ConfluentReader,
) -> None:
    collections: list[int] = []

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collections.append(info["generation"])

    gc.callbacks.append(count)
    try:
        # made inside consume() in real life (in C, under the paused collector); here before it is called
        _Consumer.batch = [Message(topic="market-ticks", partition=0, offset=i, value=b"{}") for i in range(5_000)]
        gc.collect()  # those 5,000 out of generation 0 (collections is empty until the read)
        collections.clear()
        read = confluent.read(5_000, 0.01, stamps=True)
    finally:
        gc.callbacks.remove(count)
        _Consumer.batch = []
    # the collector walked 5,000 tracked Message objects ~50 times per batch at this threshold
    assert collections == []
    assert gc.isenabled()
    assert _Consumer.collecting == [False]
    assert read is not None
    offsets, values, stamps, eof, errors = read
    assert offsets == list(range(5_000))
    assert values == [b"{}"] * 5_000
    assert stamps is not None
    assert len(stamps) == 5_000
    assert (eof, errors) == (False, [])


def test_confluent_read_leaves_the_collector_as_it_found_it_when_consume_fails(
    confluent: readers.ConfluentReader,
) -> None:
    _Consumer.batch = RuntimeError("broker gone")
    try:
        with pytest.raises(RuntimeError, match="broker gone"):
            confluent.read(10, 0.01)
        assert gc.isenabled()
        gc.disable()  # a caller that runs without the collector keeps it off
        with pytest.raises(RuntimeError, match="broker gone"):
            confluent.read(10, 0.01)
        assert not gc.isenabled()
    finally:
        gc.enable()
    assert _Consumer.collecting == [False, False]


def test_confluent_read_stops_at_the_end_of_the_partition_and_reports_errors(
    confluent: readers.ConfluentReader,
) -> None:
    def msg(offset: int, error: KafkaError | None = None) -> Message:
        return Message(topic="market-ticks", partition=0, offset=offset, value=b"v%d" % offset, error=error)

    _Consumer.batch = [
        msg(0),
        msg(-1, KafkaError(KafkaError._TRANSPORT, "broker gone")),
        msg(1),
        msg(2, KafkaError(KafkaError._PARTITION_EOF)),
    ]
    transport = str(KafkaError(KafkaError._TRANSPORT, "broker gone"))
    # the transient error is reported, not raised; the records after it are kept; the end marker ends the read
    assert confluent.read(10, 0.01) == ([0, 1], [b"v0", b"v1"], None, True, [(transport, False)])
    _Consumer.batch = []
    assert confluent.read(10, 0.01) is None


def test_a_fatal_error_record_is_reported_fatal(confluent: readers.ConfluentReader) -> None:
    # confluent-kafka's KafkaError of a consumer record never says fatal() itself: the code does
    fatal = Message(topic="market-ticks", partition=0, offset=-1, error=KafkaError(KafkaError._FATAL, "fenced"))
    _Consumer.batch = [fatal]
    read = confluent.read(10, 0.01)
    assert read is not None
    assert [flag for _, flag in read[4]] == [True]


def test_librdkafka_strings_spells_booleans_as_librdkafka_does_and_refuses_callbacks() -> None:
    assert readers.librdkafka_strings({"enable.auto.commit": False, "fetch.wait.max.ms": 50, "a": "b", "x": None}) == {
        "enable.auto.commit": "false",
        "fetch.wait.max.ms": "50",
        "a": "b",
    }
    with pytest.raises(ValueError, match="stats_cb"):
        readers.librdkafka_strings({"stats_cb": print})


def test_open_reader_names_an_unknown_kind() -> None:
    with pytest.raises(ValueError, match="'java'"):
        readers.open_reader("java", {}, "t", 0)  # type: ignore[arg-type]


def test_native_reader_names_a_setting_librdkafka_rejects() -> None:
    with pytest.raises(ValueError, match="fetch.wait.max.ms=soon"):
        PartitionReader({"fetch.wait.max.ms": "soon"}, "t", 0)
    with pytest.raises(ValueError, match="no.such.setting"):
        PartitionReader({"no.such.setting": "1"}, "t", 0)


def test_native_reader_requires_a_group_id() -> None:
    # without one librdkafka has no consumer queue: reading (or freeing) it would crash the process
    with pytest.raises(ValueError, match=r"group\.id"):
        PartitionReader({"bootstrap.servers": "127.0.0.1:1"}, "t", 0)
    with pytest.raises(ValueError, match="NUL"):
        PartitionReader({"group.id": "g"}, "t\x00", 0)


def test_native_reader_checks_its_arguments_and_refuses_to_read_once_closed() -> None:
    reader = PartitionReader({"bootstrap.servers": "127.0.0.1:1", "group.id": "unit", "log_level": "0"}, "t", 0)
    with pytest.raises(ValueError, match="max_messages"):
        reader.read(0, 0.0)
    with pytest.raises(ValueError, match="timeout"):
        reader.read(10, -1.0)
    with pytest.raises(ValueError, match="timeout"):
        reader.read(10, float("nan"))
    assert reader.watermarks() is None  # nothing fetched yet
    reader.close()
    reader.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        reader.read(10, 0.0)
    with pytest.raises(RuntimeError, match="closed"):
        reader.assign(0)
    # one never closed (a flow that failed) is freed when dropped: no crash, no consumer close to wait for
    dropped = PartitionReader({"bootstrap.servers": "127.0.0.1:1", "group.id": "unit", "log_level": "0"}, "t", 0)
    dropped.assign(0)
    del dropped
    gc.collect()
