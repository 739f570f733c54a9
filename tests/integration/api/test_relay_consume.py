"""The relay's consume step against the real broker: queued messages are taken at once, not after a timeout."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition

from api.relay import _next_messages
from tests.support import produce

pytestmark = pytest.mark.integration


@pytest.fixture
def reading(kafka_bootstrap: str, make_topic: Callable[..., str]) -> Iterator[Callable[[list[bytes]], Consumer]]:
    """``reading(values)``: a consumer assigned from the start of a new one-partition topic holding ``values``."""
    consumers: list[Consumer] = []

    def make(values: list[bytes]) -> Consumer:
        topic = make_topic(partitions=1)
        produce(kafka_bootstrap, topic, [(None, value) for value in values])
        consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": f"g-{uuid.uuid4().hex[:8]}"})
        consumers.append(consumer)
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        return consumer

    yield make
    for consumer in consumers:
        consumer.close()


def _drain(consumer: Consumer, want: int, batch: int, poll_s: float, limit_s: float) -> tuple[list[Message], float]:
    started = time.monotonic()
    got: list[Message] = []
    while len(got) < want and time.monotonic() - started < limit_s:
        got.extend(_next_messages(consumer, batch, poll_s))
    return got, time.monotonic() - started


def test_a_few_messages_come_back_without_waiting_for_a_full_batch(
    reading: Callable[[list[bytes]], Consumer],
) -> None:
    values = [b"a", b"b", b"c"]
    consumer = reading(values)
    # consume(2000, 20.0) would hold these three for the whole 20 s, waiting for 1,997 more
    got, elapsed = _drain(consumer, len(values), batch=2000, poll_s=20.0, limit_s=60.0)
    assert [m.value() for m in got] == values
    assert [m.offset() for m in got] == [0, 1, 2]
    assert elapsed < 10.0, f"took {elapsed:.1f} s: waited for a full batch or the poll timeout"


def test_coalescing_collects_what_follows_the_first_message_in_one_call(
    reading: Callable[[list[bytes]], Consumer],
) -> None:
    values = [b"a", b"b", b"c"]
    consumer = reading(values)
    started = time.monotonic()
    got = _next_messages(consumer, 2000, 20.0, coalesce_s=1.0)  # one call: the first, then 1 s for the rest
    elapsed = time.monotonic() - started
    assert [m.value() for m in got] == values
    assert 0.9 <= elapsed < 10.0, f"{elapsed:.1f} s: the coalescing wait is 1 s after the first message"


def test_batch_bounds_each_call_and_one_message_batches_work(reading: Callable[[list[bytes]], Consumer]) -> None:
    values = [b"%d" % i for i in range(5)]
    consumer = reading(values)
    first, _ = _drain(consumer, 1, batch=1, poll_s=5.0, limit_s=30.0)
    assert [m.value() for m in first] == [b"0"]
    rest: list[Message] = []
    while len(rest) < 4:
        more = _next_messages(consumer, 2, 5.0)
        assert 1 <= len(more) <= 2
        rest.extend(more)
    assert [m.value() for m in rest] == values[1:]


def test_an_idle_partition_returns_nothing_after_the_poll_wait(reading: Callable[[list[bytes]], Consumer]) -> None:
    consumer = reading([])
    started = time.monotonic()
    assert _next_messages(consumer, 100, 0.3) == []
    assert time.monotonic() - started >= 0.25  # it waited (in poll) instead of spinning
