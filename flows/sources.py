"""A lean Kafka source for Bytewax: raw values in batches, offsets kept in Bytewax recovery snapshots.

Bytewax's stock ``KafkaSource`` builds a dataclass per message, which caps a process near 0.35 M msgs/s
(GUIDE). This source hands the dataflow one :class:`RawBatch` per poll — the partition's values as a list of
bytes plus their offsets — so decoding can happen for the whole batch at once; by default it reads them with
:mod:`kafkaread`, which makes no per-record Python object at all (:mod:`flows.kafka_readers`). Each Kafka
partition is one Bytewax source partition; its snapshot is the next offset to read, so a restarted flow resumes
exactly where its last snapshot was taken (at-least-once since then; the sinks are idempotent).

With ``log_times`` (the bars flow in live mode) each batch also carries the partition's log time at every
value, and an idle, caught-up partition emits empty batches that only move its clock (:mod:`flows.logclock`);
the snapshot is then ``(next offset, log time)``.
"""

from __future__ import annotations

import logging
from datetime import datetime

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import OFFSET_BEGINNING, TIMESTAMP_LOG_APPEND_TIME
from confluent_kafka.admin import AdminClient

from common.clock import now_ms
from common.errors import SourceError
from common.heap import release_free_memory
from flows.decode import RawBatch
from flows.kafka_readers import open_reader
from flows.logclock import MARKER_INTERVAL_MS, LogTimes, running_log_times
from flows.observe import CONSUMER_LAG, IDLE_OVERRUN, SOURCE_OFFSET, SOURCE_OFFSET_GAP
from flows.settings import DEFAULT_BATCH_SIZE, DEFAULT_FETCH_BYTES, ReaderKind

log = logging.getLogger(__name__)


#: bytes fetched per partition and request unless a flow asks otherwise (librdkafka's default is 1 MiB)
MAX_PARTITION_FETCH_BYTES = DEFAULT_FETCH_BYTES["bars"]

#: how long librdkafka waits before fetching again once a partition's prefetch queue is over its thresholds, for
#: fetches smaller than ``MAX_PARTITION_FETCH_BYTES``: its default of 1 s stalled a backlog read at 4 MiB fetches
#: to 0.27 M msgs/s, 2.5x slower than 10 ms. At 16 MiB the default is kept: 10 ms read no faster into the sinks
#: and held 0.2-0.3 GB more (docs/benchmarks.md, session 15)
FETCH_QUEUE_BACKOFF_MS = 10

#: values read since the last heap trim after which the first empty poll (caught up) trims the heap: catching up
#: leaves the fetched messages' freed pages resident in librdkafka's malloc arenas (:mod:`common.heap`)
TRIM_AFTER_VALUES = 1_000_000


#: how long a partition waits at start for the topic's metadata (then starts without it)
_METADATA_TIMEOUT_S = 10.0

#: a source partition's snapshot: the next offset, or ``(next offset, log time)`` with log times
SourceState = int | tuple[int, int]


