"""Idempotent sinks of the flows: PostgreSQL (bars; the base of the tick archive), Redis, Kafka (bars, dead letters).

Every sink tolerates replays after a crash (Bytewax resumes from its last snapshot, so a batch may be written
again): ticks are stored once per (ticker, time, seq) (:mod:`flows.tick_archive_sink`), bars upserted on
(ticker, timeframe, time), Redis keys overwritten, and Kafka consumers key on (ticker, timeframe, start).
Transient failures are retried with exponential backoff; a write that still fails raises :class:`SinkError`,
which stops the process so the supervisor restarts it from the last snapshot — nothing is silently dropped.
"""

from __future__ import annotations

import collections
import functools
import itertools
import logging
import operator
from abc import abstractmethod
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, Final, NamedTuple, TypeVar

import msgspec
import psycopg
import redis
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from confluent_kafka import Producer
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from common.clock import from_ms
from common.errors import SinkError
from common.settings import SharedSettings
from contracts import redis_keys
from contracts.bar import INDICATOR_NAMES, Bar, encode_bar
from flows.decode import DeadLetter, WireTick
from flows.observe import (
    DEAD_LETTERS,
    FINAL_BAR_LATENCY_TIMEFRAME,
    PATH_FINAL_BAR,
    PATH_LIVE_BAR,
    SINK_ERRORS,
    SINK_ROWS,
    SINK_SECONDS,
    observe_latency,
)

log = logging.getLogger(__name__)
X = TypeVar("X")

_TRANSIENT = (psycopg.OperationalError, redis.ConnectionError, redis.TimeoutError, BufferError, TimeoutError)


def _retrying(sink: str) -> Callable[[Callable[..., X]], Callable[..., X]]:
    """Retry transient failures with exponential backoff, 8 attempts in all, then re-raise.

    Every failed attempt is counted in ``flow_sink_errors_total``: the retried ones, the last one after which the
    flow stops, and a failure that is not retried (a :class:`SinkError`). Counting in tenacity's ``before_sleep``
    missed the last attempt, so a sink that gave up after 8 failures reported 7 and a refused write none.
    """

    def decorate(fn: Callable[..., X]) -> Callable[..., X]:
        @functools.wraps(fn)
        def attempt(*args: Any, **kwargs: Any) -> X:
            try:
                return fn(*args, **kwargs)
            except Exception:
                # the partition's own name (``postgres_market_bars``), as on the other sink metrics; ``sink`` otherwise
                SINK_ERRORS.labels(getattr(args[0], "_name", sink) if args else sink).inc()
                raise

        return retry(
            retry=retry_if_exception_type(_TRANSIENT),
            wait=wait_exponential(multiplier=0.2, max=10),
            stop=stop_after_attempt(8),
            reraise=True,
        )(attempt)

    return decorate


class _Partitions:
    """Creates native range partitions ahead of writes (no-op on TimescaleDB, which chunks by itself)."""

    def __init__(self, conn: psycopg.Connection[Any], table: str, monthly: bool) -> None:
        row = conn.execute("SELECT to_regproc('md_ensure_partitions') IS NOT NULL").fetchone()
        self._native = bool(row and row[0])
        self._table = table
        self._monthly = monthly
        self._covered: set[int] = set()

    def _period(self, ms: int) -> int:
        if not self._monthly:
            return ms // 86_400_000
        dt = from_ms(ms)
        return dt.year * 12 + dt.month - 1

    def _start(self, period: int) -> datetime:
        if not self._monthly:
            return from_ms(period * 86_400_000)
        return datetime(period // 12, period % 12 + 1, 1, tzinfo=UTC)

    def ensure(self, conn: psycopg.Connection[Any], times_ms: Iterable[int]) -> None:
        """Make sure a partition exists for the day (month) of each of ``times_ms``.

        Only the periods that hold rows: a batch with one tick stamped decades away from the others needs two
        partitions, not one per day in between (which once meant ~100,000 partitions in one transaction).
        """
        if not self._native:
            return
        wanted = {self._period(int(t)) for t in times_ms} - self._covered
        if not wanted:
            return
        interval = "1 month" if self._monthly else "1 day"
        # Its own short transaction, serialised across processes by an advisory lock: two flow processes
        # creating the same partition at once would otherwise race (CREATE TABLE IF NOT EXISTS is not atomic
        # and fails with DuplicateTable), and holding the parent's lock until the batch commits would block
        # every other writer for the whole batch.
        conn.commit()
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('md_ensure_partitions'), hashtext(%s))", (self._table,))
        for first, last in _runs(sorted(wanted)):
            conn.execute(
                "SELECT md_ensure_partitions(%s, %s, %s, %s::interval)",
                (self._table, self._start(first), self._start(last + 1), interval),
            )
        conn.commit()
        self._covered |= wanted


