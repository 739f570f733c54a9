"""``python -m bytewax.run flows.ticks``: the raw tick archive, every valid tick into ``market_ticks``.

Reads ``market-ticks`` with the same lean source as the bars flow, decodes whole batches and writes them with
COPY through a staging table, idempotent on (ticker, time, seq), so a replay after a crash adds no duplicate.
Malformed values and ticks stamped more than ``FLOW_MAX_FUTURE_MS`` ahead of the clock (a timestamp centuries
ahead is valid JSON of the contract but no trade) are only counted here (``flow_archive_rejected_total``): the
bars flow owns the dead-letter topic, so each bad message is dead-lettered once, not once per flow. Retention:
TimescaleDB's policy, or ``md_drop_partitions_before`` run by this flow once an hour on plain PostgreSQL
(``FLOW_TICKS_RETENTION_DAYS``).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.outputs import Sink

from common.clock import now_ms
from flows import lazy_flow
from flows.decode import DecodedBatch, RawBatch, decode_batch
from flows.observe import ARCHIVE_REJECTED, PROCESSING_LATENCY, TickCounter

log = logging.getLogger(__name__)


def decode_for_archive(items: list[bytes | RawBatch], not_after_ms: int | None = None) -> list[DecodedBatch]:
    """One decoded batch per source batch; malformed values (and, with ``not_after_ms``, ticks stamped later:
    the bars flow rejects those too) are counted and left to the bars flow's DLQ."""
    batch, dead = decode_batch(items, not_after_ms=not_after_ms)
    if dead:
        ARCHIVE_REJECTED.inc(len(dead))
    return [batch] if len(batch) else []


def build_flow(
    source: Source[Any],
    archive_sink: Sink[DecodedBatch],
    flow_id: str = "ticks",
    metrics_max_tickers: int = 0,
    max_future_ms: int | None = None,
) -> Dataflow:
    """Source of raw tick values -> batch decode -> archive sink; ticks more than ``max_future_ms`` ahead of the
    clock are rejected (not archived), as the bars flow rejects them in backfill mode."""
    received = TickCounter(flow_id, metrics_max_tickers)
    batch_seconds = PROCESSING_LATENCY.labels(flow_id)

    def decode(items: list[bytes | RawBatch]) -> list[DecodedBatch]:
        started = time.perf_counter()
        out = decode_for_archive(items, None if max_future_ms is None else now_ms() + max_future_ms)
        if out:
            received.count_tallied(*out[0].tally())
            batch_seconds.observe(time.perf_counter() - started)
        return out

    flow = Dataflow(flow_id)
    raw = op.input("market_ticks", flow, source)
    decoded = op.flat_map_batch("decode_ticks", raw, decode)
    op.output("archive_market_ticks", decoded, archive_sink)
    return flow


def _production_flow() -> Dataflow:
    from flows import observe, sources
    from flows import tick_archive_sink as sinks
    from flows.settings import FlowSettings

    settings = FlowSettings()
    observe.start_metrics_server(settings.metrics_port, settings.metrics_host)
    sinks.apply_tick_retention(settings.database_url.get_secret_value(), settings.ticks_retention_days)
    return build_flow(
        sources.RawKafkaSource(
            settings.kafka_bootstrap_servers,
            settings.topic_ticks,
            batch_size=settings.batch_size,
            group_id=settings.group_id("ticks"),
            fetch_bytes=settings.fetch_bytes("ticks"),
            reader=settings.kafka_reader,
        ),
        sinks.TickArchiveSink(settings.database_url.get_secret_value()),
        metrics_max_tickers=settings.metrics_max_tickers,
        max_future_ms=settings.max_future_ms,
    )


__getattr__ = lazy_flow(__name__, _production_flow)
