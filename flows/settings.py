"""Settings of the bars flow (env prefix ``FLOW_``), on top of the shared connection settings.

List-valued settings accept JSON or comma-separated values, e.g. ``FLOW_TIMEFRAMES=1m,5m,1h`` or
``FLOW_SMA_PERIODS=[10,30,100]``. Construction fails fast, naming the offending field.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import Field, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from common.settings import BASE_CONFIG, SharedSettings, split_list
from flows.aggregation import AggregationConfig
from flows.indicators import IndicatorConfig
from flows.logclock import DEFAULT_IDLE_CLOSE_APPEND_MS, DEFAULT_IDLE_CLOSE_MS, LogTimes

#: how the Kafka source reads a partition (:mod:`flows.kafka_readers`)
ReaderKind = Literal["native", "confluent"]

#: values per Kafka source batch unless ``FLOW_BATCH_SIZE`` says otherwise
DEFAULT_BATCH_SIZE = 200_000

#: bytes each flow's Kafka source fetches per partition and request unless ``FLOW_FETCH_PARTITION_BYTES`` says
#: otherwise. The bars flow reads a backlog fastest at 16 MiB (librdkafka's 1 MiB was bound by fetch round trips).
#: The tick archive consumes slower than Kafka serves a backlog, so librdkafka holds fetches for it: at 16 MiB a
#: 48 h backlog over 6 partitions took it to ~2 GB RSS, at 4 MiB about half, read as fast (docs/benchmarks.md,
#: session 15)
DEFAULT_FETCH_BYTES = {"bars": 16 * 1024 * 1024, "ticks": 4 * 1024 * 1024}


class FlowSettings(SharedSettings):
    """Configuration of ``flows.bars``; every field is read from ``FLOW_<NAME>``."""

    # hide_input_in_errors: a model-level error would otherwise echo every input, secrets included
    model_config = SettingsConfigDict(**BASE_CONFIG, env_prefix="FLOW_", hide_input_in_errors=True)

    #: "live": windows also close as the Kafka partition's log time passes (quiet tickers; flows.logclock);
    #: "backfill": on event time only
    mode: Literal["live", "backfill"] = "live"
    timeframes: Annotated[tuple[str, ...], NoDecode] = ("1m", "5m", "15m", "1h", "1d")
    grace_ms: int = Field(2_000, ge=0, le=3_600_000)
    #: ticks dated more than this ahead of the system clock are dead-lettered (they would poison the watermark)
    max_future_ms: int = Field(300_000, ge=0)
    #: live mode: an idle, caught-up partition's log clock advances to now minus this (how long after its
    #: timestamp a record is surely readable: producer linger, broker, fetch)
    idle_close_ms: int = Field(DEFAULT_IDLE_CLOSE_MS, ge=0, le=3_600_000)
    #: the same for a topic whose records carry the broker's LogAppendTime (``make up`` creates market-ticks so):
    #: only broker-to-consumer delivery, no producer linger
    idle_close_append_ms: int = Field(DEFAULT_IDLE_CLOSE_APPEND_MS, ge=0, le=3_600_000)
    live_enabled: bool = True
    live_interval_ms: int = Field(250, ge=0)
    live_every_ticks: int = Field(0, ge=0)
    sma_periods: Annotated[tuple[int, int, int], NoDecode] = (20, 50, 200)
    ema_periods: Annotated[tuple[int, int], NoDecode] = (12, 26)
    rsi_period: int = 14
    macd_fast: int = 12
    macd_slow: int = 26
    macd_signal: int = 9
    bb_period: int = 20
    bb_nbdev: float = 2.0
    #: upper bound of values per source batch (the Kafka source's consume size). Only a backlog fills a batch
    #: (live, a consume returns what arrived within its 10 ms poll); bigger batches spread the per-ticker cost of
    #: each batch over more ticks: at 1,000 tickers 200,000 is 1.3-1.6x faster than 50,000 in memory and
    #: 1.1-1.3x from Kafka into the sinks, at a few tens of MB more peak memory (docs/benchmarks.md, session 14)
    batch_size: int = Field(DEFAULT_BATCH_SIZE, ge=1, le=1_000_000)
    #: bytes the Kafka source fetches per partition and request; unset: the flow's own (``DEFAULT_FETCH_BYTES``).
    #: A flow behind on its backlog holds a few fetches per partition in memory (docs/flows.md)
    fetch_partition_bytes: int | None = Field(None, ge=65_536, le=268_435_456)
    #: how the Kafka source reads a partition: ``native`` (:mod:`kafkaread`, no Python object per record) or
    #: ``confluent`` (confluent-kafka's ``Consumer``, a ``Message`` per record: the fallback; docs/flows.md)
    kafka_reader: ReaderKind = "native"
    #: Prometheus exporter port of the flow process; 0 disables it
    metrics_port: int = Field(9102, ge=0, le=65535)
    #: address the exporter binds (0.0.0.0 in containers, so Prometheus in another container can scrape it)
    metrics_host: str = Field("127.0.0.1", min_length=1)
    #: distinct ``ticker`` label values per process on ``tick_messages_received_total`` (later ones count as
    #: "other"); 0 drops the per-ticker split (label "all")
    metrics_max_tickers: int = Field(200, ge=0, le=10_000)
    #: emit flat bars for empty intervals; not supported yet, so only False is accepted
    gap_fill: bool = False
    #: Kafka consumer group id the flow's source reports to the broker (offsets live in recovery snapshots);
    #: unset, each flow names its own: ``flows-bars``, ``flows-ticks``
    consumer_group: str | None = Field(None, min_length=1)
    #: retention of the raw tick archive ``market_ticks`` (flows.ticks; seed: 30 days)
    ticks_retention_days: int = Field(30, ge=1)
    #: generation-0 threshold of Python's garbage collector in the flow process (0: Python's default, 700);
    #: batches allocate tens of thousands of short-lived containers, and with the default every few hundred
    #: allocations trigger a collection that also walks the long-lived per-ticker state
    gc_threshold: int = Field(100_000, ge=0)

    @field_validator("timeframes", "sma_periods", "ema_periods", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> Any:
        return split_list(value)

    @field_validator("gap_fill")
    @classmethod
    def _no_gap_fill(cls, value: bool) -> bool:
        if value:
            msg = "gap_fill=True is not supported yet: empty intervals produce no bar"
            raise ValueError(msg)
        return value

    @model_validator(mode="after")
    def _check_aggregation(self) -> Self:
        self.aggregation_config()  # raises ValueError naming the field, wrapped by pydantic
        return self

    def indicator_config(self) -> IndicatorConfig:
        """The indicator periods as the pure-logic config."""
        return IndicatorConfig(
            sma_periods=self.sma_periods,
            ema_periods=self.ema_periods,
            rsi_period=self.rsi_period,
            macd_fast=self.macd_fast,
            macd_slow=self.macd_slow,
            macd_signal=self.macd_signal,
            bb_period=self.bb_period,
            bb_nbdev=self.bb_nbdev,
        )

    def aggregation_config(self) -> AggregationConfig:
        """The aggregation settings as the pure-logic config."""
        return AggregationConfig(
            timeframes=self.timeframes,
            grace_ms=self.grace_ms,
            close_on_system_time=self.mode == "live",
            live_enabled=self.live_enabled,
            live_interval_ms=self.live_interval_ms,
            live_every_ticks=self.live_every_ticks,
            indicators=self.indicator_config(),
        )

    def log_times(self) -> LogTimes | None:
        """How the Kafka source keeps its partitions' log clocks: live mode only (backfill closes on event time)."""
        if self.mode != "live":
            return None
        return LogTimes(
            idle_close_ms=self.idle_close_ms,
            max_future_ms=self.max_future_ms,
            idle_close_append_ms=self.idle_close_append_ms,
        )

    def fetch_bytes(self, flow: Literal["bars", "ticks"]) -> int:
        """Bytes per partition and fetch request of flow ``flow``'s Kafka source: the setting, else its default."""
        return self.fetch_partition_bytes or DEFAULT_FETCH_BYTES[flow]

    def group_id(self, flow: str) -> str:
        """The consumer group id of flow ``flow`` (``bars``, ``ticks``): the setting, else ``flows-<flow>``."""
        return self.consumer_group or f"flows-{flow}"
