"""``simulator.topic_tail``: transient broker errors of the resume scan's metadata queries are retried."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from common.errors import SourceError
from simulator.topic_tail import _watermarks


class FlakyConsumer:
    """Raises the given errors from ``get_watermark_offsets``, one per call, then answers."""

    def __init__(self, *codes: int) -> None:
        self.codes = list(codes)
        self.calls = 0

    def get_watermark_offsets(self, where: Any, timeout: float) -> tuple[int, int]:
        self.calls += 1
        if self.codes:
            raise KafkaException(KafkaError(self.codes.pop(0)))
        return 3, 10


@pytest.mark.parametrize("code", [KafkaError.LEADER_NOT_AVAILABLE, KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN])
def test_a_broker_restart_is_waited_out(code: int) -> None:
    """librdkafka does not flag these ``retriable()``; taking them as fatal failed a resume after a restart."""
    consumer = FlakyConsumer(code)
    assert _watermarks(consumer, "market-ticks", 0, timeout_s=5) == (3, 10)  # type: ignore[arg-type]
    assert consumer.calls == 2


def test_a_refusal_fails_at_once_with_the_partition_named() -> None:
    consumer = FlakyConsumer(KafkaError.TOPIC_AUTHORIZATION_FAILED)
    with pytest.raises(SourceError, match="offsets of topic 'market-ticks' partition 0"):
        _watermarks(consumer, "market-ticks", 0, timeout_s=5)  # type: ignore[arg-type]
    assert consumer.calls == 1