def _runs(periods: list[int]) -> list[tuple[int, int]]:
    """Consecutive runs of sorted distinct integers as ``(first, last)`` pairs: ``[1, 2, 3, 7]`` -> (1, 3), (7, 7)."""
    runs: list[tuple[int, int]] = []
    for p in periods:
        if runs and p == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], p)
        else:
            runs.append((p, p))
    return runs


# --------------------------------------------------------------------------- PostgreSQL


def staging_table(name: str, body: str, columns: str) -> tuple[str, str]:
    """SQL creating a session-temporary staging table (``body``: its columns) emptied at every commit, and SQL
    of a binary ``COPY`` of ``columns`` into it. Partitions create it in ``setup_sql`` (again on reconnect)."""
    return (
        f"CREATE TEMP TABLE IF NOT EXISTS {name} ({body}) ON COMMIT DELETE ROWS",
        f"COPY {name} ({columns}) FROM STDIN (FORMAT binary)",
    )


class _PostgresPartition(StatelessSinkPartition[X]):
    """One connection per worker; each batch is one transaction, retried on connection loss.

    Subclasses say which rows a batch holds (:meth:`rows`), their event-time range (for native partitions) and
    how to write them (:meth:`write_rows`); any other database error is a :class:`SinkError` naming the table.
    """

    table = ""
    monthly = False
    setup_sql: str | None = None

    def __init__(self, database_url: str) -> None:
        self._url = database_url
        self._name = f"postgres_{self.table}"
        SINK_ERRORS.labels(self._name)  # exported as 0 from the start, not from the first error
        self._conn = self._first_connect()
        self._parts = _Partitions(self._conn, self.table, monthly=self.monthly)

    @_retrying("postgres")
    def _first_connect(self) -> psycopg.Connection[Any]:
        """:meth:`_connect` when the partition is built, retried on connection loss like every write."""
        return self._connect()

    def _connect(self) -> psycopg.Connection[Any]:
        conn = psycopg.connect(self._url)
        if self.setup_sql:
            try:
                conn.execute(self.setup_sql)
                conn.commit()
            except psycopg.OperationalError:
                conn.close()
                raise  # the callers retry connection loss
            except psycopg.Error as err:  # e.g. no TEMP privilege: retrying cannot help
                conn.close()
                msg = f"session setup for {self.table} failed: {err}"
                raise SinkError(msg) from err
        return conn

    @abstractmethod
    def rows(self, items: list[X]) -> list[Any]:
        """The rows a batch of items writes (may be empty)."""

    @abstractmethod
    def partition_times(self, rows: list[Any]) -> Iterable[int]:
        """Event times (epoch ms) of ``rows`` whose partitions must exist: every row's, or one per day."""

    @abstractmethod
    def write_rows(self, cur: psycopg.Cursor[Any], rows: list[Any]) -> None:
        """Write ``rows`` inside the batch's transaction."""

    def row_count(self, rows: list[Any]) -> int:
        """How many table rows ``rows`` holds (one per element unless a subclass packs them, e.g. columns)."""
        return len(rows)

    def write_batch(self, items: list[X]) -> None:
        rows = self.rows(items)
        if not rows:
            return
        with SINK_SECONDS.labels(self._name).time():
            self._write(rows)
        SINK_ROWS.labels(self._name).inc(self.row_count(rows))

    @_retrying("postgres")
    def _write(self, rows: list[Any]) -> None:
        try:
            if self._conn.closed:
                self._conn = self._connect()
            # ensure() commits its own short transaction: before write_rows, so that commit cannot empty a
            # staging table (ON COMMIT DELETE ROWS) the batch has filled
            self._parts.ensure(self._conn, self.partition_times(rows))
            with self._conn.cursor() as cur:
                self.write_rows(cur, rows)
            self._conn.commit()
        except psycopg.OperationalError:
            self._conn.close()  # reconnect on the retry
            raise
        except (psycopg.Error, OverflowError, ValueError, TypeError) as err:  # the latter: a value COPY cannot dump
            if not self._conn.closed:
                self._conn.rollback()
            msg = f"writing {self.row_count(rows)} rows to {self.table} failed: {err}"
            raise SinkError(msg) from err

    def close(self) -> None:
        self._conn.close()


