"""Webhook notifier: Slack-compatible JSON posts of high/critical anomalies, off the dataflow's thread.

:meth:`WebhookNotifier.offer` is what the flow calls per anomaly; it never blocks. It keeps anomalies at or above
``min_severity``, applies a per-``(ticker, type)`` cooldown on the wall clock (default five minutes: an operator
gets one message per ticker and kind of trouble, however many bars or timeframes of this worker show it) and
puts the message on a bounded queue. One daemon thread posts the queue in order with ``httpx`` and retries with
exponential backoff (tenacity) on network errors, 429 and 5xx; a message that still fails, or that finds the queue full,
is counted (``flow_webhook_notifications_total{outcome}``) and logged, never raised into the flow.

Body: ``{"text": ..., "blocks": [...]}`` — ``text`` alone is enough for Slack, Mattermost, Rocket.Chat and
Discord's ``/slack`` endpoints; ``blocks`` adds a formatted section for Slack.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from common.clock import from_ms
from contracts.anomaly import Anomaly, Severity
from flows import observe

log = logging.getLogger(__name__)

_EMOJI = {Severity.LOW: ":information_source:", Severity.MEDIUM: ":warning:", Severity.HIGH: ":rotating_light:",
          Severity.CRITICAL: ":fire:"}  # fmt: skip


def slack_body(anomaly: Anomaly) -> dict[str, Any]:
    """The Slack-compatible JSON body announcing ``anomaly``."""
    when = from_ms(anomaly.time).strftime("%Y-%m-%d %H:%M:%S UTC")
    title = f"{anomaly.severity.value.upper()} {anomaly.type.value} on {anomaly.ticker} ({anomaly.timeframe})"
    text = f"{_EMOJI[anomaly.severity]} {title}: {anomaly.message} — bar of {when}"
    fields = [
        {"type": "mrkdwn", "text": f"*Ticker*\n{anomaly.ticker}"},
        {"type": "mrkdwn", "text": f"*Type*\n{anomaly.type.value}"},
        {"type": "mrkdwn", "text": f"*Severity*\n{anomaly.severity.value}"},
        {"type": "mrkdwn", "text": f"*Value / threshold*\n{anomaly.value:g} / {anomaly.threshold:g}"},
        {"type": "mrkdwn", "text": f"*Bar*\n{when}"},
    ]
    return {
        "text": text,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*{title}*\n{anomaly.message}"}},
            {"type": "section", "fields": fields},
        ],
    }


class WebhookError(RuntimeError):
    """The webhook answered with a status worth retrying (429, 5xx)."""


def _retryable(err: BaseException) -> bool:
    return isinstance(err, WebhookError | httpx.TransportError)


class WebhookNotifier:
    """Filters, rate-limits and posts anomalies from a bounded background queue (see the module docstring).

    ``clock`` (seconds, monotonic) drives the cooldown; ``transport`` replaces httpx's network transport (tests).
    """

    def __init__(
        self,
        url: str,
        *,
        min_severity: Severity = Severity.HIGH,
        cooldown_s: float = 300.0,
        timeout_s: float = 5.0,
        attempts: int = 4,
        backoff_s: float = 0.5,
        queue_size: int = 1_000,
        clock: Callable[[], float] = time.monotonic,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._url = url
        self._min_rank = min_severity.rank
        self._cooldown_s = cooldown_s
        self._clock = clock
        self._last_sent: dict[tuple[str, str], float] = {}
        self._queue: queue.Queue[Anomaly | None] = queue.Queue(maxsize=queue_size)
        self._client = httpx.Client(timeout=timeout_s, transport=transport)
        self._retrying = Retrying(
            retry=retry_if_exception(_retryable),
            wait=wait_exponential(multiplier=backoff_s, max=30),
            stop=stop_after_attempt(attempts),
            reraise=True,
        )
        self._thread = threading.Thread(target=self._run, name="webhook-notifier", daemon=True)
        self._thread.start()

    def offer(self, anomaly: Anomaly) -> bool:
        """Queue ``anomaly`` for posting if it passes the severity and cooldown filters; never blocks."""
        if anomaly.severity.rank < self._min_rank:
            observe.WEBHOOK_NOTIFICATIONS.labels("below_severity").inc()
            return False
        key = (anomaly.ticker, anomaly.type.value)
        now = self._clock()
        last = self._last_sent.get(key)
        if last is not None and now - last < self._cooldown_s:
            observe.WEBHOOK_NOTIFICATIONS.labels("cooldown").inc()
            return False
        try:
            self._queue.put_nowait(anomaly)
        except queue.Full:
            observe.WEBHOOK_NOTIFICATIONS.labels("queue_full").inc()
            log.warning("webhook queue full: dropped %s %s %s", anomaly.ticker, anomaly.type.value, anomaly.time)
            return False
        self._last_sent[key] = now  # the cooldown starts when a message is accepted, not when it arrives
        return True

    def _post(self, anomaly: Anomaly) -> None:
        response = self._client.post(self._url, json=slack_body(anomaly))
        if response.status_code == 429 or response.status_code >= 500:
            msg = f"webhook answered {response.status_code}"
            raise WebhookError(msg)
        response.raise_for_status()

    def _run(self) -> None:
        while True:
            anomaly = self._queue.get()
            if anomaly is None:
                self._queue.task_done()
                return
            try:
                self._retrying(self._post, anomaly)
                observe.WEBHOOK_NOTIFICATIONS.labels("sent").inc()
            except Exception as err:  # a bad webhook must never stop the notifier thread
                observe.WEBHOOK_NOTIFICATIONS.labels("failed").inc()
                log.warning("webhook delivery of %s %s failed: %r", anomaly.ticker, anomaly.type.value, err)
            finally:
                self._queue.task_done()

    def drain(self, timeout_s: float = 30.0) -> bool:
        """Wait until every queued message was posted or given up; True when the queue is empty in time."""
        deadline = time.monotonic() + timeout_s
        while self._queue.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def close(self, timeout_s: float = 10.0) -> None:
        """Post what is queued (up to ``timeout_s``), then stop the thread and the HTTP client."""
        self.drain(timeout_s)
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=1.0)
        self._thread.join(timeout_s)
        self._client.close()
