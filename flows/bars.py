"""The bars dataflow: ``python -m bytewax.run flows.bars``.

Wiring only; the logic lives in :mod:`flows.decode`, :mod:`flows.aggregation` and :mod:`flows.indicators`::

    market_ticks ─▶ decode_and_partial_1m ─┬─▶ dead letters (malformed, late within a batch) ─┐
    (raw values)    (flat_map_batch: decode │                                                  ├─▶ dead_letters_out
                     a whole batch, NumPy   ├─▶ latest_ticks_out (newest tick per ticker/batch) │
                     partial 1m bars)       └─▶ bars_per_shard (stateful_batch, key = shard)   ─┤
                                                 ├─▶ final_bars_out   (1m..1d, indicators)      │
                                                 ├─▶ live_bars_out    (throttled partial bars)  │
                                                 └─▶ late ticks ────────────────────────────────┘

The stateful step emits one list per kind (final bars, live bars, late ticks) and activation, unpacked into
single items just before the sinks (``unpack_*``): per-item operator cost is paid once per list, not per bar.

:func:`build_flow` takes the source and sinks, so tests run it with ``TestingSource``/``TestingSink``. The
module attribute ``flow`` is built on first access by :func:`_production_flow` from ``flows.sources`` and
``flows.sinks`` (imported lazily, so this module imports without Kafka or database clients).
"""

from __future__ import annotations

import collections
import itertools
import operator
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeAlias, TypeGuard, TypeVar, cast

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream
from bytewax.inputs import Source
from bytewax.operators import StatefulBatchLogic
from bytewax.outputs import Sink

from common.clock import now_ms
from common.collector import tune_collector
from contracts.bar import Bar
from flows import lazy_flow
from flows.aggregation import AggregationConfig, TickChunk, partial_bars
from flows.decode import DeadLetter, RawBatch, WireTick, decode_batch
from flows.logclock import LogClock, MarkerPlan
from flows.observe import BARS, DUPLICATES, EVENT_LAG, PROCESSING_LATENCY, TickCounter
from flows.settings import FlowSettings
from flows.shards import DEFAULT_SHARDS, ShardBars, ShardKeys

# metrics live in flows.observe; dead letters are counted where they are written (flows.sinks)
_BAR_COUNTERS: dict[tuple[str, bool], Any] = {}


def _bar_counter(timeframe: str, final: bool) -> Any:
    """The labelled child counter, cached (``labels()`` costs about a microsecond)."""
    child = _BAR_COUNTERS.get((timeframe, final))
    if child is None:
        child = _BAR_COUNTERS[timeframe, final] = BARS.labels(timeframe, "true" if final else "false")
    return child


#: What the source emits: plain values (tests, ``TestingSource``) or whole Kafka partition batches.
RawItem: TypeAlias = bytes | RawBatch
#: What ``decode_and_partial_1m`` emits: the chunks (and log clocks) of each shard keyed by shard, dead letters
#: and one list of newest ticks per batch.
_ShardItems: TypeAlias = list[TickChunk | LogClock]
_Prepared: TypeAlias = tuple[str, _ShardItems] | DeadLetter | list[WireTick]


class FinalBars(list[Bar]):
    """The final bars of one shard activation: one dataflow item for all of them (see :func:`_items`)."""

    __slots__ = ()


class LiveBars(list[Bar]):
    """The live (partial) bars of one shard activation, as one item."""

    __slots__ = ()


class LateTicks(list[DeadLetter]):
    """The late ticks of one shard activation, as one item."""

    __slots__ = ()


_BarOut: TypeAlias = FinalBars | LiveBars | LateTicks


class ShardLogic(StatefulBatchLogic[_ShardItems, _BarOut, bytes]):
    """Bytewax adapter around one shard's :class:`~flows.shards.ShardBars` (many tickers per key); never
    discards its state, so each ticker's per-timeframe "last final start" guard survives for the life of the
    flow (and in snapshots)."""

    __slots__ = ("clock", "shard")

    def __init__(
        self,
        config: AggregationConfig,
        resume: bytes | None,
        clock: Callable[[], int] = now_ms,
        shards: int | None = None,
    ) -> None:
        self.clock = clock
        # a snapshot written under other timeframes, indicator settings or shard count raises here, naming them
        if resume is None:
            self.shard = ShardBars(config, None, shards)
        else:
            self.shard = ShardBars.restore(config, resume, clock(), shards)

    def on_batch(self, values: list[_ShardItems]) -> tuple[Iterable[_BarOut], bool]:
        chunks = itertools.chain.from_iterable(values)  # on_chunks reads them once
        return _items(*self.shard.on_chunks(chunks, self.clock())), StatefulBatchLogic.RETAIN

    def on_notify(self) -> tuple[Iterable[_BarOut], bool]:
        return _items(*self.shard.on_time(self.clock())), StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        deadline = self.shard.next_deadline_ms()
        if deadline is None:
            return None
        # Bytewax compares with the real UTC clock; ``clock`` may be a test clock, so convert a delay
        return datetime.now(tz=UTC) + timedelta(milliseconds=deadline - self.clock())

    def snapshot(self) -> bytes:
        return self.shard.snapshot()