# --------------------------------------------------------------------------- PostgreSQL: bars

#: ``market_bars`` columns with their type in the staging table (binary COPY needs the exact types of the values of
#: :func:`stage_row`). Times travel as epoch ms and ``trades`` as int8: the server converts and range-checks them
#: (the client's int4 dumper would wrap an out-of-range value silently), and no datetime is built per bar.
_BAR_STAGE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("time", "int8"), ("ticker", "text"), ("timeframe", "text"), ("open", "float8"), ("high", "float8"),
    ("low", "float8"), ("close", "float8"), ("volume", "int8"), ("vwap", "float8"), ("trades", "int8"),
    ("first_tick_time", "int8"), ("last_tick_time", "int8"), *((name, "float8") for name in INDICATOR_NAMES),
)  # fmt: skip
_BAR_NAMES = [name for name, _ in _BAR_STAGE_COLUMNS]
_BAR_STAGE_TYPES = [kind for _, kind in _BAR_STAGE_COLUMNS]
_BAR_COLUMNS = ", ".join(_BAR_NAMES)
_NO_INDICATORS: tuple[None, ...] = (None,) * len(INDICATOR_NAMES)
_ROUNDED = {"open", "high", "low", "close"}  # numeric(14, 2): the contract's prices, rounded to the cent in SQL
_TIMES = {"time", "first_tick_time", "last_tick_time"}
#: each staged column as the value stored in ``market_bars`` (exact: ms * 1000 us stays far below 2**53)
BAR_VALUES = [
    f"round({c}::numeric, 2)" if c in _ROUNDED else f"to_timestamp(0) + {c} * interval '1 millisecond'"
    if c in _TIMES else c
    for c in _BAR_NAMES
]  # fmt: skip
_BAR_STAGE, _COPY_BARS = staging_table(
    "md_bars_stage", ", ".join(f"{name} {kind}" for name, kind in _BAR_STAGE_COLUMNS), _BAR_COLUMNS
)
# built from the constant column lists above (the contract's indicator fields), never from input
BAR_CONFLICT = (
    "ON CONFLICT (ticker, timeframe, time) DO UPDATE SET "
    + ", ".join(f"{c} = EXCLUDED.{c}" for c in _BAR_NAMES[3:])
    + ", updated_at = now()"
)
_UPSERT_BARS = (
    f"INSERT INTO market_bars ({_BAR_COLUMNS}, updated_at) SELECT {', '.join(BAR_VALUES)}, now() "  # noqa: S608
    f"FROM md_bars_stage {BAR_CONFLICT}"
)


def stage_row(bar: Bar) -> tuple[Any, ...]:
    """The staging-table row of a final bar (:data:`_BAR_STAGE_COLUMNS`: times in epoch ms)."""
    ind = bar.indicators
    values = _NO_INDICATORS if ind is None else msgspec.structs.astuple(ind)
    return (
        bar.start, bar.ticker, bar.timeframe, bar.open, bar.high, bar.low, bar.close, bar.volume, bar.vwap,
        bar.trades, bar.first_tick, bar.last_tick, *values,
    )  # fmt: skip


