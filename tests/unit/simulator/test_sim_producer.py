"""``simulator.producer``: a tick the producer refuses for good stops the run with a clear error."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError

from common.errors import SinkError
from simulator.metrics import SimulatorMetrics
from simulator.producer import TickProducer
from simulator.settings import SimulatorSettings


class RefusingProducer:
    """``produce_batch`` as librdkafka reports per-record refusals: an ``_error`` on each refused record."""

    def __init__(self, errors: dict[int, int]) -> None:
        self.errors = errors  # record index -> error code

    def produce_batch(self, topic: str, records: list[dict[str, Any]], on_delivery: Any) -> int:
        for i, code in self.errors.items():
            records[i]["_error"] = KafkaError(code)
        return len(records) - len(self.errors)

    def poll(self, timeout: float) -> int:
        return 0


def test_a_permanent_refusal_names_the_topic_the_ticker_and_the_count() -> None:
    producer = TickProducer(SimulatorSettings(kafka_bootstrap_servers="127.0.0.1:1"), ["A"], SimulatorMetrics())
    producer._producer = RefusingProducer(  # type: ignore[assignment]
        {1: KafkaError._QUEUE_FULL, 2: KafkaError.MSG_SIZE_TOO_LARGE, 3: KafkaError.MSG_SIZE_TOO_LARGE}
    )
    part = [{"key": k.encode(), "value": b"{}"} for k in ("A", "B", "C", "D")]
    with pytest.raises(SinkError, match=r"2 ticks refused by the producer for topic '.+' \(the first for ticker 'C'\)"):
        producer._produce_part(part)


def test_a_full_queue_hands_the_refused_records_back_in_order() -> None:
    producer = TickProducer(SimulatorSettings(kafka_bootstrap_servers="127.0.0.1:1"), ["A"], SimulatorMetrics())
    producer._producer = RefusingProducer({2: KafkaError._QUEUE_FULL, 3: KafkaError._QUEUE_FULL})  # type: ignore[assignment]
    part = [{"key": k.encode(), "value": b"{}"} for k in ("A", "B", "C", "D")]
    assert [m["key"] for m in producer._produce_part(part)] == [b"C", b"D"]
    assert all("_error" not in m for m in part)