class _RawKafkaPartition(StatefulSourcePartition[RawBatch, SourceState]):
    def __init__(
        self,
        config: dict[str, object],
        topic: str,
        partition: int,
        state: SourceState,
        batch_size: int,
        poll_s: float,
        log_times: LogTimes | None = None,
        reader: ReaderKind = "native",
    ) -> None:
        self._topic = topic
        self._partition = partition
        self._offset, self._log = state if isinstance(state, tuple) else (state, -1)
        self._batch_size = batch_size
        self._poll_s = poll_s
        self._log_times = log_times
        #: the log time and wall time when records were last read: an idle partition's clock runs on from there
        #: at wall speed (the time a process was down does not count: it restarts here)
        self._read_log, self._read_wall = self._log, now_ms()
        #: the newest records carry the broker's LogAppendTime (a smaller idle margin); unknown until read
        self._append_time = False
        #: the clock the idle margin advanced to since records were last read (None: records read since)
        self._idle_log: int | None = None
        self._eof = False
        #: values read since the heap was last trimmed
        self._untrimmed = 0
        self._labels = (topic, str(partition))
        SOURCE_OFFSET_GAP.labels(*self._labels)  # exported as 0 from the start, like the next one
        if log_times is not None:
            IDLE_OVERRUN.labels(*self._labels)  # (a rate from the first scrape)
        self._reader = open_reader(reader, config, topic, partition)
        self._know_leader(config)
        self._reader.assign(self._offset)

    def _know_leader(self, config: dict[str, object]) -> None:
        """Ask for the topic's metadata before assigning: a partition assigned before librdkafka knows its leader
        waits for a 500 ms retry timer before its first fetch, so every restart (and each partition of a backlog
        read) started half a second late (docs/benchmarks.md, session 16). Best effort: without an answer the
        consumer finds the leader itself, later."""
        try:
            self._reader.fetch_metadata(_METADATA_TIMEOUT_S)
        except RuntimeError as exc:
            log.warning("no metadata for %r from %s yet (%s): reading starts later", self._topic,
                        config.get("bootstrap.servers"), exc)  # fmt: skip

    def _note_lag(self) -> None:
        """``kafka_consumer_lag``: the records between the next offset and the high watermark of the last fetch."""
        marks = self._reader.watermarks()
        if marks is not None and self._offset >= 0:
            CONSUMER_LAG.labels(*self._labels).set(max(0, marks[1] - self._offset))

    def next_batch(self) -> list[RawBatch]:
        if self._eof:
            raise StopIteration
        read = self._reader.read(self._batch_size, self._poll_s, self._log_times is not None)
        if read is None:
            self._note_lag()
            if self._untrimmed >= TRIM_AFTER_VALUES:
                self._untrimmed = 0
                release_free_memory()
            return self._idle()
        offsets, values, stamps, eof, errors = read
        for text, fatal in errors:  # rare: librdkafka retries transient broker errors by itself
            message = f"error reading {self._topic!r} partition {self._partition}: {text}"
            if fatal:
                raise SourceError(message)
            log.warning("%s", message)
        self._eof = eof
        if not offsets:
            return []
        self._untrimmed += len(offsets)
        if offsets[0] > self._offset >= 0:
            self._count_gap(offsets[0])
        self._offset = offsets[-1] + 1
        SOURCE_OFFSET.labels(*self._labels).set(self._offset)
        self._note_lag()
        if self._log_times is None or stamps is None:
            return [RawBatch(self._topic, self._partition, offsets, values)]
        self._append_time = stamps[-1][0] == TIMESTAMP_LOG_APPEND_TIME
        if self._idle_log is not None:
            self._check_overrun(stamps, self._idle_log, self._log_times.idle_margin(self._append_time))
        now = now_ms()
        times, self._log = running_log_times(stamps, self._log, now + self._log_times.max_future_ms)
        self._read_log, self._read_wall = self._log, now
        return [RawBatch(self._topic, self._partition, offsets, values, times, self._log)]

    def _count_gap(self, first: int) -> None:
        """The batch starts after the offset this partition was to read next: retention deleted the records in
        between before they were read (``auto.offset.reset`` moved the position to the oldest record kept). Our
        producers are not transactional; a transactional one's markers and aborted records would show here too."""
        SOURCE_OFFSET_GAP.labels(*self._labels).inc(first - self._offset)
        log.warning(
            "%s[%d]: offsets %d-%d were not delivered (deleted by retention before this flow read them?); reading "
            "resumes at %d",
            self._topic, self._partition, self._offset, first - 1, first,
        )  # fmt: skip

    def _idle(self) -> list[RawBatch]:
        """Nothing new: if the partition is caught up, let its log clock run on at wall speed from the last
        records read, minus the idle margin of their timestamp type (throttled)."""
        if self._log_times is None or self._read_log < 0:
            return []
        margin = self._log_times.idle_margin(self._append_time)
        target = self._read_log + now_ms() - self._read_wall - margin
        if target < self._log + MARKER_INTERVAL_MS:
            return []
        marks = self._reader.watermarks()
        if marks is None:
            return []
        low, high = marks
        caught_up = self._offset >= high if self._offset >= 0 else 0 <= high <= low
        if not caught_up:
            return []
        self._log = self._idle_log = target
        return [RawBatch(self._topic, self._partition, [], [], None, target)]

    def _check_overrun(self, stamps: list[tuple[int, int]], idle_log: int, margin: int) -> None:
        """Count (and log) records stamped before the clock the idle margin advanced to while they were in flight:
        delivered later than the margin, they were judged at that clock (a replay may judge them differently)."""
        self._idle_log = None
        behind = [ts for _, ts in stamps if 0 < ts < idle_log]
        if behind:
            IDLE_OVERRUN.labels(*self._labels).inc(len(behind))
            log.warning(
                "%s[%d]: %d records arrived up to %d ms behind the idle clock (margin %d ms): raise the idle margin "
                "if this repeats (docs/flows.md, An idle partition)",
                self._topic, self._partition, len(behind), idle_log - min(behind), margin,
            )  # fmt: skip

    def next_awake(self) -> datetime | None:
        return None  # consume() above already waits up to poll_s for data

    def snapshot(self) -> SourceState:
        return self._offset if self._log_times is None else (self._offset, self._log)

    def close(self) -> None:
        self._reader.close()