class _BarStorePartition(_PostgresPartition[Bar]):
    """Final bars by binary ``COPY`` into a session-temporary staging table, then one upsert from it.

    One statement for the whole batch: the upsert as one ``INSERT ... VALUES`` per bar cost ~2.5x the wall time
    and ~3x the client CPU (``bench/bench_pg_bars.py``).
    """

    table = "market_bars"
    monthly = True
    setup_sql = _BAR_STAGE

    def rows(self, items: list[Bar]) -> list[Any]:
        return [b for b in items if b.final]

    def partition_times(self, rows: list[Any]) -> Iterable[int]:
        return {b.start for b in rows}

    def write_rows(self, cur: psycopg.Cursor[Any], rows: list[Any]) -> None:
        # one row per (ticker, timeframe, start), the later bar winning: one INSERT ... ON CONFLICT DO UPDATE
        # may not touch a row twice (the flow emits one final bar per window, so this is a safeguard)
        unique = {(b.ticker, b.timeframe, b.start): b for b in rows}
        with cur.copy(_COPY_BARS) as copy:
            copy.set_types(_BAR_STAGE_TYPES)
            for bar in unique.values():
                copy.write_row(stage_row(bar))
        cur.execute(_UPSERT_BARS)

    def write_batch(self, items: list[Bar]) -> None:
        super().write_batch(items)
        observe_latency(
            PATH_FINAL_BAR, [b.last_tick for b in items if b.final and b.timeframe == FINAL_BAR_LATENCY_TIMEFRAME]
        )


class BarStoreSink(DynamicSink[Bar]):
    """Final bars (with indicators) upserted into ``market_bars``; live bars are ignored here."""

    def __init__(self, database_url: str) -> None:
        self._url = database_url

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _BarStorePartition:
        return _BarStorePartition(self._url)


# --------------------------------------------------------------------------- Redis


class _RedisPartition(StatelessSinkPartition[X]):
    def __init__(
        self,
        url: str,
        name: str,
        write: Callable[[Any, list[X]], None],
        written: Callable[[list[X]], None] | None = None,
    ) -> None:
        self._client = redis.Redis.from_url(url, socket_timeout=10)
        self._name = name
        self._write_fn = write
        SINK_ERRORS.labels(self._name)  # exported as 0 from the start, not from the first error
        self._written = written

    def write_batch(self, items: list[X]) -> None:
        if not items:
            return
        with SINK_SECONDS.labels(self._name).time():
            self._write(items)
        SINK_ROWS.labels(self._name).inc(len(items))
        if self._written is not None:
            self._written(items)

    @_retrying("redis")
    def _write(self, items: list[X]) -> None:
        pipe = self._client.pipeline(transaction=False)
        self._write_fn(pipe, items)
        try:
            pipe.execute()
        except (redis.ConnectionError, redis.TimeoutError):
            raise  # retried
        except redis.RedisError as err:  # refused (NOPERM, OOM, READONLY, BUSY ...): retrying cannot help
            msg = f"writing {len(items)} items to {self._name} failed: {err}"
            raise SinkError(msg) from err

    def close(self) -> None:
        self._client.close()


class EncodedBar(NamedTuple):
    """A bar with its contract JSON, encoded once for every writer (Redis, ``market-bars``)."""

    bar: Bar
    raw: bytes


#: Sets each ``KEYS[i]`` to ``ARGV[2i-1]`` with a TTL of ``ARGV[2i]`` seconds, in order. Live bars carry a TTL,
#: which ``MSET`` cannot set; one script call for all of a batch's live bars is one command and one reply instead
#: of one per bar (redis-py spends ~20 us of client CPU per pipelined ``SET``; docs/benchmarks.md).
SET_EACH_WITH_TTL: Final = """
for i = 1, #KEYS do
  redis.call('SET', KEYS[i], ARGV[2 * i - 1], 'EX', ARGV[2 * i])
end
return #KEYS
"""

#: live bars per script call (~2 ms of Redis time each)
SCRIPT_KEYS: Final = 5_000


