"""Log time: the clock that closes a quiet ticker's windows in live mode, read from Kafka instead of the wall.

Closing windows on the system clock made a final bar depend on *when* its ticks were processed: a replay after
a crash, or a flow that stalled behind a slow sink, judged the same ticks differently (docs/flows.md). The
bars flow therefore closes on the **log time** of each Kafka partition: the greatest record timestamp read
from it so far, in offset order (``CreateTime`` set by the producer, or ``LogAppendTime`` if the topic uses
it). A replay reads the same records in the same order and sees the same log time at every record; a stall
does not advance it; the time a process was down does not count.

* :class:`~flows.sources.RawKafkaSource` (``log_times``) stamps every value of a batch with its partition's
  log time (a running maximum, kept in the source's recovery snapshot next to the offset). While the
  partition is caught up and idle, its clock runs on at wall speed from the last records read, minus a
  margin (a record is assumed readable within that long of its timestamp), so a partition whose producer
  stopped still has its windows closed. The margin is ``idle_close_ms`` for producer timestamps
  (``CreateTime``: linger and delivery) and the smaller ``idle_close_append_ms`` for the broker's
  (``LogAppendTime``, how ``make up`` creates ``market-ticks``: only broker-to-consumer delivery). This is the
  one place the wall clock enters; a record delivered later than its margin after an idle spell is the
  remaining way for a replay to judge a tick differently. Producer silence counts as time passing: a producer
  that pauses for longer than grace + the margin inside a window (a historic backlog produced in two goes,
  say) has that window closed, and the ticks it writes for it afterwards are late -- use
  ``FLOW_MODE=backfill`` for history.
* :func:`log_columns` lines the log times up with the values of a step's batches; values without one (plain
  ``bytes`` in tests, a source without log times) get the time they were read.
* :class:`LogClock` items carry a partition's log time to every shard of the bars state, so tickers that
  sent nothing in a batch still have their windows closed (:class:`MarkerPlan` decides when).
"""

from __future__ import annotations

import operator
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from flows.decode import RawBatch

#: how far an idle, caught-up partition's clock stays behind the wall time elapsed since its last records were
#: read. A record is misjudged on replay only if it is delivered this much *later* (relative to its timestamp)
#: than the records read before it, after an idle spell; a larger margin delays the close of an idle
#: partition's windows by as much (docs/flows.md: 1 s added ~1 s; producer linger here is 5-50 ms)
DEFAULT_IDLE_CLOSE_MS = 150
#: the same margin for a partition whose records carry the broker's ``LogAppendTime``: a record's timestamp is
#: then when it became readable, so the margin only covers the fetch to the consumer (a few ms here, measured
#: by bench/bench_flow_latency.py) and the consumer's scheduling
DEFAULT_IDLE_CLOSE_APPEND_MS = 50
#: a partition's log time is sent to the shards without ticks of it at most this often (ms of log time)
MARKER_INTERVAL_MS = 25

_TIMESTAMP = operator.itemgetter(1)


class LogTimes(NamedTuple):
    """How a source partition keeps its log clock."""

    idle_close_ms: int = DEFAULT_IDLE_CLOSE_MS
    #: record timestamps later than now + this are ignored (a producer clock far ahead)
    max_future_ms: int = 60_000
    #: the margin when the partition's newest records carry ``LogAppendTime``
    idle_close_append_ms: int = DEFAULT_IDLE_CLOSE_APPEND_MS

    def idle_margin(self, append_time: bool) -> int:
        """How far an idle partition's clock stays behind the wall: by its newest records' timestamp type."""
        return self.idle_close_append_ms if append_time else self.idle_close_ms


def log_key(topic: str, partition: int) -> str:
    """The name of a partition's log clock (the Bytewax source partition key)."""
    return f"{topic}#{partition}"


class LogClock(tuple[str, int]):
    """``(log key, log time)``: the partition's log time after some batch, sent to a shard."""

    __slots__ = ()


def running_log_times(
    stamps: Sequence[tuple[int, int]], seed: int, not_after_ms: int
) -> tuple[npt.NDArray[np.int64], int]:
    """The log time at each record: the running maximum of the records' timestamps, starting at ``seed``.

    ``stamps`` are confluent-kafka's ``(type, timestamp)`` pairs; a missing timestamp (type 0, value <= 0) or
    one after ``not_after_ms`` (a producer clock far ahead would close every window of the partition) leaves
    the clock where it is. Returns the times and the clock after the last record.
    """
    times = np.fromiter(map(_TIMESTAMP, stamps), dtype=np.int64, count=len(stamps))
    times[times > not_after_ms] = seed
    np.maximum.accumulate(times, out=times)
    np.maximum(times, seed, out=times)
    return times, int(times[-1]) if len(times) else seed


def log_columns(
    items: Sequence[bytes | RawBatch], read_ms: int
) -> tuple[npt.NDArray[np.int64], list[str | None], dict[str, int]]:
    """Per value of ``items`` (flattened, in order): its log time and log key (None: ``read_ms`` stands in);
    and each log's time after these items (an empty :class:`RawBatch` contributes only that)."""
    from flows.decode import RawBatch

    parts: list[npt.NDArray[np.int64]] = []
    sources: list[str | None] = []
    ends: dict[str, int] = {}
    plain = 0
    for item in items:
        if not isinstance(item, RawBatch):
            plain += 1
            continue
        if plain:
            parts.append(np.full(plain, read_ms, dtype=np.int64))
            sources.extend([None] * plain)
            plain = 0
        n = len(item.values)
        if item.log_times is None and (n or item.log_end is None):  # values without log times
            parts.append(np.full(n, read_ms, dtype=np.int64))
            sources.extend([None] * n)
            continue
        key = log_key(item.topic, item.partition)
        if n:
            parts.append(np.asarray(item.log_times, dtype=np.int64))
            sources.extend([key] * n)
        end = item.log_end if item.log_end is not None else int(item.log_times[-1]) if n else None
        if end is not None and end > ends.get(key, end - 1):
            ends[key] = end
    if plain:
        parts.append(np.full(plain, read_ms, dtype=np.int64))
        sources.extend([None] * plain)
    times = np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)
    return times, sources, ends


class MarkerPlan:
    """Which shards get a partition's :class:`LogClock` after a batch: those with ticks of the batch always
    (free: it rides in their item), all others when the log moved :data:`MARKER_INTERVAL_MS` since they were
    last sent one. Per step closure; Bytewax workers of one process are threads, hence per-thread state."""

    __slots__ = ("_interval", "_local")

    def __init__(self, interval_ms: int = MARKER_INTERVAL_MS) -> None:
        self._interval = interval_ms
        self._local = threading.local()

    def broadcast(self, ends: dict[str, int]) -> list[LogClock]:
        """The clocks of ``ends`` due for every shard now (and remember that they were sent)."""
        sent: dict[str, int] | None = getattr(self._local, "sent", None)
        if sent is None:
            sent = self._local.sent = {}
        due: list[LogClock] = []
        for key, end in ends.items():
            last = sent.get(key)
            if last is None or end >= last + self._interval:
                sent[key] = end
                due.append(LogClock((key, end)))
        return due