_TIMEFRAME = operator.attrgetter("timeframe")
_T = TypeVar("_T")


def _items(finals: list[Bar], lives: list[Bar], late: list[DeadLetter], duplicates: int) -> list[_BarOut]:
    """The outputs of one activation as at most three items (final bars, live bars, late ticks).

    One item per kind, not per bar: every item costs a Python call in each operator it passes (key removal, two
    branches), ~4 us per bar; ``unpack_*`` flattens them again just before the sinks. Metrics are counted once
    per timeframe, not per bar.
    """
    out: list[_BarOut] = []
    if finals:
        for timeframe, n in collections.Counter(map(_TIMEFRAME, finals)).items():
            _bar_counter(timeframe, True).inc(n)
        out.append(FinalBars(finals))
    if lives:
        for timeframe, n in collections.Counter(map(_TIMEFRAME, lives)).items():
            _bar_counter(timeframe, False).inc(n)
        out.append(LiveBars(lives))
    if late:
        out.append(LateTicks(late))
    if duplicates:
        DUPLICATES.inc(duplicates)
    return out


def _is_dead_letter(item: object) -> TypeGuard[DeadLetter]:
    return isinstance(item, DeadLetter)


def _is_tick_list(item: object) -> TypeGuard[list[WireTick]]:
    return isinstance(item, list)


def _is_late(item: _BarOut) -> TypeGuard[LateTicks]:
    return isinstance(item, LateTicks)


def _is_final(item: _BarOut) -> TypeGuard[FinalBars]:
    return isinstance(item, FinalBars)


def _unpack(lists: Sequence[Iterable[_T]]) -> list[_T]:
    """Many lists of bars (or late ticks) as one stream of items again (for the sinks)."""
    return list(itertools.chain.from_iterable(lists))