def _write_bars(pipe: Any, bars: list[EncodedBar]) -> None:
    """A batch's bars as a few commands: one ``MSET`` of the final bars, one ``HSET`` of each ticker's
    indicators, one script call for the live bars. In arrival order, so a later bar of a key wins, as it would
    with one ``SET`` per bar."""
    finals: dict[str, bytes] = {}
    indicators: dict[str, list[str | bytes]] = {}
    live_keys: list[str] = []
    live_args: list[bytes | int] = []
    for bar, raw in bars:
        if bar.final:
            finals[redis_keys.final_bar(bar.ticker, bar.timeframe)] = raw
            fields = indicators.get(bar.ticker)
            if fields is None:
                indicators[bar.ticker] = [bar.timeframe, raw]
            else:
                fields += (bar.timeframe, raw)
        else:
            live_keys.append(redis_keys.live_bar(bar.ticker, bar.timeframe))
            live_args += (raw, redis_keys.LIVE_BAR_TTL_S[bar.timeframe])
    command = pipe.execute_command  # the generic call: set()/hset() cost more argument handling per call
    if finals:
        command("MSET", *itertools.chain.from_iterable(finals.items()))
    for ticker, fields in indicators.items():
        command("HSET", redis_keys.indicators(ticker), *fields)
    # EVAL with the script text, not EVALSHA: no SCRIPT EXISTS round trip per batch and no NOSCRIPT error after a
    # Redis restart (Redis caches the compiled script by its hash either way)
    for i in range(0, len(live_keys), SCRIPT_KEYS):  # Redis runs a script atomically: keep each call short
        keys = live_keys[i : i + SCRIPT_KEYS]
        command("EVAL", SET_EACH_WITH_TTL, len(keys), *keys, *live_args[2 * i : 2 * (i + SCRIPT_KEYS)])


def _live_bars_written(bars: list[EncodedBar]) -> None:
    observe_latency(PATH_LIVE_BAR, [e.bar.last_tick for e in bars if not e.bar.final])


_TICK_ENCODER = msgspec.json.Encoder()


#: ``latest_price:{ticker}`` only moves forward: each key is set to its value (``ARGV[3i]``) unless the stored tick
#: is newer by ``(timestamp, seq)`` (``ARGV[3i-2]``, ``ARGV[3i-1]``). A tick later dead-lettered as late, a replay
#: after a restart, or an older batch of another worker must not take the latest quote back in time.
_SET_IF_NEWER = """
for i, key in ipairs(KEYS) do
  local ts, seq = tonumber(ARGV[3 * i - 2]), tonumber(ARGV[3 * i - 1])
  local old = redis.call('GET', key)
  local newer = true
  if old then
    local ok, t = pcall(cjson.decode, old)
    if ok and type(t) == 'table' and tonumber(t.timestamp) then
      local ots, oseq = tonumber(t.timestamp), tonumber(t.seq) or -1
      newer = ts > ots or (ts == ots and seq > oseq)
    end
  end
  if newer then redis.call('SET', key, ARGV[3 * i]) end
end
return 0
"""
_NEWEST = operator.attrgetter("timestamp", "seq")


def _write_quotes(pipe: Any, batches: list[list[WireTick]]) -> None:
    """The newest tick per ticker by event time ``(timestamp, seq)``, written where it is newer than the stored
    one (one script call: a compare-and-set per key inside Redis)."""
    latest: dict[str, WireTick] = {}
    for ticks in batches:
        for tick in ticks:
            held = latest.get(tick.ticker)
            if held is None or _NEWEST(tick) > _NEWEST(held):
                latest[tick.ticker] = tick
    if latest:
        # WireTick has the contract's fields in the contract's order: the same bytes as on Kafka
        encode = _TICK_ENCODER.encode
        keys = [redis_keys.latest_price(t) for t in latest]
        args = itertools.chain.from_iterable((k.timestamp, k.seq, encode(k)) for k in latest.values())
        pipe.eval(_SET_IF_NEWER, len(keys), *keys, *args)


class RedisBarSink(DynamicSink[EncodedBar]):
    """Live bars (with TTL), final bars and the newest indicators per ticker/timeframe into Redis."""

    def __init__(self, redis_url: str) -> None:
        self._url = redis_url

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _RedisPartition[EncodedBar]:
        return _RedisPartition(self._url, "redis_bars", _write_bars, _live_bars_written)


