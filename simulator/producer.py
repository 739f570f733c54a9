"""Kafka side of the simulator: an idempotent, batching producer of ``market-ticks`` messages.

* ``enable.idempotence`` (implies ``acks=all`` and ordered retries), compression, linger/batch sizes tuned for
  throughput; key = ticker so one ticker's ticks stay ordered on one partition.
* Broker unreachable at start: :meth:`TickProducer.wait_for_broker` retries with exponential backoff
  (tenacity), logging each attempt, then raises :class:`SinkError`.
* Broker outage mid-run: librdkafka keeps retrying inside a bounded queue (``queue.buffering.max.kbytes``);
  when the queue is full ``produce`` raises ``BufferError`` and we poll and retry, so the simulator slows down
  (backpressure) instead of growing memory. Messages still undelivered after ``delivery.timeout.ms`` reach the
  delivery callback with an error: they are counted (``sim_delivery_errors``) and logged, never dropped silently;
  whatever is left at shutdown after the flush timeout is counted and logged the same way.
"""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from tenacity import RetryError, Retrying, before_sleep_log, stop_after_attempt, wait_exponential

from common.errors import SinkError
from simulator.encode import BatchEncoder
from simulator.engine import TickBatch
from simulator.metrics import SimulatorMetrics
from simulator.settings import SimulatorSettings

log = logging.getLogger(__name__)


def producer_config(settings: SimulatorSettings) -> dict[str, Any]:
    """librdkafka configuration for the tick producer."""
    return {
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "client.id": "simulator",
        "enable.idempotence": True,
        "acks": "all",
        "compression.type": settings.compression,
        "linger.ms": settings.linger_ms,
        "batch.size": settings.batch_bytes,
        "queue.buffering.max.kbytes": settings.buffer_kbytes,
        "queue.buffering.max.messages": 2_000_000,
        "delivery.timeout.ms": settings.delivery_timeout_ms,
        "message.max.bytes": max(1_000_000, settings.batch_bytes + 100_000),
    }


class TickProducer:
    """Sends :class:`TickBatch` rows to the ticks topic; counts every failure."""

    def __init__(
        self, settings: SimulatorSettings, symbols: list[str], metrics: SimulatorMetrics, topic: str | None = None
    ) -> None:
        self.settings = settings
        self.topic = topic or settings.topic_ticks
        self.metrics = metrics
        self.encoder = BatchEncoder(symbols)
        self.produced = 0
        self.failed = 0
        self._errors_logged = 0
        self._delivered_reported = 0
        conf = producer_config(settings)
        conf["error_cb"] = self._on_error
        self._producer = Producer(conf)

    # -- callbacks (run inside poll/flush)

    def _on_error(self, err: KafkaError) -> None:
        level = logging.ERROR if err.fatal() else logging.WARNING
        log.log(level, "kafka client error on %s: %s", self.settings.kafka_bootstrap_servers, err)

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            return
        self.failed += 1
        self.metrics.delivery_errors.labels(reason=err.name()).inc()
        self._errors_logged += 1
        # log the first failures in full, then every 10,000th, so an outage does not flood the log
        if self._errors_logged <= 20 or self._errors_logged % 10_000 == 0:
            log.error(
                "undeliverable tick topic=%s partition=%s key=%r: %s (failed so far: %d)",
                msg.topic(),
                msg.partition(),
                msg.key(),
                err,
                self.failed,
            )

    # -- lifecycle

    def wait_for_broker(self, timeout_s: float = 5.0) -> None:
        """Block until the cluster answers a metadata request; retry with backoff, then raise SinkError."""
        attempts = self.settings.connect_attempts
        retrying = Retrying(
            stop=stop_after_attempt(attempts),
            wait=wait_exponential(multiplier=0.5, max=15),
            before_sleep=before_sleep_log(log, logging.WARNING),
            reraise=False,
        )
        try:
            for attempt in retrying:
                with attempt:
                    log.info(
                        "connecting to kafka at %s (attempt %d/%d)",
                        self.settings.kafka_bootstrap_servers,
                        attempt.retry_state.attempt_number,
                        attempts,
                    )
                    md = self._producer.list_topics(timeout=timeout_s)
                    if not md.brokers:
                        msg = "no brokers in metadata"
                        raise KafkaException(msg)
        except RetryError as err:
            msg = (
                f"kafka at {self.settings.kafka_bootstrap_servers!r} unreachable after {attempts} attempts: "
                f"{err.last_attempt.exception()!r}"
            )
            raise SinkError(msg) from err
        log.info("kafka reachable at %s; producing to topic %r", self.settings.kafka_bootstrap_servers, self.topic)

    def send(self, batch: TickBatch) -> None:
        """Queue every row of ``batch``; on a full queue, serve callbacks and retry (backpressure)."""
        buf, off = self.encoder.encode(batch)
        o = off.tolist()
        keys = self.encoder.keys
        tick = batch.ticker.tolist()
        produce = self._producer.produce
        poll = self._producer.poll
        topic = self.topic
        cb = self._on_delivery
        for i in range(len(tick)):
            value = buf[o[i] : o[i + 1]]
            while True:
                try:
                    produce(topic, value, keys[tick[i]], on_delivery=cb)
                    break
                except BufferError:
                    self.metrics.buffer_full.inc()
                    poll(0.05)
            if not i & 1023:
                poll(0)
        poll(0)
        self.produced += len(tick)
        self.metrics.ticks_produced.inc(len(tick))
        self.metrics.in_flight.set(len(self._producer))
        if len(batch):
            self.metrics.sim_time.set(int(batch.ts_ms[-1]))

    def flush(self, timeout_s: float = 30.0) -> int:
        """Deliver what is queued; returns (and counts and logs) the messages that could not be delivered."""
        remaining = int(self._producer.flush(timeout_s))
        if remaining:
            self.failed += remaining
            self.metrics.delivery_errors.labels(reason="flush_timeout").inc(remaining)
            log.error("%d ticks still undelivered after a %.0f s flush: counted as failed", remaining, timeout_s)
        delivered = self.produced - self.failed
        self.metrics.ticks_delivered.inc(max(0, delivered - self._delivered_reported))
        self._delivered_reported = max(self._delivered_reported, delivered)
        log.info("producer flushed: %d produced, %d delivered, %d failed", self.produced, delivered, self.failed)
        return remaining