def build_flow(
    source: Source[RawItem],
    *,
    final_sink: Sink[Bar],
    dead_letter_sink: Sink[DeadLetter],
    live_sink: Sink[Bar] | None = None,
    latest_sink: Sink[list[WireTick]] | None = None,
    settings: FlowSettings | None = None,
    flow_id: str = "bars",
    clock: Callable[[], int] = now_ms,
    shards: int = DEFAULT_SHARDS,
) -> Dataflow:
    """The bars dataflow over ``source`` (items: raw ``bytes`` values or :class:`RawBatch` es) into the sinks.

    ``final_sink`` gets each final bar once (with indicators), ``live_sink`` the throttled partial bars,
    ``dead_letter_sink`` malformed and late ticks, ``latest_sink`` one list per source batch with the newest
    tick of each ticker in it (latest quote / last price). Sinks must be idempotent: with recovery on, the
    output since the last snapshot is replayed after a restart. ``clock`` (epoch ms) is the system clock of
    live mode and the live-bar throttle; tests pass a shifted one. ``shards``: number of keys the per-ticker
    state is spread over (:mod:`flows.shards`; changing it, the timeframes or an indicator setting needs a fresh
    recovery store: restoring a snapshot written under other values raises, naming them).
    """
    settings = settings if settings is not None else FlowSettings()
    config = settings.aggregation_config()
    base_ms, grace_ms = config.lengths[0], config.grace_ms
    shard_keys = ShardKeys(shards)

    max_future_ms = settings.max_future_ms
    live = config.close_on_system_time
    markers = MarkerPlan()
    received = TickCounter(flow_id, settings.metrics_max_tickers)
    batch_seconds = PROCESSING_LATENCY.labels(flow_id)

    def prepare(items: list[RawItem]) -> list[_Prepared]:
        started = time.perf_counter()
        now = clock()
        batch, dead = decode_batch(
            items, not_after_ms=now + max_future_ms, read_ms=now if live else None, max_future_ms=max_future_ms
        )
        result = partial_bars(batch, base_ms, grace_ms)
        if len(batch):
            received.count_tallied(*result.tally)
            EVENT_LAG.set(time.time() - int(batch.timestamps.max()) / 1000.0)
            batch_seconds.observe(time.perf_counter() - started)
        groups = cast(list[tuple[str, _ShardItems]], shard_keys.grouped(result.chunks))
        out: list[_Prepared] = [*dead, *groups]
        if batch.log_ends:  # live mode: the logs' clocks to the shards (closes quiet tickers' windows)
            out.extend(_with_clocks(groups, batch.log_ends, markers, shard_keys))
        if result.latest:
            out.append(result.latest)
        return out

    flow = Dataflow(flow_id)
    raw = op.input("market_ticks", flow, source)
    prepared = op.flat_map_batch("decode_and_partial_1m", raw, prepare)
    split_dead = op.branch("split_malformed", prepared, _is_dead_letter)
    split_latest = op.branch("split_latest_ticks", split_dead.falses, _is_tick_list)
    chunks: Any = split_latest.falses  # (shard key, [TickChunk, ...]) pairs: already a keyed stream
    bars = op.stateful_batch("bars_per_shard", chunks, lambda resume: ShardLogic(config, resume, clock, shards))
    bar_lists = op.key_rm("drop_shard_key", bars)
    split_late = op.branch("split_late_from_bars", bar_lists, _is_late)
    split_final = op.branch("split_final_live", split_late.falses, _is_final)
    late: Stream[DeadLetter] = op.flat_map_batch("unpack_late_ticks", split_late.trues, _unpack)
    dead_letters: Stream[DeadLetter] = op.merge("all_dead_letters", split_dead.trues, late)
    finals: Stream[Bar] = op.flat_map_batch("unpack_final_bars", split_final.trues, _unpack)
    op.output("final_bars_out", finals, final_sink)
    op.output("dead_letters_out", dead_letters, dead_letter_sink)
    if live_sink is not None:
        live_lists = cast(Stream[LiveBars], split_final.falses)  # neither late (split above) nor final
        lives: Stream[Bar] = op.flat_map_batch("unpack_live_bars", live_lists, _unpack)
        op.output("live_bars_out", lives, live_sink)
    if latest_sink is not None:
        op.output("latest_ticks_out", split_latest.trues, latest_sink)
    return flow


def _with_clocks(
    groups: list[tuple[str, _ShardItems]], ends: dict[str, int], markers: MarkerPlan, keys: ShardKeys
) -> list[tuple[str, _ShardItems]]:
    """Append each log's clock to the shards' items of this batch; return items for the other shards when the
    clocks are due for everyone (:class:`~flows.logclock.MarkerPlan`)."""
    clocks = [LogClock(item) for item in ends.items()]
    for _, items in groups:
        items.extend(clocks)
    due = markers.broadcast(ends)
    if not due:
        return []
    present = {key for key, _ in groups}
    return [(key, list(due)) for key in keys.all_keys() if key not in present]


def _kafka_source(source: Source[RawBatch]) -> Source[RawItem]:
    """A source of whole batches is a source of raw items (Bytewax sources only produce, so this is safe)."""
    return cast(Source[RawItem], source)


def _production_flow() -> Dataflow:
    """The deployed flow: Kafka ``market-ticks`` in; PostgreSQL, Redis, ``market-bars`` and DLQ out."""
    # lazy: Kafka and database clients are only imported where the flow really runs
    from flows import observe, sinks, sources

    settings = FlowSettings()
    tune_collector(settings.gc_threshold)  # freeze imports and configuration; young generation per the setting
    observe.start_metrics_server(settings.metrics_port, settings.metrics_host)
    return build_flow(
        _kafka_source(
            sources.RawKafkaSource(
                settings.kafka_bootstrap_servers,
                settings.topic_ticks,
                batch_size=settings.batch_size,
                group_id=settings.group_id("bars"),
                fetch_bytes=settings.fetch_bytes("bars"),
                reader=settings.kafka_reader,
                log_times=settings.log_times(),
            )
        ),
        final_sink=sinks.final_bar_sink(settings),
        live_sink=sinks.live_bar_sink(settings) if settings.live_enabled else None,
        dead_letter_sink=sinks.dead_letter_sink(settings),
        latest_sink=sinks.latest_tick_sink(settings),
        settings=settings,
    )


__getattr__ = lazy_flow(__name__, _production_flow)
