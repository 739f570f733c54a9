"""The relay hands batches to the event loop with a bound: at ``relay_max_pending`` it waits for the loop."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import REGISTRY

from api.relay import KafkaRelay
from api.settings import ApiSettings


class _Loop:
    """Stands in for the event loop: keeps the callbacks until the test runs them."""

    def __init__(self) -> None:
        self.calls: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
        self.closed = False

    def call_soon_threadsafe(self, fn: Callable[..., Any], *args: Any) -> None:
        if self.closed:
            raise RuntimeError("Event loop is closed")
        self.calls.append((fn, args))

    def run_one(self) -> None:
        fn, args = self.calls.pop(0)
        fn(*args)


class _Hub:
    def __init__(self, fail: bool = False) -> None:
        self.published: list[list[Any]] = []
        self.fail = fail

    def publish(self, events: list[Any]) -> None:
        self.published.append(events)
        if self.fail:
            raise ValueError("boom")


def _batch(name: str) -> list[Any]:
    """A relayed batch as the hub sees it (the relay does not look inside)."""
    return [name]


def _waited_s() -> float:
    return REGISTRY.get_sample_value("api_relay_wait_seconds_total") or 0.0


def _relay(hub: _Hub, loop: _Loop, pending: int = 2) -> KafkaRelay:
    return KafkaRelay(ApiSettings(relay_max_pending=pending), hub, loop)  # type: ignore[arg-type]


def _in_thread(fn: Callable[[], bool]) -> tuple[threading.Thread, list[bool]]:
    out: list[bool] = []
    t = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    t.start()
    return t, out


def test_the_relay_waits_for_the_loop_at_the_bound_and_goes_on_when_it_takes_a_batch() -> None:
    loop, hub = _Loop(), _Hub()
    relay = _relay(hub, loop)
    waited_before = _waited_s()
    assert relay.hand_over(_batch("a"))
    assert relay.hand_over(_batch("b"))
    third, out = _in_thread(lambda: relay.hand_over(_batch("c")))
    third.join(0.3)
    assert third.is_alive()  # held back: two batches wait for the loop
    assert len(loop.calls) == 2
    loop.run_one()
    third.join(2.0)
    assert out == [True]
    assert len(loop.calls) == 2
    loop.run_one()
    loop.run_one()
    assert hub.published == [["a"], ["b"], ["c"]]  # all of them, in order
    assert _waited_s() - waited_before >= 0.25


def test_a_stopped_relay_gives_up_waiting_and_queues_nothing() -> None:
    loop, hub = _Loop(), _Hub()
    relay = _relay(hub, loop, pending=1)
    assert relay.hand_over(_batch("a"))
    blocked, out = _in_thread(lambda: relay.hand_over(_batch("b")))
    blocked.join(0.1)
    relay.stop(timeout_s=0)
    blocked.join(2.0)
    assert out == [False]
    assert len(loop.calls) == 1


@pytest.mark.parametrize("closed", [False, True])
def test_a_slot_is_freed_when_publishing_fails_or_the_loop_is_closed(closed: bool) -> None:
    loop, hub = _Loop(), _Hub(fail=not closed)
    relay = _relay(hub, loop, pending=1)
    if closed:
        loop.closed = True
        assert relay.hand_over(_batch("a")) is False
    else:
        assert relay.hand_over(_batch("a"))
        with pytest.raises(ValueError, match="boom"):
            loop.run_one()
        assert hub.published == [["a"]]
    loop.closed = False
    again, out = _in_thread(lambda: relay.hand_over(_batch("b")))
    again.join(1.0)
    assert out == [True]  # the slot was given back: no wait
