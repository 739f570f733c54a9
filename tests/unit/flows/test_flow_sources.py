"""The Kafka source's consumer configuration and batch handling (no broker: the reader is a stub)."""

from __future__ import annotations

from typing import Any

import pytest

import flows.sources as sources
from flows.kafka_readers import Read


class _Reader:
    """A partition reader that records what it was asked and returns prepared reads."""

    configs: list[dict[str, Any]] = []
    kinds: list[str] = []
    #: the calls made on readers, in order
    calls: list[str] = []
    #: what successive ``read`` calls return: a number of records (0: nothing came) or a whole Read
    polls: list[int | Read] = []
    #: the high watermark ``watermarks`` reports (None: unknown)
    high: int | None = None

    def __init__(self, kind: str, config: dict[str, Any], topic: str, partition: int) -> None:
        _Reader.kinds.append(kind)
        _Reader.configs.append(config)
        self.next = 0

    def fetch_metadata(self, timeout_s: float) -> None:
        _Reader.calls.append("fetch_metadata")

    def assign(self, offset: int) -> None:
        _Reader.calls.append(f"assign {offset}")
        self.next = max(offset, 0)

    def read(self, max_messages: int, timeout_s: float, stamps: bool = False) -> Read | None:
        poll = _Reader.polls.pop(0)
        if not isinstance(poll, int):
            return poll
        if poll == 0:
            return None
        offsets = list(range(self.next, self.next + poll))
        self.next += poll
        return offsets, [b"{}"] * poll, None, False, []

    def watermarks(self) -> tuple[int, int] | None:
        return None if _Reader.high is None else (0, _Reader.high)

    def close(self) -> None:
        _Reader.calls.append("close")


@pytest.fixture(autouse=True)
def stub_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    _Reader.configs, _Reader.kinds, _Reader.calls, _Reader.polls, _Reader.high = [], [], [], [], None
    monkeypatch.setattr(sources, "open_reader", _Reader)


@pytest.mark.parametrize(("kwargs", "group"), [({}, "bytewax-managed-offsets"), ({"group_id": "e2e-1"}, "e2e-1")])
def test_source_uses_the_configured_group_id(kwargs: dict[str, Any], group: str) -> None:
    sources.RawKafkaSource("localhost:1", "market-ticks", **kwargs).build_part("in", "market-ticks#0", None)
    assert _Reader.configs[0]["group.id"] == group
    assert _Reader.configs[0]["enable.auto.commit"] is False


def test_source_reads_natively_unless_told_otherwise() -> None:
    sources.RawKafkaSource("localhost:1", "market-ticks").build_part("in", "market-ticks#0", None)
    sources.RawKafkaSource("localhost:1", "market-ticks", reader="confluent").build_part("in", "market-ticks#1", None)
    assert _Reader.kinds == ["native", "confluent"]


def test_source_learns_the_leader_before_assigning_and_resumes_a_deleted_offset_at_the_oldest_record() -> None:
    sources.RawKafkaSource("localhost:1", "market-ticks").build_part("in", "market-ticks#0", 42)
    # assigned first, a partition waits 500 ms for librdkafka's leader retry timer before its first fetch
    assert _Reader.calls == ["fetch_metadata", "assign 42"]
    assert _Reader.configs[0]["auto.offset.reset"] == "earliest"  # librdkafka's default jumps to the end


def test_flow_settings_read_the_consumer_group_and_the_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from flows.settings import FlowSettings

    monkeypatch.setenv("FLOW_CONSUMER_GROUP", "bars-test")
    monkeypatch.setenv("FLOW_KAFKA_READER", "confluent")
    assert FlowSettings().consumer_group == "bars-test"
    assert FlowSettings().kafka_reader == "confluent"
    monkeypatch.setenv("FLOW_KAFKA_READER", "java")
    with pytest.raises(ValidationError, match="kafka_reader"):
        FlowSettings()


