"""Webhook notifier without a network (httpx MockTransport): filters, cooldown, retries, Slack body."""

from __future__ import annotations

import json
import threading

import httpx

from contracts.anomaly import Anomaly, AnomalyType, Severity
from flows.notify import WebhookNotifier, slack_body

T0 = 1_767_607_200_000


def anomaly(
    ticker: str = "TECH", kind: AnomalyType = AnomalyType.PRICE_SPIKE, sev: Severity = Severity.HIGH
) -> Anomaly:
    return Anomaly(ticker=ticker, type=kind, severity=sev, timeframe="1m", time=T0, value=8.1, threshold=5.0,
                   reference=100.0, detected_at=T0 + 62_000, message=f"{ticker} 1m: close is +8.10%")  # fmt: skip


class Receiver:
    """Records request bodies; answers the statuses given in order, then 200."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.bodies: list[dict[str, object]] = []
        self.statuses = list(statuses or [])
        self.lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            self.bodies.append(json.loads(request.content))
            status = self.statuses.pop(0) if self.statuses else 200
        return httpx.Response(status)


def notifier(receiver: Receiver, clock: list[float], **kw: object) -> WebhookNotifier:
    return WebhookNotifier(
        "http://hooks.invalid/x", clock=lambda: clock[0], transport=httpx.MockTransport(receiver), backoff_s=0.001,
        **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def test_only_high_and_critical_are_sent_by_default() -> None:
    rec, clock = Receiver(), [0.0]
    n = notifier(rec, clock)
    assert not n.offer(anomaly(sev=Severity.LOW))
    assert not n.offer(anomaly(sev=Severity.MEDIUM))
    assert n.offer(anomaly(sev=Severity.CRITICAL))
    n.close()
    assert len(rec.bodies) == 1


def test_cooldown_is_per_ticker_and_type() -> None:
    rec, clock = Receiver(), [1000.0]
    n = notifier(rec, clock, cooldown_s=300.0)
    assert n.offer(anomaly())
    assert not n.offer(anomaly())  # same (ticker, type) within 5 minutes
    assert n.offer(anomaly(kind=AnomalyType.VOLUME_SPIKE))
    assert n.offer(anomaly(ticker="SYNTH"))
    clock[0] += 299.0
    assert not n.offer(anomaly())
    clock[0] += 1.0
    assert n.offer(anomaly())  # cooldown over
    n.close()
    assert len(rec.bodies) == 4


def test_server_errors_are_retried_then_delivered() -> None:
    rec, clock = Receiver([500, 503, 429]), [0.0]
    n = notifier(rec, clock, attempts=4)
    n.offer(anomaly())
    n.close()
    assert len(rec.bodies) == 4  # three failures, then the 200


def test_a_failing_webhook_gives_up_without_stopping_the_notifier() -> None:
    rec, clock = Receiver([500] * 3), [0.0]
    n = notifier(rec, clock, attempts=3)
    n.offer(anomaly())
    assert n.drain(10)
    n.offer(anomaly(ticker="SYNTH"))
    n.close()
    assert len(rec.bodies) == 4  # 3 tries of the first, then the second delivered


def test_client_errors_are_not_retried() -> None:
    rec, clock = Receiver([400]), [0.0]
    n = notifier(rec, clock, attempts=5)
    n.offer(anomaly())
    n.close()
    assert len(rec.bodies) == 1


def test_a_full_queue_drops_instead_of_blocking() -> None:
    gate = threading.Event()

    def slow(request: httpx.Request) -> httpx.Response:
        gate.wait(10)
        return httpx.Response(200)

    n = WebhookNotifier("http://hooks.invalid/x", transport=httpx.MockTransport(slow), queue_size=2, cooldown_s=0)
    accepted = [n.offer(anomaly(ticker=f"T{i}")) for i in range(10)]
    gate.set()
    n.close()
    assert accepted[:2] == [True, True]
    assert accepted.count(True) <= 3


def test_slack_body_has_text_and_blocks() -> None:
    body = slack_body(anomaly())
    assert isinstance(body["text"], str)
    assert "TECH" in body["text"]
    assert "price_spike" in body["text"]
    assert "2026-01-05 10:00:00 UTC" in body["text"]
    assert body["blocks"][0]["type"] == "section"
    json.dumps(body)
