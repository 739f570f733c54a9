"""Bounded tail scan of the ticks topic: the last tick of each ticker, read backwards from the end.

Used by ``run`` to resume where the topic ends (see :mod:`simulator.resume` for what is done with the result).
Every partition is read backwards in chunks: for a partition with watermarks ``[low, high)`` the first chunk is
``[max(low, high - chunk), high)``, the next one ends where that one started, and so on. Chunks are read one
round at a time over all partitions at once, and scanning stops as soon as every ticker of the universe has
been found, when every partition has been read down to its start, or when ``max_messages`` have been scanned
(a ticker not found by then starts afresh; the caller logs it). Keys put each ticker on one partition, so with
a running history the first round usually finds every ticker.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, KafkaException, TopicPartition
from tenacity import Retrying, before_sleep_log, retry_if_exception, stop_after_delay, wait_exponential

from common.clock import iso_from_ms
from common.errors import SourceError
from simulator.metrics import SimulatorMetrics
from simulator.resume import LastTicks, ResumePlan, describe_gap, plan_resume
from simulator.settings import SimulatorSettings
from simulator.universe import Universe

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TailScan:
    """Result of :func:`scan_tail`: the last ticks found and how much was read."""

    last: LastTicks
    partitions: int
    capped: bool  # stopped by ``max_messages`` with tickers still missing and partitions left to read
    seconds: float


def default_chunk(n_tickers: int) -> int:
    """Messages per partition and round: two ticks of every ticker, within [1,000, 100,000]."""
    return max(1_000, min(100_000, 2 * n_tickers))


#: broker states that pass (a restart, a leader election, a slow reply) but that librdkafka does not flag as
#: ``retriable()`` on metadata and offset queries
_TRANSIENT_CODES = frozenset(
    {
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._TIMED_OUT,
    }
)


def _retriable(err: BaseException) -> bool:
    if not (isinstance(err, KafkaException) and err.args and isinstance(err.args[0], KafkaError)):
        return False
    error: KafkaError = err.args[0]
    return bool(error.retriable()) or error.code() in _TRANSIENT_CODES


def _topic_partitions(consumer: Consumer, topic: str, timeout_s: float) -> list[int] | None:
    """The topic's partition ids; None only if the topic does not exist or has no partitions. A transient error
    (leader not available after a broker restart) is retried: taking it for an empty topic would start a second
    history over the first."""

    def read() -> list[int] | None:
        meta = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
        if meta is None or (meta.error is None and not meta.partitions):
            return None
        if meta.error is not None:
            if meta.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                return None
            raise KafkaException(meta.error)
        return sorted(meta.partitions)

    try:
        return _retrying(timeout_s)(read)
    except KafkaException as err:
        msg = f"resume scan: cannot read the metadata of topic {topic!r}: {err}"
        raise SourceError(msg) from err


def _retrying(timeout_s: float) -> Retrying:
    """Retries of transient broker errors (:func:`_retriable`) for up to ``timeout_s``, logged before each wait."""
    return Retrying(
        retry=retry_if_exception(_retriable),
        stop=stop_after_delay(timeout_s),
        wait=wait_exponential(multiplier=0.1, max=2),
        before_sleep=before_sleep_log(log, logging.INFO),
        reraise=True,
    )


def _watermarks(consumer: Consumer, topic: str, partition: int, timeout_s: float) -> tuple[int, int]:
    """(low, high) of one partition; transient errors (a new topic's leader not elected yet) are retried."""
    try:
        where = TopicPartition(topic, partition)
        low, high = _retrying(timeout_s)(consumer.get_watermark_offsets, where, timeout=timeout_s)
    except KafkaException as err:
        msg = f"resume scan: cannot read the offsets of topic {topic!r} partition {partition}: {err}"
        raise SourceError(msg) from err
    return int(low), int(high)


def _read_ranges(
    consumer: Consumer, topic: str, ranges: dict[int, tuple[int, int]], timeout_s: float
) -> list[bytes | None]:
    """The values at offsets ``[lo, hi)`` of each partition in ``ranges`` (any order across partitions)."""
    consumer.assign([TopicPartition(topic, p, lo) for p, (lo, _) in ranges.items()])
    values: list[bytes | None] = []
    pending = set(ranges)
    deadline = time.monotonic() + timeout_s
    try:
        while pending:
            if time.monotonic() > deadline:
                where = ", ".join(f"partition {p} offsets [{ranges[p][0]}, {ranges[p][1]})" for p in sorted(pending))
                msg = f"resume scan of topic {topic!r} timed out after {timeout_s:.0f} s reading {where}"
                raise SourceError(msg)
            for m in consumer.consume(10_000, 0.5):
                p = m.partition()
                if p is None:  # every fetched message has one
                    continue
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        _done(consumer, topic, p, pending)
                        continue
                    msg = f"resume scan of topic {topic!r} partition {p!r} at offset {m.offset()!r} failed: {err}"
                    raise SourceError(msg)
                if p not in pending:
                    continue
                lo, hi = ranges[p]
                off = m.offset() or 0
                if lo <= off < hi:
                    values.append(m.value())
                if off >= hi - 1:
                    _done(consumer, topic, p, pending)
    finally:
        # a paused partition stays paused when assigned again (the next round reads the same partitions)
        consumer.resume([TopicPartition(topic, p) for p in ranges])
        consumer.unassign()
    return values


def _done(consumer: Consumer, topic: str, partition: int, pending: set[int]) -> None:
    """``partition`` has its range read: stop fetching it (the others may take a while longer)."""
    if partition in pending:
        pending.discard(partition)
        consumer.pause([TopicPartition(topic, partition)])


def _names(tickers: list[str], k: int = 10) -> str:
    """The first ``k`` of ``tickers`` for a log line."""
    return ", ".join(tickers[:k]) + (", ..." if len(tickers) > k else "")


def scan_tail(
    bootstrap: str,
    topic: str,
    symbols: Iterable[str],
    *,
    chunk: int,
    max_messages: int,
    timeout_s: float = 60.0,
) -> TailScan:
    """Last tick of each ticker of ``symbols`` in ``topic``, reading at most ``max_messages`` from the end.

    A topic that does not exist yet counts as empty. Kafka errors (other than the end of a partition) and a
    scan that makes no progress within ``timeout_s`` raise :class:`SourceError` naming topic, partition and offsets.
    """
    if chunk <= 0 or max_messages <= 0:
        msg = f"resume scan chunk and cap must be positive, got chunk={chunk!r}, max_messages={max_messages!r}"
        raise ValueError(msg)
    started = time.monotonic()
    last = LastTicks(frozenset(symbols))
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"simulator-resume-{uuid.uuid4().hex[:12]}",  # assign() only: never joins or commits
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",  # a chunk start deleted by retention meanwhile: read what is left
            "client.id": "simulator-resume",
        }
    )
    try:
        partitions = _topic_partitions(consumer, topic, timeout_s)
        if partitions is None:
            log.info("resume scan: topic %r does not exist yet or has no partitions", topic)
            return TailScan(last, 0, capped=False, seconds=time.monotonic() - started)
        bounds: dict[int, tuple[int, int]] = {}
        for p in partitions:
            low, high = _watermarks(consumer, topic, p, timeout_s)
            if high != OFFSET_INVALID and high > low:
                bounds[p] = (low, high)  # (start, end of what is still to read)
        while bounds and not last.complete and last.scanned < max_messages:
            size = max(1, min(chunk, (max_messages - last.scanned) // len(bounds)))
            ranges = {p: (max(low, end - size), end) for p, (low, end) in bounds.items()}
            last.add(_read_ranges(consumer, topic, ranges, timeout_s))
            bounds = {p: (low, ranges[p][0]) for p, (low, _) in bounds.items() if ranges[p][0] > low}
        capped = bool(bounds) and not last.complete
        return TailScan(last, len(partitions), capped=capped, seconds=time.monotonic() - started)
    finally:
        consumer.close()


def resume_from_topic(
    settings: SimulatorSettings,
    universe: Universe,
    now: int,
    max_gap_ms: int,
    metrics: SimulatorMetrics | None = None,
) -> ResumePlan | None:
    """Scan the ticks topic and plan the resume of ``run`` (None: no tick of the universe, backfill as usual).

    Logs what was found: tickers resumed and fresh, latest tick, gap to produce, undecodable messages, a scan
    cut short by ``SIM_RESUME_SCAN_MAX``, and a warning when the latest tick is ahead of the wall clock.
    """
    scan = scan_tail(
        settings.kafka_bootstrap_servers,
        settings.topic_ticks,
        universe.symbols,
        chunk=default_chunk(len(universe)),
        max_messages=settings.resume_scan_max,
    )
    last = scan.last
    log.info(
        "resume scan of %r: %d messages read back from %d partitions in %.2f s, %d of %d tickers found"
        " (%d undecodable skipped, %d of tickers outside the universe)",
        settings.topic_ticks,
        last.scanned,
        scan.partitions,
        scan.seconds,
        len(last.last),
        len(universe),
        last.undecodable,
        last.foreign,
    )
    if scan.capped:
        log.warning(
            "resume scan stopped at SIM_RESUME_SCAN_MAX=%d messages with %d tickers not found (%s): they start"
            " afresh at seq 0; raise SIM_RESUME_SCAN_MAX if they are deeper in the topic",
            settings.resume_scan_max,
            len(last.missing),
            _names(last.missing),
        )
    plan = plan_resume(last.last, universe.symbols, universe.start_prices, settings.tick_ms, now, max_gap_ms)
    if plan is None:
        log.info("no tick of the universe in %r: backfilling the configured window", settings.topic_ticks)
        return None
    if plan.future_ms:
        log.warning(
            "the latest tick in %r (%s) is %s ahead of the wall clock (a previous run with another clock?):"
            " resuming after it; nothing is produced until the clock reaches %s",
            settings.topic_ticks,
            iso_from_ms(plan.latest_ms),
            describe_gap(plan.future_ms),
            iso_from_ms(plan.start_ms),
        )
    log.info(
        "resuming %d tickers from the topic, latest tick %s; gap of %s to produce from %s",
        plan.found,
        iso_from_ms(plan.latest_ms),
        describe_gap(plan.gap_ms),
        iso_from_ms(plan.start_ms),
    )
    if plan.fresh:
        log.info(
            "%d tickers not in the topic start afresh from their configured price at seq 0: %s",
            len(plan.fresh),
            _names(plan.fresh),
        )
    if plan.skipped_ms:
        log.warning(
            "the latest tick is %s old, more than the backfill window (%s): %s of simulated time are skipped"
            " (prices and seq continue, the clock jumps)",
            describe_gap(plan.skipped_ms + plan.gap_ms),
            describe_gap(max_gap_ms),
            describe_gap(plan.skipped_ms),
        )
    if metrics is not None:
        metrics.resumed_tickers.set(plan.found)
        metrics.resume_gap.set(plan.gap_ms / 1000.0)
    return plan
