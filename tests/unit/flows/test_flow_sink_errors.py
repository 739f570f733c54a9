"""``flow_sink_errors_total`` counts every failed write attempt, also the last one before the sink gives up."""

from __future__ import annotations

import psycopg
import pytest
from tenacity import wait_none

from common.errors import SinkError
from flows.observe import SINK_ERRORS
from flows.sinks import _retrying


class _Sink:
    """A sink partition whose every write fails: transiently (retried) or for good."""

    def __init__(self, name: str, error: Exception) -> None:
        self._name = name
        self.error = error
        self.attempts = 0

    @_retrying("postgres")
    def _write(self, rows: list[int]) -> None:
        self.attempts += 1
        raise self.error


def _errors(name: str) -> float:
    return SINK_ERRORS.labels(name)._value.get()


@pytest.fixture(autouse=True)
def _no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_Sink._write.retry, "wait", wait_none())  # type: ignore[attr-defined]


def test_every_failed_attempt_is_counted_including_the_last() -> None:
    sink = _Sink("test_transient", psycopg.OperationalError("connection lost"))
    before = _errors(sink._name)
    with pytest.raises(psycopg.OperationalError):
        sink._write([1])
    assert sink.attempts == 8
    assert _errors(sink._name) == before + 8


def test_a_failure_retrying_cannot_help_is_counted_once() -> None:
    sink = _Sink("test_fatal", SinkError("refused"))
    before = _errors(sink._name)
    with pytest.raises(SinkError):
        sink._write([1])
    assert sink.attempts == 1
    assert _errors(sink._name) == before + 1
