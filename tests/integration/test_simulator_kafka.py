"""The simulator produces to a real Kafka; an independent consumer reads every message back and checks it."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from common.clock import to_ms
from contracts.tick import decode_tick
from simulator.engine import TickEngine
from simulator.metrics import SimulatorMetrics
from simulator.producer import TickProducer
from simulator.session import Session
from simulator.settings import SimulatorSettings
from simulator.stream import stream
from simulator.universe import load_universe
from tests.support import read_topic

pytestmark = pytest.mark.integration


def test_backfill_round_trip_through_kafka(kafka_bootstrap: str, make_topic: Callable[..., str]) -> None:
    topic = make_topic(partitions=6)
    settings = SimulatorSettings(kafka_bootstrap_servers=kafka_bootstrap, metrics_port=0, connect_attempts=3)
    universe = load_universe("default")
    metrics = SimulatorMetrics()
    producer = TickProducer(settings, universe.symbols, metrics, topic=topic)
    producer.wait_for_broker()
    start = to_ms(datetime(2024, 1, 2, 14, 0, tzinfo=UTC))
    engine = TickEngine(universe, Session(), 5, start, tick_ms=100)
    sent = stream(
        engine, producer, metrics, threading.Event(), end_ms=start + 120_000, realtime=False, batch_ticks=7_000
    )
    assert producer.flush(60) == 0
    assert producer.failed == 0
    assert sent == 5 * 1200

    seqs: dict[str, list[int]] = defaultdict(list)
    got = 0
    for m in read_topic(kafka_bootstrap, topic):  # the whole topic: anything beyond ``sent`` is a duplicate
        tick = decode_tick(m.value())  # validates the contract's invariants
        assert m.key() == tick.ticker.encode()
        seqs[tick.ticker].append(tick.seq)
        got += 1
    assert got == sent
    assert set(seqs) == set(universe.symbols)
    for ticker, s in seqs.items():  # one ticker = one partition: in order, no gaps, no duplicates
        assert s == list(range(len(s))), ticker


def test_full_producer_queue_refusals_are_retried_not_lost(
    kafka_bootstrap: str, make_topic: Callable[..., str]
) -> None:
    """A 1 MB byte bound is hit long before the message-count bound: refused records are offered again."""
    topic = make_topic(partitions=3)
    settings = SimulatorSettings(
        kafka_bootstrap_servers=kafka_bootstrap, metrics_port=0, buffer_kbytes=1024, buffer_messages=1_000_000
    )
    universe = load_universe("default")
    metrics = SimulatorMetrics()
    producer = TickProducer(settings, universe.symbols, metrics, topic=topic)
    producer.wait_for_broker()
    start = to_ms(datetime(2024, 1, 2, 14, 0, tzinfo=UTC))
    engine = TickEngine(universe, Session(), 5, start, tick_ms=100)
    sent = stream(engine, producer, metrics, threading.Event(), end_ms=start + 1_200_000, realtime=False)
    assert producer.flush(60) == 0
    assert producer.failed == 0
    assert metrics.registry.get_sample_value("sim_producer_buffer_full_total", {}) > 0  # the bound was hit
    seqs = _read_back(kafka_bootstrap, topic)
    assert sum(len(s) for s in seqs.values()) == sent
    for ticker, s in seqs.items():  # exactly once each (order may differ after a refusal)
        assert sorted(s) == list(range(len(s))), ticker


def _read_back(bootstrap: str, topic: str) -> dict[str, list[int]]:
    """Every ``seq`` of the whole topic, per ticker (a duplicate beyond what was sent is read too)."""
    seqs: dict[str, list[int]] = defaultdict(list)
    for m in read_topic(bootstrap, topic):
        tick = decode_tick(m.value())
        seqs[tick.ticker].append(tick.seq)
    return seqs


def test_unreachable_broker_fails_after_retries() -> None:
    from common.errors import SinkError

    settings = SimulatorSettings(kafka_bootstrap_servers="127.0.0.1:1", metrics_port=0, connect_attempts=2)
    producer = TickProducer(settings, ["A"], SimulatorMetrics())
    with pytest.raises(SinkError, match="unreachable after 2 attempts"):
        producer.wait_for_broker(timeout_s=0.5)