class RedisQuoteSink(DynamicSink[list[WireTick]]):
    """Lists of newest ticks per batch: the newest tick per ticker becomes ``latest_price:{ticker}``."""

    def __init__(self, redis_url: str) -> None:
        self._url = redis_url

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _RedisPartition[list[WireTick]]:
        return _RedisPartition(self._url, "redis_quotes", _write_quotes)


# --------------------------------------------------------------------------- Kafka


Headers = list[tuple[str, str | bytes | None]]
#: What a Kafka sink makes of one item: ``(key, value, headers)``.
KafkaMessage = tuple[bytes, bytes, Headers | None]


class _KafkaPartition(StatelessSinkPartition[X]):
    """Produces a batch and waits for its delivery before returning (so a snapshot never runs ahead)."""

    def __init__(
        self,
        config: dict[str, Any],
        name: str,
        topic: str,
        encode: Callable[[X], KafkaMessage],
        delivered: Callable[[list[X]], None] | None = None,
    ) -> None:
        self._producer = Producer(config)
        self._name = name
        self._topic = topic
        SINK_ERRORS.labels(self._name)  # exported as 0 from the start, not from the first error
        self._encode = encode
        self._delivered = delivered  # called once per batch after every message was delivered
        self._failed: list[str] = []

    def _on_delivery(self, err: Any, msg: Any) -> None:
        if err is not None:
            self._failed.append(str(err))

    def write_batch(self, items: list[X]) -> None:
        if not items:
            return
        with SINK_SECONDS.labels(self._name).time():
            for item in items:
                key, value, headers = self._encode(item)
                self._produce(key, value, headers)
            remaining = self._producer.flush(60)
        if remaining or self._failed:
            SINK_ERRORS.labels(self._name).inc()
            msg = f"{self._name}: {remaining} messages undelivered, errors: {self._failed[:3]}"
            self._failed.clear()
            raise SinkError(msg)
        SINK_ROWS.labels(self._name).inc(len(items))
        if self._delivered is not None:
            self._delivered(items)

    def _produce(self, key: bytes, value: bytes, headers: Headers | None) -> None:
        while True:
            try:
                self._producer.produce(
                    self._topic, value=value, key=key, headers=headers, on_delivery=self._on_delivery
                )
                break
            except BufferError:
                self._producer.poll(0.1)  # local queue full: let deliveries drain, then retry
        # no poll(0) per message: write_batch's flush() serves the delivery reports of the whole batch

    def close(self) -> None:
        self._producer.flush(30)


def _producer_config(bootstrap: str) -> dict[str, Any]:
    return {
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "compression.type": "lz4",
        "linger.ms": 20,
        "batch.size": 1_000_000,
        # only failures are reported (and collected by _on_delivery); delivered messages are freed at once instead
        # of waiting in librdkafka's queue for flush() to serve a callback each
        "delivery.report.only.error": True,
    }