class RawKafkaSource(FixedPartitionedSource[RawBatch, SourceState]):
    """Every partition of ``topic`` as a Bytewax source partition yielding :class:`RawBatch` items."""

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        *,
        tail: bool = True,
        batch_size: int = DEFAULT_BATCH_SIZE,
        poll_s: float = 0.01,
        group_id: str = "bytewax-managed-offsets",
        extra_config: dict[str, object] | None = None,
        log_times: LogTimes | None = None,
        fetch_bytes: int = MAX_PARTITION_FETCH_BYTES,
        reader: ReaderKind = "native",
    ) -> None:
        """``group_id`` only names the consumer on the broker: partitions are assigned, offsets never committed.
        ``log_times``: stamp values with their partition's log time and keep the idle clock (live bars).
        ``fetch_bytes``: bytes per partition and fetch request (throughput of a backlog read vs memory).
        ``reader``: :mod:`flows.kafka_readers` (``native``, or confluent-kafka's ``Consumer``)."""
        self._bootstrap = bootstrap_servers
        self._topic = topic
        self._tail = tail
        self._batch_size = batch_size
        self._poll_s = poll_s
        self._group_id = group_id
        self._extra = extra_config or {}
        self._log_times = log_times
        self._fetch_bytes = fetch_bytes
        self._reader = reader

    def list_parts(self) -> list[str]:
        admin = AdminClient({"bootstrap.servers": self._bootstrap})
        meta = admin.list_topics(self._topic, timeout=30).topics.get(self._topic)
        if meta is None or meta.error is not None or not meta.partitions:
            detail = meta.error.str() if meta is not None and meta.error is not None else "no partitions"
            msg = f"cannot read Kafka topic {self._topic!r} on {self._bootstrap}: {detail}"
            raise SourceError(msg)
        return [f"{self._topic}#{p}" for p in sorted(meta.partitions)]

    def build_part(self, step_id: str, for_part: str, resume_state: SourceState | None) -> _RawKafkaPartition:
        topic, _, part = for_part.rpartition("#")
        if topic != self._topic:
            msg = f"step {step_id!r}: snapshot is for topic {topic!r}, this flow reads {self._topic!r}"
            raise SourceError(msg)
        config: dict[str, object] = {
            "bootstrap.servers": self._bootstrap,
            "group.id": self._group_id,  # offsets live in Bytewax snapshots, never committed
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": not self._tail,
            # a snapshot's offset that retention deleted while the flow was down: read from the oldest record kept
            # (counted as a gap), not from the end -- librdkafka's default would skip every record still there
            "auto.offset.reset": "earliest",
            "fetch.min.bytes": 1,
            "fetch.wait.max.ms": 50,
            # librdkafka's 1 MiB per partition and fetch capped a backlog read near 0.33 M msgs/s here (fetch
            # round trips, not CPU); 16 MiB read the same backlog at 0.52 M/s (docs/benchmarks.md)
            "max.partition.fetch.bytes": self._fetch_bytes,
            "queued.max.messages.kbytes": 262_144,
        }
        if self._fetch_bytes < MAX_PARTITION_FETCH_BYTES:
            config["fetch.queue.backoff.ms"] = FETCH_QUEUE_BACKOFF_MS
        config.update(self._extra)
        state = OFFSET_BEGINNING if resume_state is None else resume_state
        return _RawKafkaPartition(
            config, topic, int(part), state, self._batch_size, self._poll_s, self._log_times, self._reader
        )
