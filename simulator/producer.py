"""Kafka side of the simulator: an idempotent, batching producer of ``market-ticks`` messages.

* ``enable.idempotence`` (implies ``acks=all`` and ordered retries), compression, linger/batch sizes tuned for
  throughput; key = ticker so one ticker's ticks stay ordered on one partition.
* Broker unreachable at start: :meth:`TickProducer.wait_for_broker` retries with exponential backoff
  (tenacity), logging each attempt, then raises :class:`SinkError`.
* Broker outage mid-run: librdkafka keeps retrying inside a bounded queue (``SIM_BUFFER_MESSAGES`` messages,
  ``SIM_BUFFER_KBYTES``); before a batch is queued we wait (serving callbacks) until it fits, so the simulator
  slows down (backpressure) instead of growing memory. Messages still undelivered after ``delivery.timeout.ms``
  reach the delivery callback with an error: they are counted (``sim_delivery_errors``) and logged, never dropped
  silently; whatever is left at shutdown after the flush timeout is counted and logged the same way.

Throughput (see docs/benchmarks.md): messages are queued with ``produce_batch`` (one C call per batch instead of
one Python call per message) and librdkafka reports only failed deliveries (``delivery.report.only.error``), so
no Python callback runs per delivered message: delivered = queued - failed - still in flight. In backfill the
JSON of batch k+1 is encoded in a worker thread (NumPy, mostly outside the GIL) while batch k is queued.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from tenacity import (
    RetryError,
    Retrying,
    before_sleep_log,
    stop_after_attempt,
    stop_when_event_set,
    wait_exponential,
)

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
        "queue.buffering.max.messages": settings.buffer_messages,
        "delivery.timeout.ms": settings.delivery_timeout_ms,
        "message.max.bytes": max(1_000_000, settings.batch_bytes + 100_000),
        "delivery.report.only.error": True,
    }


def _not_queue_full(err: object) -> bool:
    return isinstance(err, KafkaError) and err.code() != KafkaError._QUEUE_FULL


class TickProducer:
    """Sends :class:`TickBatch` rows to the ticks topic; counts every failure."""

    def __init__(
        self,
        settings: SimulatorSettings,
        symbols: list[str],
        metrics: SimulatorMetrics,
        topic: str | None = None,
        *,
        pipeline: bool = True,
    ) -> None:
        self.settings = settings
        self.topic = topic or settings.topic_ticks
        self.metrics = metrics
        self.encoder = BatchEncoder(symbols)
        self.produced = 0
        self.failed = 0
        self._errors_logged = 0
        self._delivered_reported = 0
        self._purged = False
        #: encode the next batch in a worker thread while this one is queued (``send`` lags one batch behind)
        self.pipeline = pipeline
        self._pool: ThreadPoolExecutor | None = None
        self._pending: tuple[Future[list[dict[str, Any]]], TickBatch] | None = None
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
        if self._purged and err.code() in (KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT):
            return  # counted as flush_timeout already
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

    def wait_for_broker(self, timeout_s: float = 5.0, stop: threading.Event | None = None) -> bool:
        """Block until the cluster answers a metadata request; retry with backoff, then raise SinkError.

        Returns False, without raising, when ``stop`` is set meanwhile (SIGTERM while the broker is still down).
        """
        attempts = self.settings.connect_attempts
        stop = stop or threading.Event()
        event = stop

        def sleep(seconds: float) -> None:  # a stop request ends the backoff at once
            event.wait(seconds)

        retrying = Retrying(
            stop=stop_after_attempt(attempts) | stop_when_event_set(stop),
            wait=wait_exponential(multiplier=0.5, max=15),
            sleep=sleep,
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
            if stop.is_set():
                log.warning("stop requested while waiting for kafka at %s", self.settings.kafka_bootstrap_servers)
                return False
            msg = (
                f"kafka at {self.settings.kafka_bootstrap_servers!r} unreachable after {attempts} attempts: "
                f"{err.last_attempt.exception()!r}"
            )
            raise SinkError(msg) from err
        log.info("kafka reachable at %s; producing to topic %r", self.settings.kafka_bootstrap_servers, self.topic)
        return True

    @property
    def in_flight(self) -> int:
        """Messages queued in librdkafka and not yet acknowledged or failed."""
        return len(self._producer)

    @property
    def delivered(self) -> int:
        """Messages acknowledged by the broker (queued - failed - in flight)."""
        return self.produced - self.failed - self.in_flight

    def send(self, batch: TickBatch) -> None:
        """Queue every row of ``batch`` (in backfill the previous batch; see :meth:`drain`)."""
        if not self.pipeline:
            self._queue(self._records(batch), batch)
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="sim-encode")
        pending, self._pending = self._pending, (self._pool.submit(self._records, batch), batch)
        if pending is not None:
            self._queue(pending[0].result(), pending[1])

    def drain(self) -> None:
        """Queue the batch still being encoded (call before waiting for the clock, and at the end)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            self._queue(pending[0].result(), pending[1])

    def _records(self, batch: TickBatch) -> list[dict[str, Any]]:
        """``produce_batch`` records: the JSON value and the ticker key of every row."""
        keys = self.encoder.keys
        values = self.encoder.messages(batch)
        return [{"value": v, "key": keys[t]} for v, t in zip(values, batch.ticker.tolist(), strict=True)]

    def _queue(self, msgs: list[dict[str, Any]], batch: TickBatch) -> None:
        producer = self._producer
        limit = self.settings.buffer_messages
        pending = msgs
        while pending:
            room = limit - len(producer)
            if room <= 0:  # backpressure: serve callbacks until librdkafka has room
                self.metrics.buffer_full.inc()
                producer.poll(0.05)
                continue
            part, rest = (pending, []) if room >= len(pending) else (pending[:room], pending[room:])
            pending = self._produce_part(part) + rest
        producer.poll(0)
        self.produced += len(msgs)
        self.metrics.ticks_produced.inc(len(msgs))
        self.metrics.in_flight.set(len(producer))
        self._report_delivered()
        if len(batch):
            self.metrics.sim_time.set(int(batch.ts_ms[-1]))

    def _produce_part(self, part: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Queue ``part``; returns the records librdkafka refused (queue full), to be offered again in order."""
        try:
            n = self._producer.produce_batch(self.topic, part, on_delivery=self._on_delivery)
        except BufferError:
            n = 0
            for m in part:
                m["_error"] = "queue full"
        if n == len(part):
            return []
        refused = [m for m in part if "_error" in m]
        errors = [m.pop("_error") for m in refused]
        fatal = [(m, e) for m, e in zip(refused, errors, strict=True) if _not_queue_full(e)]
        if fatal:
            # not a full queue (fatal idempotence error, unknown topic, message too large): offering the same
            # records again would loop for ever
            first, err = fatal[0]
            msg = (
                f"{len(fatal)} ticks refused by the producer for topic {self.topic!r} (the first for ticker "
                f"{first.get('key', b'?').decode(errors='replace')!r}): {err.str()}"
            )
            raise SinkError(msg)
        if any(a is not b for a, b in zip(part[len(part) - len(refused) :], refused, strict=True)):
            # the message-count check above makes this rare (the byte bound was hit first): a refused tick
            # is retried after later ones of the same batch were queued, so its ticker's order may differ
            log.warning("%d ticks refused by a full queue between queued ones: retried, order may differ", len(refused))
        self.metrics.buffer_full.inc()
        self._producer.poll(0.05)
        return refused

    def _report_delivered(self) -> None:
        delivered = self.delivered
        if delivered > self._delivered_reported:
            self.metrics.ticks_delivered.inc(delivered - self._delivered_reported)
            self._delivered_reported = delivered

    def flush(self, timeout_s: float = 30.0) -> int:
        """Deliver what is queued; returns (and counts and logs) the messages that could not be delivered."""
        self.drain()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        remaining = int(self._producer.flush(timeout_s))  # blocks until the queue is empty or the timeout
        if remaining:
            self.failed += remaining
            self.metrics.delivery_errors.labels(reason="flush_timeout").inc(remaining)
            log.error("%d ticks still undelivered after a %.0f s flush: counted as failed", remaining, timeout_s)
            self._producer.purge()  # they are counted; purged ones must not be reported a second time
            self._purged = True
            self._producer.poll(0)
        self._report_delivered()
        self.metrics.in_flight.set(len(self._producer))
        log.info(
            "producer flushed: %d produced, %d delivered, %d failed",
            self.produced,
            self._delivered_reported,
            self.failed,
        )
        return remaining