def test_source_fetches_large_batches_per_partition_unless_overridden() -> None:
    sources.RawKafkaSource("localhost:1", "market-ticks").build_part("in", "market-ticks#0", None)
    extra = {"max.partition.fetch.bytes": 65_536}
    sources.RawKafkaSource("localhost:1", "market-ticks", extra_config=extra).build_part("in", "market-ticks#1", None)
    assert _Reader.configs[0]["max.partition.fetch.bytes"] == sources.MAX_PARTITION_FETCH_BYTES > 1024 * 1024
    assert _Reader.configs[1]["max.partition.fetch.bytes"] == 65_536


def test_source_fetches_the_size_it_is_given_without_stalling_a_full_queue() -> None:
    sources.RawKafkaSource("localhost:1", "market-ticks", fetch_bytes=4 << 20).build_part("in", "market-ticks#0", None)
    sources.RawKafkaSource("localhost:1", "market-ticks").build_part("in", "market-ticks#0", None)
    assert _Reader.configs[0]["max.partition.fetch.bytes"] == 4 << 20
    # librdkafka's default backoff (1 s) once the prefetch queue is full stalled a backlog read at 4 MiB fetches
    assert _Reader.configs[0]["fetch.queue.backoff.ms"] == sources.FETCH_QUEUE_BACKOFF_MS <= 10
    assert "fetch.queue.backoff.ms" not in _Reader.configs[1]  # 16 MiB: librdkafka's default, less memory


def test_heap_is_trimmed_once_when_a_partition_catches_up(monkeypatch: pytest.MonkeyPatch) -> None:
    trims: list[int] = []
    monkeypatch.setattr(sources, "release_free_memory", lambda: trims.append(1) or True)
    monkeypatch.setattr(sources, "TRIM_AFTER_VALUES", 5)
    part = sources.RawKafkaSource("localhost:1", "market-ticks").build_part("in", "market-ticks#0", None)
    _Reader.polls = [3, 0, 3, 0, 0, 4, 0, 0]
    done = []
    for _ in range(len(_Reader.polls)):
        part.next_batch()
        done.append(len(trims))
    # 3 values: under the threshold at the first empty poll; 6 by the second: one trim, then not again until
    # another 5 were read; 4 more are not enough
    assert done == [0, 0, 0, 1, 1, 1, 1, 1]
    assert part.snapshot() == 10


def test_consumer_lag_is_the_distance_to_the_high_watermark_on_every_read() -> None:
    from flows.observe import CONSUMER_LAG

    part = sources.RawKafkaSource("localhost:1", "lag-topic").build_part("in", "lag-topic#0", None)
    lag = CONSUMER_LAG.labels("lag-topic", "0")
    _Reader.high, _Reader.polls = 100, [30, 0]
    part.next_batch()
    assert lag._value.get() == 70
    _Reader.high = 130  # more arrived while nothing was read: the idle poll updates the gauge too
    part.next_batch()
    assert lag._value.get() == 100


def test_error_records_are_logged_and_a_fatal_one_stops_the_flow(caplog: pytest.LogCaptureFixture) -> None:
    from common.errors import SourceError

    part = sources.RawKafkaSource("localhost:1", "market-ticks").build_part("in", "market-ticks#0", None)
    _Reader.polls = [
        ([0, 1], [b"a", b"b"], None, False, [("_TRANSPORT: broker gone", False)]),
        ([2], [b"c"], None, True, []),
    ]
    first = part.next_batch()
    assert [b.values for b in first] == [[b"a", b"b"]]
    assert "broker gone" in caplog.text
    # the end of the partition (a bounded read): this batch is delivered, the next call ends the partition
    assert [b.values for b in part.next_batch()] == [[b"c"]]
    with pytest.raises(StopIteration):
        part.next_batch()
    part2 = sources.RawKafkaSource("localhost:1", "market-ticks").build_part("in", "market-ticks#1", None)
    _Reader.polls = [([], [], None, False, [("_FATAL: fenced", True)])]
    with pytest.raises(SourceError, match="fenced"):
        part2.next_batch()