class KafkaBarSink(DynamicSink[EncodedBar]):
    """Bars (live and final) to ``market-bars`` keyed by ticker (contract ``bar.v1``)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self._bootstrap = bootstrap
        self._topic = topic

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _KafkaPartition[EncodedBar]:
        def encode(e: EncodedBar) -> KafkaMessage:
            return e.bar.ticker.encode(), e.raw, None

        return _KafkaPartition(_producer_config(self._bootstrap), "kafka_bars", self._topic, encode)


def dead_letter_headers(dl: DeadLetter, stage: str) -> Headers:
    """Kafka headers describing why and where from a message was dead-lettered (see docs/contracts.md)."""
    headers: Headers = [
        ("dlq.reason", dl.reason.encode()),
        ("dlq.kind", dl.kind.encode()),
        ("dlq.stage", stage.encode()),
    ]
    if dl.topic is not None:
        headers += [
            ("dlq.source.topic", dl.topic.encode()),
            ("dlq.source.partition", str(dl.partition).encode()),
            ("dlq.source.offset", str(dl.offset).encode()),
        ]
    return headers


class DeadLetterSink(DynamicSink[DeadLetter]):
    """Rejected inputs to the dead-letter topic: the original bytes as value, reason and origin as headers."""

    def __init__(self, bootstrap: str, topic: str, stage: str) -> None:
        self._bootstrap = bootstrap
        self._topic = topic
        self._stage = stage

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _KafkaPartition[DeadLetter]:
        stage = self._stage

        def encode(dl: DeadLetter) -> KafkaMessage:
            return b"", dl.raw, dead_letter_headers(dl, stage)

        config = _producer_config(self._bootstrap)
        return _KafkaPartition(config, "kafka_dead_letter", self._topic, encode, _dead_letters_delivered)


def _dead_letters_delivered(items: list[DeadLetter]) -> None:
    """After a flushed batch: one counter increment per kind, one log line with the count and the first reason."""
    kinds = collections.Counter(dl.kind for dl in items)
    for kind, n in kinds.items():
        DEAD_LETTERS.labels(kind).inc(n)
    first = items[0]
    log.warning(
        "dead-lettered %d messages (%s); first (%s) %s:%s@%s: %s",
        len(items), ", ".join(f"{n} {kind}" for kind, n in kinds.items()),
        first.kind, first.topic, first.partition, first.offset, first.reason,
    )  # fmt: skip


class _FanoutPartition(StatelessSinkPartition[X]):
    def __init__(self, parts: list[StatelessSinkPartition[X]]) -> None:
        self._parts = parts

    def write_batch(self, items: list[X]) -> None:
        for part in self._parts:  # in order: the database first, the notifications last
            part.write_batch(items)

    def close(self) -> None:
        for part in self._parts:
            part.close()


class FanoutSink(DynamicSink[X]):
    """Writes every batch to several sinks in order (one Bytewax output, several destinations)."""

    def __init__(self, *sinks: DynamicSink[X]) -> None:
        self._sinks = sinks

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _FanoutPartition[X]:
        return _FanoutPartition([s.build(step_id, worker_index, worker_count) for s in self._sinks])


class _EncodeBarsPartition(StatelessSinkPartition[Bar]):
    def __init__(self, fanout: _FanoutPartition[EncodedBar]) -> None:
        self._fanout = fanout

    def write_batch(self, items: list[Bar]) -> None:
        self._fanout.write_batch([EncodedBar(bar, encode_bar(bar)) for bar in items])

    def close(self) -> None:
        self._fanout.close()


class EncodeBarsSink(DynamicSink[Bar]):
    """Encodes each bar once (contract JSON) and writes the ``(bar, bytes)`` pairs to several sinks in order."""

    def __init__(self, *sinks: DynamicSink[EncodedBar]) -> None:
        self._fanout = FanoutSink(*sinks)

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _EncodeBarsPartition:
        return _EncodeBarsPartition(self._fanout.build(step_id, worker_index, worker_count))


def _bar_publishers(settings: SharedSettings) -> EncodeBarsSink:
    return EncodeBarsSink(
        RedisBarSink(settings.redis_url), KafkaBarSink(settings.kafka_bootstrap_servers, settings.topic_bars)
    )


def final_bar_sink(settings: SharedSettings) -> FanoutSink[Bar]:
    """Final bars: PostgreSQL, then Redis, then ``market-bars`` (each bar JSON-encoded once for both)."""
    return FanoutSink(BarStoreSink(settings.database_url.get_secret_value()), _bar_publishers(settings))


def live_bar_sink(settings: SharedSettings) -> EncodeBarsSink:
    """Live (partial) bars: Redis with a TTL, and ``market-bars`` with ``final: false``."""
    return _bar_publishers(settings)


def latest_tick_sink(settings: SharedSettings) -> RedisQuoteSink:
    """Newest tick per ticker into ``latest_price:{ticker}``."""
    return RedisQuoteSink(settings.redis_url)


def dead_letter_sink(settings: SharedSettings, stage: str = "flows.bars") -> DeadLetterSink:
    """Malformed and late ticks into the dead-letter topic."""
    return DeadLetterSink(settings.kafka_bootstrap_servers, settings.topic_dead_letter, stage)
