"""Readers of one assigned Kafka partition for :mod:`flows.sources`: native (the default) or confluent-kafka's.

Both make the same librdkafka call (``rd_kafka_consume_batch_queue`` on an assigned partition) and return the
same thing: the offsets, the values as ``bytes`` and, if asked, the ``(type, ms)`` timestamps of up to
``max_messages`` records, whether the end of the partition was reached, and the error records' ``(text, fatal)``.

* ``native`` (:mod:`kafkaread`, Rust over librdkafka built from source): copies the records out with the GIL
  released and builds only those lists.
* ``confluent``: confluent-kafka's ``Consumer.consume()``, which builds one ``Message`` object per record first
  (~0.6-0.9 us each here, most of the flow's thread reading a backlog). Kept as the fallback
  (``FLOW_KAFKA_READER=confluent``) and as the alternative the benchmark measures the native reader against in
  the same run (docs/benchmarks.md, session 17).
"""

from __future__ import annotations

import gc
from typing import Protocol

from confluent_kafka import Consumer, Message, TopicPartition
from confluent_kafka import KafkaError as ConfluentKafkaError
from confluent_kafka import KafkaException as ConfluentKafkaException

from flows.settings import ReaderKind

#: ``(offsets, values, (type, ms) timestamps or None, end of partition reached, [(error text, fatal)])``
Read = tuple[list[int], list[bytes], list[tuple[int, int]] | None, bool, list[tuple[str, bool]]]


class PartitionReader(Protocol):
    """What :class:`flows.sources.RawKafkaSource` needs of a reader of one partition."""

    def fetch_metadata(self, timeout_s: float) -> None:
        """Learn the partition leaders; RuntimeError if no broker answered within ``timeout_s``."""

    def assign(self, offset: int) -> None:
        """Start reading at ``offset`` (librdkafka's logical offsets too: -2 beginning, -1 end)."""

    def read(self, max_messages: int, timeout_s: float, stamps: bool = False) -> Read | None:
        """Up to ``max_messages`` records within ``timeout_s``; None if nothing at all came."""

    def watermarks(self) -> tuple[int, int] | None:
        """Low and high watermarks as of the last fetch (no request); None while unknown."""

    def close(self) -> None:
        """Leave the partition and free the consumer."""


def open_reader(kind: ReaderKind, config: dict[str, object], topic: str, partition: int) -> PartitionReader:
    """A reader of ``partition`` of ``topic`` with librdkafka settings ``config`` (not yet assigned)."""
    if kind == "native":
        from kafkaread import PartitionReader as NativeReader  # only where it reads: the fallback needs none

        return NativeReader(librdkafka_strings(config), topic, partition)
    if kind == "confluent":
        return ConfluentReader(config, topic, partition)
    msg = f"unknown Kafka reader {kind!r}: expected 'native' or 'confluent'"
    raise ValueError(msg)


def librdkafka_strings(config: dict[str, object]) -> dict[str, str]:
    """``config`` as librdkafka's string settings (booleans as ``true``/``false``, None left at librdkafka's
    default, as confluent-kafka does); callbacks are refused."""
    out: dict[str, str] = {}
    for key, value in config.items():
        if value is None:
            continue
        if callable(value):
            msg = f"Kafka setting {key!r}: the native reader takes no callbacks (use FLOW_KAFKA_READER=confluent)"
            raise ValueError(msg)
        out[key] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return out


class ConfluentReader:
    """:class:`PartitionReader` over confluent-kafka's ``Consumer``."""

    def __init__(self, config: dict[str, object], topic: str, partition: int) -> None:
        self._consumer = Consumer(config)
        self._topic = topic
        self._partition = partition
        self._tp = TopicPartition(topic, partition)

    def fetch_metadata(self, timeout_s: float) -> None:
        try:
            self._consumer.list_topics(self._topic, timeout=timeout_s)
        except ConfluentKafkaException as exc:
            msg = f"no metadata: {exc}"
            raise RuntimeError(msg) from exc

    def assign(self, offset: int) -> None:
        self._consumer.assign([TopicPartition(self._topic, self._partition, offset)])

    def read(self, max_messages: int, timeout_s: float, stamps: bool = False) -> Read | None:
        """Python's collector is paused while the ``Message`` objects live: they are tracked by it, so a batch
        of 200,000 set off generation-0 and -1 collections that walked them all, 14 % of the flow's thread
        reading a backlog (docs/benchmarks.md, session 17). They are gone, and their allocations uncounted again,
        before it resumes; what is returned holds only ints, bytes, strings and tuples."""
        collecting = gc.isenabled()
        gc.disable()
        msgs: list[Message] = []
        try:
            msgs = self._consumer.consume(max_messages, timeout_s)
            if not msgs:
                return None
            eof, errors = False, list[tuple[str, bool]]()
            if any(map(Message.error, msgs)):  # rare: end of partition or a broker error inside the batch
                msgs, eof, errors = _without_errors(msgs)
            # C-level map over the unbound accessors: ~3x cheaper per message than a Python loop
            offsets: list[int] = list(map(Message.offset, msgs))  # type: ignore[arg-type]  # never None when read
            values = [v if v is not None else b"" for v in map(Message.value, msgs)]
            times = list(map(Message.timestamp, msgs)) if stamps else None
            return offsets, values, times, eof, errors
        finally:
            del msgs
            if collecting:
                gc.enable()

    def watermarks(self) -> tuple[int, int] | None:
        try:
            low, high = self._consumer.get_watermark_offsets(self._tp, cached=True)
        except ConfluentKafkaException:
            return None
        return None if high < 0 else (low, high)

    def close(self) -> None:
        self._consumer.close()


def _without_errors(msgs: list[Message]) -> tuple[list[Message], bool, list[tuple[str, bool]]]:
    """The records before an end-of-partition marker, whether there was one, and the error records' texts."""
    kept: list[Message] = []
    errors: list[tuple[str, bool]] = []
    for msg in msgs:
        err = msg.error()
        if err is None:
            kept.append(msg)
        elif err.code() == ConfluentKafkaError._PARTITION_EOF:
            return kept, True, errors
        else:
            # confluent-kafka never flags a consumer record's error fatal: librdkafka's code says so
            errors.append((str(err), bool(err.fatal()) or err.code() == ConfluentKafkaError._FATAL))
    return kept, False, errors
