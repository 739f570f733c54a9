"""The relay's consume step against the real broker: queued messages are taken at once, not after a timeout."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, Producer, TopicPartition

from api.relay import _next_messages

pytestmark = pytest.mark.integration


@pytest.fixture
def consumer(kafka_bootstrap: str) -> Iterator[Consumer]:
    c = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": f"g-{uuid.uuid4().hex[:8]}"})
    yield c
    c.close()


def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for value in values:
        producer.produce(topic, value, partition=0)
    assert producer.flush(10) == 0


def _drain(consumer: Consumer, want: int, batch: int, poll_s: float, limit_s: float) -> tuple[list[Message], float]:
    started = time.monotonic()
    got: list[Message] = []
    while len(got) < want and time.monotonic() - started < limit_s:
        got.extend(_next_messages(consumer, batch, poll_s))
    return got, time.monotonic() - started


def test_a_few_messages_come_back_without_waiting_for_a_full_batch(
    kafka_bootstrap: str, make_topic: Callable[..., str], consumer: Consumer
) -> None:
    topic = make_topic(partitions=1)
    values = [b"a", b"b", b"c"]
    _produce(kafka_bootstrap, topic, values)
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    # consume(2000, 20.0) would hold these three for the whole 20 s, waiting for 1,997 more
    got, elapsed = _drain(consumer, len(values), batch=2000, poll_s=20.0, limit_s=60.0)
    assert [m.value() for m in got] == values
    assert [m.offset() for m in got] == [0, 1, 2]
    assert elapsed < 10.0, f"took {elapsed:.1f} s: waited for a full batch or the poll timeout"


def test_coalescing_collects_what_follows_the_first_message_in_one_call(
    kafka_bootstrap: str, make_topic: Callable[..., str], consumer: Consumer
) -> None:
    topic = make_topic(partitions=1)
    values = [b"a", b"b", b"c"]
    _produce(kafka_bootstrap, topic, values)
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    started = time.monotonic()
    got = _next_messages(consumer, 2000, 20.0, coalesce_s=1.0)  # one call: the first, then 1 s for the rest
    elapsed = time.monotonic() - started
    assert [m.value() for m in got] == values
    assert 0.9 <= elapsed < 10.0, f"{elapsed:.1f} s: the coalescing wait is 1 s after the first message"


def test_batch_bounds_each_call_and_one_message_batches_work(
    kafka_bootstrap: str, make_topic: Callable[..., str], consumer: Consumer
) -> None:
    topic = make_topic(partitions=1)
    values = [b"%d" % i for i in range(5)]
    _produce(kafka_bootstrap, topic, values)
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    first, _ = _drain(consumer, 1, batch=1, poll_s=5.0, limit_s=30.0)
    assert [m.value() for m in first] == [b"0"]
    rest: list[Message] = []
    while len(rest) < 4:
        more = _next_messages(consumer, 2, 5.0)
        assert 1 <= len(more) <= 2
        rest.extend(more)
    assert [m.value() for m in rest] == values[1:]


def test_an_idle_partition_returns_nothing_after_the_poll_wait(
    make_topic: Callable[..., str], consumer: Consumer
) -> None:
    topic = make_topic(partitions=1)
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    started = time.monotonic()
    assert _next_messages(consumer, 100, 0.3) == []
    assert time.monotonic() - started >= 0.25  # it waited (in poll) instead of spinning
