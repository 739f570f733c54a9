"""Sinks of the anomalies flow: the ``anomalies`` table, the ``alerts`` topic and the webhook notifier.

Built on :mod:`flows.sinks` (the same PostgreSQL partition base with retries and native partitions, the same
delivery-checked Kafka producer partition), so they share its guarantees: a batch is written in one
transaction / flushed before the flow moves on, and replays after a restart are harmless — rows are inserted
``ON CONFLICT DO NOTHING`` on the natural key (ticker, type, timeframe, time), and ``alerts`` consumers keep one
message per natural key. The webhook sink only *offers* anomalies to :class:`flows.notify.WebhookNotifier`
(never blocks the flow); notifications are at-most-once per cooldown and flow worker (one notifier per
worker: with several workers a ticker's timeframes may be keyed to different workers, each with its own
cooldown).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import psycopg
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from common.clock import from_ms
from contracts.anomaly import Anomaly, encode_anomaly
from flows.anomaly_settings import AnomalySettings
from flows.notify import WebhookNotifier
from flows.sinks import FanoutSink, KafkaMessage, _KafkaPartition, _PostgresPartition, _producer_config

_INSERT = """INSERT INTO anomalies (time, ticker, type, timeframe, severity, value, threshold, reference, message,
                       detected_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (ticker, type, timeframe, time) DO NOTHING"""


def anomaly_row(a: Anomaly) -> tuple[Any, ...]:
    """The ``anomalies`` row of an anomaly."""
    return (
        from_ms(a.time), a.ticker, a.type.value, a.timeframe, a.severity.value, a.value, a.threshold, a.reference,
        a.message, from_ms(a.detected_at),
    )  # fmt: skip


class _AnomalyStorePartition(_PostgresPartition[Anomaly]):
    table = "anomalies"
    monthly = True

    def rows(self, items: list[Anomaly]) -> list[Any]:
        return items

    def partition_times(self, rows: list[Any]) -> Iterable[int]:
        return {a.time for a in rows}

    def write_rows(self, cur: psycopg.Cursor[Any], rows: list[Any]) -> None:
        cur.executemany(_INSERT, [anomaly_row(a) for a in rows])


class AnomalyStoreSink(DynamicSink[Anomaly]):
    """Anomalies into the ``anomalies`` table, idempotent on (ticker, type, timeframe, time)."""

    def __init__(self, database_url: str) -> None:
        self._url = database_url

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _AnomalyStorePartition:
        return _AnomalyStorePartition(self._url)


class KafkaAlertSink(DynamicSink[Anomaly]):
    """Anomalies to the ``alerts`` topic keyed by ticker (contract ``anomaly.v1``)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self._bootstrap = bootstrap
        self._topic = topic

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _KafkaPartition[Anomaly]:
        def encode(a: Anomaly) -> KafkaMessage:
            return a.ticker.encode(), encode_anomaly(a), None

        return _KafkaPartition(_producer_config(self._bootstrap), "kafka_alerts", self._topic, encode)


class _WebhookPartition(StatelessSinkPartition[Anomaly]):
    def __init__(self, notifier: WebhookNotifier) -> None:
        self._notifier = notifier

    def write_batch(self, items: list[Anomaly]) -> None:
        for anomaly in items:
            self._notifier.offer(anomaly)

    def close(self) -> None:
        self._notifier.close()


class WebhookSink(DynamicSink[Anomaly]):
    """Offers every anomaly to a per-worker :class:`WebhookNotifier` (filters, cooldown, background posts)."""

    def __init__(self, settings: AnomalySettings) -> None:
        self._settings = settings

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _WebhookPartition:
        s = self._settings
        assert s.webhook_url is not None, "build a WebhookSink only when a webhook URL is configured"
        notifier = WebhookNotifier(
            s.webhook_url.get_secret_value(),
            min_severity=s.webhook_min_severity,
            cooldown_s=s.webhook_cooldown_s,
            timeout_s=s.webhook_timeout_s,
            attempts=s.webhook_attempts,
            backoff_s=s.webhook_backoff_s,
            queue_size=s.webhook_queue,
        )
        return _WebhookPartition(notifier)


def anomaly_sink(settings: AnomalySettings) -> FanoutSink[Anomaly]:
    """The table first, then ``alerts``, then (when a URL is set) the webhook."""
    sinks: list[DynamicSink[Anomaly]] = [
        AnomalyStoreSink(settings.database_url.get_secret_value()),
        KafkaAlertSink(settings.kafka_bootstrap_servers, settings.topic_alerts),
    ]
    if settings.webhook_url is not None:
        sinks.append(WebhookSink(settings))
    return FanoutSink(*sinks)
