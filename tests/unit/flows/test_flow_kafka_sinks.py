"""The Kafka sinks of the flows against a stub producer (no broker): counting, logging and message bytes."""

from __future__ import annotations

import logging
from typing import Any

import pytest

import flows.sinks as sinks
from common.errors import SinkError
from common.settings import SharedSettings
from contracts import redis_keys
from flows.decode import DeadLetter
from flows.observe import DEAD_LETTERS


class FakeProducer:
    """Records produced messages; ``fail`` makes every delivery report an error."""

    instances: list[FakeProducer] = []
    fail = False

    def __init__(self, config: dict[str, Any]) -> None:
        self.sent: list[dict[str, Any]] = []
        self._pending: list[Any] = []
        FakeProducer.instances.append(self)

    def produce(self, topic: str, *, value: bytes, key: bytes, headers: Any, on_delivery: Any) -> None:
        self.sent.append({"topic": topic, "key": key, "value": value, "headers": headers})
        self._pending.append(on_delivery)

    def poll(self, timeout: float) -> int:
        return 0

    def flush(self, timeout: float) -> int:
        for cb in self._pending:
            cb("broker down" if FakeProducer.fail else None, None)
        self._pending.clear()
        return 0


@pytest.fixture
def producer(monkeypatch: pytest.MonkeyPatch) -> type[FakeProducer]:
    FakeProducer.instances = []
    FakeProducer.fail = False
    monkeypatch.setattr(sinks, "Producer", FakeProducer)
    return FakeProducer


def _dead(n: int, kind: str = "malformed") -> list[DeadLetter]:
    return [DeadLetter(kind=kind, reason=f"bad {i}", raw=b"x", topic="t", partition=0, offset=i) for i in range(n)]  # type: ignore[arg-type]


def _counts() -> tuple[float, float]:
    return DEAD_LETTERS.labels("malformed")._value.get(), DEAD_LETTERS.labels("late")._value.get()


def test_dead_letters_are_counted_and_logged_once_per_batch_after_delivery(
    producer: type[FakeProducer], caplog: pytest.LogCaptureFixture
) -> None:
    part = sinks.dead_letter_sink(SharedSettings()).build("dlq", 0, 1)
    malformed, late = _counts()
    with caplog.at_level(logging.WARNING, logger="flows.sinks"):
        part.write_batch([*_dead(3), *_dead(2, "late")])
    assert _counts() == (malformed + 3, late + 2)
    lines = [r.getMessage() for r in caplog.records if "dead-lettered" in r.getMessage()]
    assert len(lines) == 1
    assert "dead-lettered 5 messages" in lines[0]
    assert "bad 0" in lines[0]
    assert len(producer.instances[0].sent) == 5


def test_dead_letters_are_not_counted_when_delivery_fails(producer: type[FakeProducer]) -> None:
    part = sinks.dead_letter_sink(SharedSettings()).build("dlq", 0, 1)
    producer.fail = True
    before = _counts()
    with pytest.raises(SinkError):
        part.write_batch(_dead(2))
    assert _counts() == before


def _bars() -> list[Any]:
    from contracts.bar import BAR_SCHEMA_VERSION
    from flows.aggregation import FlowBar

    t0 = 1_705_318_200_000
    return [
        FlowBar(
            "SYNTH",
            "1m",
            t0,
            t0 + 60_000,
            1.0,
            1.2,
            0.9,
            1.1,
            10,
            1.05,
            2,
            t0 + 1,
            t0 + 2,
            final,
            None,
            BAR_SCHEMA_VERSION,
        )  # fmt: skip
        for final in (True, False)
    ]


class _CommandLog:
    """A Redis pipeline that records the commands the writers queue."""

    def __init__(self) -> None:
        self.commands: list[tuple[Any, ...]] = []

    def execute_command(self, *args: Any) -> None:
        self.commands.append(args)


def test_bars_are_encoded_once_for_redis_and_kafka_with_the_contract_bytes(
    producer: type[FakeProducer], monkeypatch: pytest.MonkeyPatch
) -> None:
    from contracts.bar import encode_bar

    calls: list[Any] = []

    def counting(bar: Any) -> bytes:
        calls.append(bar)
        return encode_bar(bar)

    monkeypatch.setattr(sinks, "encode_bar", counting)
    pipe = _CommandLog()  # what reaches Redis (tests/integration/test_redis_sinks.py runs it on a real server)
    monkeypatch.setattr(sinks._RedisPartition, "_write", lambda self, items: self._write_fn(pipe, items))
    part = sinks.live_bar_sink(SharedSettings()).build("bars", 0, 1)
    bars = _bars()
    part.write_batch(bars)
    assert len(calls) == len(bars)
    sent = producer.instances[0].sent
    assert [m["value"] for m in sent] == [encode_bar(b) for b in bars]
    assert [m["key"] for m in sent] == [b"SYNTH", b"SYNTH"]
    assert {m["topic"] for m in sent} == {SharedSettings().topic_bars}
    final, live = bars
    assert pipe.commands == [
        ("MSET", redis_keys.final_bar("SYNTH", "1m"), encode_bar(final)),
        ("HSET", redis_keys.indicators("SYNTH"), "1m", encode_bar(final)),
        ("EVAL", sinks.SET_EACH_WITH_TTL, 1, redis_keys.live_bar("SYNTH", "1m"), encode_bar(live),
         redis_keys.LIVE_BAR_TTL_S["1m"]),
    ]  # fmt: skip


def test_a_redis_refusal_is_a_sink_error_naming_the_sink_and_connection_loss_is_retried(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import redis

    from common.errors import SinkError

    outcomes: list[Exception] = [redis.ConnectionError("reset"), redis.ResponseError("NOPERM no scripts")]

    class Pipe(_CommandLog):
        def execute(self) -> None:
            raise outcomes.pop(0)

    part = sinks._RedisPartition("redis://127.0.0.1:1/0", "redis_bars", lambda pipe, items: None)
    monkeypatch.setattr(part._client, "pipeline", lambda transaction: Pipe())
    monkeypatch.setattr(sinks._RedisPartition._write.retry, "sleep", lambda _s: None)  # type: ignore[attr-defined]
    with pytest.raises(SinkError, match=r"writing 1 items to redis_bars failed: NOPERM no scripts"):
        part.write_batch([object()])
    assert outcomes == [], "the connection loss was retried, the refusal was not"
