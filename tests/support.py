"""Helpers shared by the integration and end-to-end tests (import as ``from tests.support import ...``).

Helpers that need a teardown (child processes, databases) are factory fixtures in ``tests/conftest.py``;
everything here is a plain function or class.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, Producer, TopicPartition

ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")


# --------------------------------------------------------------------------- Kafka


def read_topic(
    bootstrap: str, topic: str, extra_conf: Mapping[str, Any] | None = None, timeout_s: float = 60
) -> list[Message]:
    """Every message of ``topic`` from the beginning of each partition up to its current end.

    A consumer of a group of its own is assigned every partition from the beginning and reads until each has
    reported end-of-partition; any other consumer error fails the test, as does not reaching the end of every
    partition within ``timeout_s``. Messages come partition by partition, each partition in offset order.
    ``extra_conf`` adds to the consumer's configuration (``{"isolation.level": "read_committed"}``, say).
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-read-{uuid.uuid4().hex[:12]}",
            "enable.partition.eof": True,
            "enable.auto.commit": False,
            **(extra_conf or {}),
        }
    )
    try:
        parts = sorted(consumer.list_topics(topic, timeout=30).topics[topic].partitions)
        assert parts, f"topic {topic!r} has no partitions"
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        messages: list[Message] = []
        at_end: set[int] = set()
        deadline = time.monotonic() + timeout_s
        while len(at_end) < len(parts) and time.monotonic() < deadline:
            for msg in consumer.consume(10_000, 0.5):
                err = msg.error()
                if err is None:
                    messages.append(msg)
                elif err.code() == KafkaError._PARTITION_EOF:
                    at_end.add(msg.partition() or 0)
                else:
                    pytest.fail(f"error reading {topic!r}: {err}")
        assert len(at_end) == len(parts), f"could not read {topic!r} to its end within {timeout_s} s"
        return messages
    finally:
        consumer.close()


def produce(
    bootstrap: str,
    topic: str,
    pairs: Iterable[tuple[str | bytes | None, bytes] | tuple[str | bytes | None, bytes, int]],
) -> int:
    """Produce ``(key, value)`` pairs (str keys are UTF-8 encoded) with an idempotent producer, retrying while
    its queue is full; asserts that every message was delivered. Returns the number of messages. A third item
    is the record's timestamp (epoch ms; otherwise the producer's clock at ``produce``)."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 20})
    count = 0
    for key, value, *stamp in pairs:
        raw_key = key.encode() if isinstance(key, str) else key
        while True:
            try:
                producer.produce(topic, key=raw_key, value=value, timestamp=stamp[0] if stamp else 0)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
        count += 1
    assert producer.flush(60) == 0, f"messages to {topic!r} left undelivered"
    return count


# --------------------------------------------------------------------------- waiting


def tail(log: Path, chars: int = 3000) -> str:
    """The end of a log file, or a note that there is none."""
    return log.read_text(errors="replace")[-chars:] if log.exists() else "(no log)"


def wait_for(
    check: Callable[[], T],
    timeout_s: float,
    what: str,
    logs: Iterable[Path] = (),
    status: Callable[[], object] | None = None,
    ignore: tuple[type[BaseException], ...] = (),
    interval_s: float = 0.2,
) -> T:
    """Poll ``check`` until it returns a true value, and return that value.

    Exceptions of the ``ignore`` types count as "not yet". After ``timeout_s`` the test fails naming ``what``,
    the state seen (``status()``, if given) and the tails of ``logs``.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            value = check()
        except ignore:
            value = None
        if value:
            return value
        if time.monotonic() >= deadline:
            break
        time.sleep(interval_s)
    seen = f" (seen: {status()})" if status is not None else ""
    tails = "\n".join(f"--- {p.name}\n{tail(p)}" for p in logs)
    pytest.fail(f"timed out after {timeout_s} s waiting for {what}{seen}\n{tails}")


# --------------------------------------------------------------------------- child processes


class Child:
    """A child process whose output goes to ``log`` (appended); see the ``spawn`` fixture."""

    def __init__(self, argv: list[str], env: Mapping[str, str], log: Path, cwd: Path = ROOT) -> None:
        self.log = log
        self._out: BinaryIO = log.open("ab")
        try:
            self.proc = subprocess.Popen(argv, cwd=cwd, env=dict(env), stdout=self._out, stderr=subprocess.STDOUT)  # noqa: S603
        except BaseException:
            self._out.close()
            raise

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, chars: int = 3000) -> str:
        return tail(self.log, chars)

    def stop(self, timeout_s: float = 30) -> int:
        """SIGTERM, then SIGKILL if it has not exited within ``timeout_s``; closes the log. Returns the exit code."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._out.close()
        return self.proc.returncode

    def kill9(self) -> int:
        """SIGKILL at once (no shutdown, no flush), as a crash; closes the log. Returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self._out.close()
        return self.proc.returncode


# --------------------------------------------------------------------------- services


#: settings of our own processes that a developer's shell may carry and that must not leak into a test
_OWN_PREFIXES = ("FLOW_", "API_", "SIM_", "TOPIC_", "ANOMALY_")


def service_env(kafka: str, pg: str | None = None, redis: str | None = None, **topics: str) -> dict[str, str]:
    """The environment of a platform process (simulator, flow, gateway) pointed at this test's servers.

    The current environment without our own settings (``FLOW_*``, ``API_*``, ``SIM_*``, ``TOPIC_*``,
    ``ANOMALY_*``), plus the servers' addresses and the topics: ``ticks="t-1"`` sets ``TOPIC_TICKS``,
    ``dead_letter=...`` sets ``TOPIC_DEAD_LETTER``. Add a process's own settings on top.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(_OWN_PREFIXES)}
    env["KAFKA_BOOTSTRAP_SERVERS"] = kafka
    if pg is not None:
        env["DATABASE_URL"] = pg
    if redis is not None:
        env["REDIS_URL"] = redis
    env.update({f"TOPIC_{name.upper()}": topic for name, topic in topics.items()})
    return env


def seed_universe(pg_url: str, preset: str) -> list[str]:
    """Insert the tickers of the simulator's universe ``preset`` into ``tickers``; returns their symbols."""
    import psycopg

    from simulator.universe import load_universe

    universe = load_universe(preset)
    with psycopg.connect(pg_url) as conn:
        conn.cursor().executemany(
            "INSERT INTO tickers (ticker, name, sector, initial_price) VALUES (%s, %s, %s, round(%s::numeric, 2))",
            [(t.symbol, t.name or t.symbol, t.sector, t.start_price) for t in universe.tickers],
        )
    return list(universe.symbols)
