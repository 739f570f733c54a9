"""A stop request (SIGTERM/SIGINT) while the broker is still unreachable ends the wait instead of being ignored."""

from __future__ import annotations

import threading

import pytest

from simulator.metrics import SimulatorMetrics
from simulator.producer import TickProducer
from simulator.settings import SimulatorSettings

pytestmark = pytest.mark.integration


def test_stop_during_the_broker_wait_returns_without_producing() -> None:
    # 1,000 attempts with backoff up to 15 s would take hours: only the stop request can end this wait
    settings = SimulatorSettings(kafka_bootstrap_servers="127.0.0.1:1", metrics_port=0, connect_attempts=1_000)
    producer = TickProducer(settings, ["A"], SimulatorMetrics())
    stop = threading.Event()
    threading.Timer(1.0, stop.set).start()
    outcome: list[bool] = []
    waiter = threading.Thread(target=lambda: outcome.append(producer.wait_for_broker(timeout_s=0.5, stop=stop)))
    waiter.start()
    waiter.join(60)
    assert not waiter.is_alive(), "the stop request did not end the broker wait"
    assert outcome == [False]
    assert producer.produced == 0
