"""The anomalies dataflow: ``python -m bytewax.run flows.anomalies``.

Wiring only; detection is :mod:`flows.detectors`, notification :mod:`flows.notify`::

    market_bars ─▶ decode_bars ───────┬─▶ dead letters (not a bar.v1 value) ──────────────▶ dead_letters_out
    (raw values)   (flat_map_batch:    └─▶ detect_per_series (stateful_flat_map,
                    decode, keep final      key = "TICKER:timeframe") ─▶ anomalies_out (table, alerts, webhook)
                    bars of the
                    configured timeframes,
                    live bars of the
                    shortest one)

Final bars feed the market detectors, live bars (their ``lag_ms``) the latency detector; live bars of the
other timeframes carry the same lag and are skipped in the decode step, as are bars of other timeframes.
Offsets live in the Bytewax recovery snapshots (:class:`flows.sources.RawKafkaSource`), the detector state too,
so ``-r/-s/-b`` resumes where the last snapshot was taken; the sinks are idempotent for the replay since then.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeAlias, TypeGuard, cast

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.outputs import Sink

from common.clock import now_ms
from common.errors import ContractError
from contracts.anomaly import Anomaly
from contracts.bar import TIMEFRAMES, Bar, decode_bar
from flows import lazy_flow, observe
from flows.anomaly_settings import AnomalySettings
from flows.decode import DeadLetter, RawBatch, dead_letter, flatten
from flows.detectors import DetectorConfig, DetectorState, detect

RawItem: TypeAlias = bytes | RawBatch
_Decoded: TypeAlias = tuple[str, Bar] | DeadLetter


def decode_bars(items: list[RawItem], timeframes: frozenset[str], live_timeframe: str) -> list[_Decoded]:
    """``(series key, bar)`` for each final bar of ``timeframes`` and each live bar of ``live_timeframe``; a dead
    letter for each value that is no bar."""
    out: list[_Decoded] = []
    values, origins = flatten(items)
    for i, raw in enumerate(values):
        try:
            bar = decode_bar(raw)
        except ContractError as err:  # the origin is built only here, for the dead letter
            out.append(dead_letter("malformed", str(err), raw, origins[i] if origins is not None else None))
            continue
        wanted = bar.timeframe in timeframes if bar.final else bar.timeframe == live_timeframe
        if wanted:
            out.append((f"{bar.ticker}:{bar.timeframe}", bar))
    return out


def _is_dead_letter(item: object) -> TypeGuard[DeadLetter]:
    return isinstance(item, DeadLetter)


def build_flow(
    source: Source[RawItem],
    *,
    anomaly_sink: Sink[Anomaly],
    dead_letter_sink: Sink[DeadLetter],
    settings: AnomalySettings | None = None,
    flow_id: str = "anomalies",
    clock: Callable[[], int] = now_ms,
) -> Dataflow:
    """The anomalies dataflow over ``source`` (raw ``market-bars`` values or :class:`RawBatch` es).

    ``clock`` (epoch ms) is the processing time used by the latency detector; tests pass a fixed one.
    """
    settings = settings if settings is not None else AnomalySettings()
    config: DetectorConfig = settings.detector_config()
    timeframes = frozenset(settings.timeframes)
    live_timeframe = min(timeframes, key=TIMEFRAMES.__getitem__)  # its live bars carry the lag for latency

    def detect_step(state: DetectorState | None, bar: Bar) -> tuple[DetectorState, list[Anomaly]]:
        if state is None:
            state = DetectorState(config.period)
        if bar.final:  # the counter's meaning: final bars examined (live bars only feed the latency check)
            observe.ANOMALY_BARS_EXAMINED.inc()
        found = detect(config, state, bar, clock())
        for a in found:
            observe.ANOMALIES.labels(a.type.value, a.severity.value).inc()
        return state, found

    flow = Dataflow(flow_id)
    raw = op.input("market_bars", flow, source)
    decoded = op.flat_map_batch("decode_bars", raw, lambda items: decode_bars(items, timeframes, live_timeframe))
    split = op.branch("split_malformed", decoded, _is_dead_letter)
    keyed: Any = split.falses  # (series key, Bar) pairs: already a keyed stream
    found = op.stateful_flat_map("detect_per_series", keyed, detect_step)
    op.output("anomalies_out", op.key_rm("drop_series_key", found), anomaly_sink)
    op.output("dead_letters_out", split.trues, dead_letter_sink)
    return flow


def _kafka_source(source: Source[RawBatch]) -> Source[RawItem]:
    """A source of whole batches is a source of raw items (Bytewax sources only produce, so this is safe)."""
    return cast(Source[RawItem], source)


def _production_flow() -> Dataflow:
    """The deployed flow: Kafka ``market-bars`` in; ``anomalies`` table, ``alerts``, webhook and DLQ out."""
    from flows import alert_sinks, sinks, sources

    settings = AnomalySettings()
    observe.start_metrics_server(settings.metrics_port, settings.metrics_host)
    return build_flow(
        _kafka_source(
            sources.RawKafkaSource(
                settings.kafka_bootstrap_servers,
                settings.topic_bars,
                batch_size=settings.batch_size,
                reader=settings.kafka_reader,
            )
        ),
        anomaly_sink=alert_sinks.anomaly_sink(settings),
        dead_letter_sink=sinks.dead_letter_sink(settings, stage="flows.anomalies"),
        settings=settings,
    )


__getattr__ = lazy_flow(__name__, _production_flow)
