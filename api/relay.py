"""The Kafka relay: one confluent-kafka consumer per gateway process, in a background thread.

The thread polls ``market-ticks`` and ``market-bars`` in batches, validates each value against the contract,
serialises the client-facing frame once (WebSocket messages carry numbers, as the seed shows) and hands the
whole batch to the event loop with ``call_soon_threadsafe``. At most ``API_RELAY_MAX_PENDING`` batches wait
for the loop: beyond that the thread waits too (Kafka keeps the rest), so a gateway whose loop falls behind holds
bounded memory and shows it in its relay latency, instead of queueing hand-overs without end. It assigns
partitions itself at the current end of each partition (no consumer group, no rebalance delay, nothing
committed): a gateway relays what happens from now on, and the tick cache plus Redis cover the latest state.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from typing import Final

import msgspec
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from api.hub import ANOMALIES, BARS, CHANNEL_NAMES, INDICATORS, TICKS, Event, Hub, sub_key
from api.metrics import RELAY_BAD, RELAY_WAIT
from api.settings import ApiSettings
from common.errors import ContractError
from contracts.anomaly import ANOMALY_SCHEMA_VERSION, decode_anomaly
from contracts.bar import decode_bar
from contracts.codec import problem
from contracts.tick import decode_tick

log = logging.getLogger("api.relay")

METADATA_REFRESH_S: Final = 30.0


class TickData(msgspec.Struct, gc=False):
    """Seed tick payload: ``{ticker, price, volume, bid, ask, timestamp}``."""

    ticker: str
    price: float
    volume: int
    bid: float
    ask: float
    timestamp: int


class TickFrame(msgspec.Struct, gc=False):
    """``{"type":"tick","data":{...}}``."""

    type: str
    data: TickData


class BarData(msgspec.Struct, gc=False):
    """Bar payload (times in epoch ms)."""

    ticker: str
    timeframe: str
    start: int
    end: int
    open: float
    high: float
    low: float
    close: float
    volume: int
    vwap: float
    trades: int
    final: bool


class BarFrame(msgspec.Struct, gc=False):
    """``{"type":"bar","data":{...}}``."""

    type: str
    data: BarData


class IndicatorFrame(msgspec.Struct, gc=False):
    """``{"type":"indicators","data":{ticker, timeframe, timestamp, close, sma_20, ...}}``."""

    type: str
    data: dict[str, object]


_ENC = msgspec.json.Encoder()


def tick_event(raw: bytes) -> Event:
    """Validate one ``market-ticks`` value and build its frame; raises ContractError."""
    t = decode_tick(raw)
    frame = _ENC.encode(TickFrame("tick", TickData(t.ticker, t.price, t.volume, t.bid, t.ask, t.timestamp)))
    return Event(TICKS, f"t:{t.ticker}", "t:*", t.ticker, frame.decode(), t.timestamp)


def bar_events(raw: bytes) -> list[Event]:
    """Validate one ``market-bars`` value; a bar event, plus an indicators event for final bars."""
    b = decode_bar(raw)
    data = BarData(
        b.ticker, b.timeframe, b.start, b.end, b.open, b.high, b.low, b.close, b.volume, b.vwap, b.trades, b.final
    )
    frame = _ENC.encode(BarFrame("bar", data)).decode()
    out = [
        Event(BARS, sub_key(BARS, b.ticker, b.timeframe), sub_key(BARS, "*", b.timeframe), b.ticker, frame, b.last_tick)
    ]
    if b.final and b.indicators is not None:
        values: dict[str, object] = {
            "ticker": b.ticker,
            "timeframe": b.timeframe,
            "timestamp": b.start,
            "close": b.close,
        }
        values.update(msgspec.structs.asdict(b.indicators))
        ind = _ENC.encode(IndicatorFrame("indicators", values)).decode()
        out.append(
            Event(
                INDICATORS,
                sub_key(INDICATORS, b.ticker, b.timeframe),
                sub_key(INDICATORS, "*", b.timeframe),
                b.ticker,
                ind,
                b.last_tick,
            )
        )
    return out


def anomaly_event(raw: bytes) -> Event:
    """Validate one ``alerts`` value; its frame is ``{"type":"anomaly","data":<the anomaly.v1 message>}``.

    The event time is ``detected_at`` (when the anomalies flow found it), not ``time`` (the start of the bar, a
    bar length and the close delay earlier), so ``end_to_end_latency_seconds{path="ws_anomalies"}`` measures the
    alert's way from detection to the gateway.
    """
    a = decode_anomaly(raw)
    try:  # msgspec skips unknown fields without checking their UTF-8; the frame carries the raw message
        text = raw.strip().decode()
    except UnicodeDecodeError as err:
        raise ContractError(problem(err, "anomaly", ANOMALY_SCHEMA_VERSION)) from err
    frame = '{"type":"anomaly","data":' + text + "}"
    return Event(ANOMALIES, sub_key(ANOMALIES, a.ticker), sub_key(ANOMALIES, "*"), a.ticker, frame, a.detected_at)


class KafkaRelay:
    """Owns the consumer thread; :meth:`start` and :meth:`stop` are called by the lifespan."""

    def __init__(self, settings: ApiSettings, hub: Hub, loop: asyncio.AbstractEventLoop) -> None:
        self.settings = settings
        self.hub = hub
        self.loop = loop
        self.topics = {settings.topic_ticks: TICKS, settings.topic_bars: BARS, settings.topic_alerts: ANOMALIES}
        #: relayed once they exist (the anomalies flow may not be deployed); re-checked at each metadata refresh
        self.optional_topics = {settings.topic_alerts}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.assigned = threading.Event()
        self.last_error: str | None = None
        #: one slot per batch handed to the loop and not yet published
        self._pending = threading.BoundedSemaphore(settings.relay_max_pending)

    def start(self) -> None:
        """Start the consumer thread."""
        self._thread = threading.Thread(target=self._run, name="kafka-relay", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Ask the thread to finish and wait for it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _consumer(self) -> Consumer:
        return Consumer(
            {
                "bootstrap.servers": self.settings.kafka_bootstrap_servers,
                "group.id": f"api-relay-{uuid.uuid4().hex[:12]}",  # required by librdkafka; never joined
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "fetch.wait.max.ms": 10,
                "socket.nagle.disable": True,
                "client.id": "md-api-relay",
            }
        )

    def _assign(self, consumer: Consumer, known: set[tuple[str, int]]) -> set[tuple[str, int]]:
        """Assign every partition not yet assigned, starting at its current high watermark."""
        fresh: list[TopicPartition] = []
        for topic in self.topics:
            meta = consumer.list_topics(topic, timeout=5.0).topics.get(topic)
            if meta is None or meta.error is not None:
                if topic in self.optional_topics:
                    continue
                msg = f"topic {topic!r} unavailable: {None if meta is None else meta.error}"
                raise KafkaException(msg)
            for p in meta.partitions:
                if (topic, p) in known:
                    continue
                _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=5.0, cached=False)
                fresh.append(TopicPartition(topic, p, high))
        if fresh:
            consumer.incremental_assign(fresh)
            log.info("relay assigned %d partitions", len(fresh))
        return known | {(tp.topic, tp.partition) for tp in fresh}

    def _run(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                consumer = self._consumer()
            except KafkaException as err:
                log.error("relay consumer cannot be created: %s", err)
                self.last_error = str(err)
                return
            try:
                assigned = self._assign(consumer, set())
                self.assigned.set()
                self.last_error = None
                backoff = 0.5
                self._loop(consumer, assigned)
            except Exception as err:  # the relay must outlive any broker or client error
                self.last_error = str(err)
                log.warning("relay cannot consume, retrying in %.1f s: %s", backoff, err)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)
            finally:
                consumer.close()

    def _loop(self, consumer: Consumer, assigned: set[tuple[str, int]]) -> None:
        refresh_at = time.monotonic() + METADATA_REFRESH_S
        batch, poll_s = self.settings.relay_batch, self.settings.relay_poll_s
        coalesce_s = self.settings.relay_coalesce_ms / 1000.0
        while not self._stop.is_set():
            msgs = _next_messages(consumer, batch, poll_s, coalesce_s)
            if msgs:
                events = self._events(msgs)
                if events and not self.hand_over(events):
                    return  # stopping
            if time.monotonic() > refresh_at:
                refresh_at = time.monotonic() + METADATA_REFRESH_S
                assigned = self._assign(consumer, assigned)

    def hand_over(self, events: list[Event]) -> bool:
        """Queue ``events`` for the hub on the loop; waits while ``relay_max_pending`` batches are still queued
        there. False, with nothing queued, if the relay is stopped while waiting."""
        if not self._pending.acquire(blocking=False):
            started = time.monotonic()
            while not (taken := self._pending.acquire(timeout=0.05)) and not self._stop.is_set():
                pass
            RELAY_WAIT.inc(time.monotonic() - started)
            if not taken:
                return False
        try:
            self.loop.call_soon_threadsafe(self._publish, events)
        except RuntimeError:  # the loop is closed: the gateway is shutting down
            self._pending.release()
            return False
        return True

    def _publish(self, events: list[Event]) -> None:
        try:
            self.hub.publish(events)
        finally:
            self._pending.release()

    def _events(self, msgs: list[Message]) -> list[Event]:
        events: list[Event] = []
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("relay consume error: %s", err)
                continue
            value = m.value()
            channel = self.topics.get(m.topic() or "")
            if value is None or channel is None:
                continue
            try:
                if channel == TICKS:
                    events.append(tick_event(value))
                elif channel == ANOMALIES:
                    events.append(anomaly_event(value))
                else:
                    events.extend(bar_events(value))
            except ContractError as exc:
                RELAY_BAD.labels(CHANNEL_NAMES[channel]).inc()
                log.warning("skipping bad message %s[%s]@%s: %s", m.topic(), m.partition(), m.offset(), exc)
        return events


def _next_messages(consumer: Consumer, batch: int, poll_s: float, coalesce_s: float = 0.0) -> list[Message]:
    """Up to ``batch`` messages: those queued now plus those arriving within ``coalesce_s``; when none is queued,
    the wait for the first is at most ``poll_s``.

    ``consume(n, timeout)`` alone waits for ``n`` messages or the whole timeout, so at ordinary tick rates every
    relayed tick sat up to ``poll_s`` in the consumer queue. Here an empty queue waits in ``poll``, which returns
    with the first message to arrive; ``coalesce_s`` then collects what follows it for a moment (the other
    partitions of the same fetch, the rest of a producer burst), so the event loop is not woken for every
    fragment: each wake-up costs a socket write per client.
    """
    msgs = consumer.consume(num_messages=batch, timeout=0)
    if not msgs:
        first = consumer.poll(poll_s)
        if first is None:
            return []
        msgs = [first]
    if coalesce_s > 0 and len(msgs) < batch:
        msgs.extend(consumer.consume(num_messages=batch - len(msgs), timeout=coalesce_s))
    return msgs
