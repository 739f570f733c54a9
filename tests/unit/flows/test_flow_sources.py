"""The Kafka source's consumer configuration (no broker: the consumer is a stub)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import Message

import flows.sources as sources


class _Consumer:
    configs: list[dict[str, Any]] = []
    #: what successive ``consume`` calls return: a number of messages (0: an empty poll)
    polls: list[int] = []
    #: the calls made on consumers, in order
    calls: list[str] = []
    #: whether Python's collector was enabled during each ``consume`` call
    collecting: list[bool] = []
    #: what ``consume`` raises instead of returning (None: nothing)
    fails: Exception | None = None

    def __init__(self, config: dict[str, Any]) -> None:
        _Consumer.configs.append(config)

    def list_topics(self, topic: str, timeout: float) -> None:
        _Consumer.calls.append(f"list_topics {topic}")

    def assign(self, parts: list[Any]) -> None:
        _Consumer.calls.append("assign")

    def consume(self, num_messages: int, timeout: float) -> list[Message]:
        _Consumer.collecting.append(gc.isenabled())
        if _Consumer.fails is not None:
            raise _Consumer.fails
        n = _Consumer.polls.pop(0)
        return [Message(topic="market-ticks", partition=0, offset=i, value=b"{}") for i in range(n)]


@pytest.mark.parametrize(("kwargs", "group"), [({}, "bytewax-managed-offsets"), ({"group_id": "e2e-1"}, "e2e-1")])
def test_source_uses_the_configured_group_id(
    monkeypatch: pytest.MonkeyPatch, kwargs: dict[str, Any], group: str
) -> None:
    _Consumer.configs = []
    monkeypatch.setattr(sources, "Consumer", _Consumer)
    sources.RawKafkaSource("localhost:1", "market-ticks", **kwargs).build_part("in", "market-ticks#0", None)
    assert _Consumer.configs[0]["group.id"] == group
    assert _Consumer.configs[0]["enable.auto.commit"] is False


def test_source_learns_the_leader_before_assigning_and_resumes_a_deleted_offset_at_the_oldest_record(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _Consumer.configs, _Consumer.calls = [], []
    monkeypatch.setattr(sources, "Consumer", _Consumer)
    sources.RawKafkaSource("localhost:1", "market-ticks").build_part("in", "market-ticks#0", 42)
    # assigned first, a partition waits 500 ms for librdkafka's leader retry timer before its first fetch
    assert _Consumer.calls == ["list_topics market-ticks", "assign"]
    assert _Consumer.configs[0]["auto.offset.reset"] == "earliest"  # librdkafka's default jumps to the end


def test_flow_settings_read_the_consumer_group(monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.settings import FlowSettings

    monkeypatch.setenv("FLOW_CONSUMER_GROUP", "bars-test")
    assert FlowSettings().consumer_group == "bars-test"


def test_source_fetches_large_batches_per_partition_unless_overridden(monkeypatch: pytest.MonkeyPatch) -> None:
    _Consumer.configs = []
    monkeypatch.setattr(sources, "Consumer", _Consumer)
    sources.RawKafkaSource("localhost:1", "market-ticks").build_part("in", "market-ticks#0", None)
    extra = {"max.partition.fetch.bytes": 65_536}
    sources.RawKafkaSource("localhost:1", "market-ticks", extra_config=extra).build_part("in", "market-ticks#1", None)
    assert _Consumer.configs[0]["max.partition.fetch.bytes"] == sources.MAX_PARTITION_FETCH_BYTES > 1024 * 1024
    assert _Consumer.configs[1]["max.partition.fetch.bytes"] == 65_536


def test_source_fetches_the_size_it_is_given_without_stalling_a_full_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    _Consumer.configs = []
    monkeypatch.setattr(sources, "Consumer", _Consumer)
    sources.RawKafkaSource("localhost:1", "market-ticks", fetch_bytes=4 << 20).build_part("in", "market-ticks#0", None)
    sources.RawKafkaSource("localhost:1", "market-ticks").build_part("in", "market-ticks#0", None)
    assert _Consumer.configs[0]["max.partition.fetch.bytes"] == 4 << 20
    # librdkafka's default backoff (1 s) once the prefetch queue is full stalled a backlog read at 4 MiB fetches
    assert _Consumer.configs[0]["fetch.queue.backoff.ms"] == sources.FETCH_QUEUE_BACKOFF_MS <= 10
    assert "fetch.queue.backoff.ms" not in _Consumer.configs[1]  # 16 MiB: librdkafka's default, less memory


def test_heap_is_trimmed_once_when_a_partition_catches_up(monkeypatch: pytest.MonkeyPatch) -> None:
    trims: list[int] = []
    monkeypatch.setattr(sources, "Consumer", _Consumer)
    monkeypatch.setattr(sources, "release_free_memory", lambda: trims.append(1) or True)
    monkeypatch.setattr(sources, "TRIM_AFTER_VALUES", 5)
    part = sources.RawKafkaSource("localhost:1", "market-ticks").build_part("in", "market-ticks#0", None)
    _Consumer.polls = [3, 0, 3, 0, 0, 4, 0, 0]
    done = []
    for _ in range(len(_Consumer.polls)):
        part.next_batch()
        done.append(len(trims))
    # 3 values: under the threshold at the first empty poll; 6 by the second: one trim, then not again until
    # another 5 were read; 4 more are not enough
    assert done == [0, 0, 0, 1, 1, 1, 1, 1]
    assert part.snapshot() == 4


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
def test_reading_a_batch_triggers_no_garbage_collection_and_leaves_the_collector_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sources, "Consumer", _Consumer)
    _Consumer.collecting, _Consumer.fails = [], None
    part = sources.RawKafkaSource("localhost:1", "market-ticks").build_part("in", "market-ticks#0", None)
    _Consumer.polls = [5_000, 5_000]
    collections: list[str] = []

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collections.append(f"gen{info['generation']}")

    gc.callbacks.append(count)
    try:
        first = part.next_batch()
    finally:
        gc.callbacks.remove(count)
    # the collector walked 5,000 tracked Message objects ~50 times per batch here (14 % of a backlog read)
    assert collections == []
    assert gc.isenabled()
    assert _Consumer.collecting == [False]
    assert first[0].offsets == list(range(5_000))
    assert first[0].values == [b"{}"] * 5_000


def test_a_failing_read_leaves_the_collector_as_it_found_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources, "Consumer", _Consumer)
    _Consumer.collecting, _Consumer.fails = [], RuntimeError("broker gone")
    part = sources.RawKafkaSource("localhost:1", "market-ticks").build_part("in", "market-ticks#0", None)
    try:
        with pytest.raises(RuntimeError, match="broker gone"):
            part.next_batch()
        assert gc.isenabled()
        gc.disable()  # a caller that runs without the collector keeps it off
        with pytest.raises(RuntimeError, match="broker gone"):
            part.next_batch()
        assert not gc.isenabled()
    finally:
        gc.enable()
        _Consumer.fails = None
    assert _Consumer.collecting == [False, False]
