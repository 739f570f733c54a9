"""The anomalies dataflow under TestingSource/TestingSink, on one worker and a two-worker cluster."""

from __future__ import annotations

import msgspec
import pytest
from bytewax.testing import TestingSink, TestingSource, cluster_main, run_main

from contracts.anomaly import Anomaly
from contracts.bar import Bar, Indicators, encode_bar
from flows.anomalies import build_flow
from flows.anomaly_settings import AnomalySettings
from flows.decode import DeadLetter

MIN = 60_000
T0 = 1_767_607_200_000


def bar(ticker: str, i: int, close: float, timeframe: str = "1m", final: bool = True, lag: int = 20) -> bytes:
    length = {"1m": MIN, "5m": 5 * MIN}[timeframe]
    start = T0 + i * length
    b = Bar(ticker=ticker, timeframe=timeframe, start=start, end=start + length, open=close, high=close, low=close,
            close=close, volume=1_000, vwap=close, trades=5, first_tick=start, last_tick=start, final=final,
            indicators=Indicators(rsi_14=50.0) if final else None,
            lag_ms=msgspec.UNSET if final else lag)  # fmt: skip
    return encode_bar(b)


def values() -> list[bytes]:
    out: list[bytes] = []
    for i in range(40):
        jumped = 21 <= i  # TECH jumps +8 % at bar 21 and stays there
        out.append(bar("TECH", i, 108.0 if jumped else 100.0))
        out.append(bar("TECH", i, 130.0, final=False))  # live bars: only their lag is examined
        out.append(bar("SYNTH", i, 50.0, final=False, lag=400 if i in (30, 31) else 20))  # one latency excursion
        out.append(bar("SYNTH", i, 50.0))
        out.append(bar("TECH", i // 5, 100.0, timeframe="5m", final=False, lag=900))  # not the shortest timeframe
    out += [bar("TECH", i, 200.0, timeframe="5m") for i in range(25)]  # not a configured timeframe
    out += [b"not json", b'{"ticker":"TECH"}']
    return out


def run(worker_count: int) -> tuple[list[Anomaly], list[DeadLetter]]:
    found: list[Anomaly] = []
    dead: list[DeadLetter] = []
    flow = build_flow(
        TestingSource(values(), batch_size=7),
        anomaly_sink=TestingSink(found),
        dead_letter_sink=TestingSink(dead),
        settings=AnomalySettings(timeframes=("1m",)),
        clock=lambda: T0 + 10**10,
    )
    if worker_count == 1:
        run_main(flow)
    else:
        cluster_main(flow, [], 0, worker_count_per_proc=worker_count)
    return found, dead


@pytest.mark.parametrize("workers", [1, 2])
def test_one_price_spike_one_latency_alert_and_malformed_values_dead_lettered(workers: int) -> None:
    found, dead = run(workers)
    assert sorted((a.ticker, a.type.value, a.severity.value, a.time, a.value) for a in found) == [
        ("SYNTH", "high_latency", "critical", T0 + 30 * MIN, 400.0),
        ("TECH", "price_spike", "high", T0 + 21 * MIN, 8.0),
    ]
    assert sorted(d.raw for d in dead) == sorted([b"not json", b'{"ticker":"TECH"}'])
    assert all(d.kind == "malformed" and "contract" in d.reason for d in dead)


def test_decode_bars_dead_letters_carry_their_kafka_origin() -> None:
    from flows.anomalies import decode_bars
    from flows.decode import RawBatch

    good = bar("TECH", 0, 100.0)
    items = [RawBatch("market-bars", 3, [10, 11], [good, b"not json"]), b"{}"]
    out = decode_bars(items, frozenset({"1m"}), "1m")
    dead = [d for d in out if isinstance(d, DeadLetter)]
    assert [(d.topic, d.partition, d.offset) for d in dead] == [("market-bars", 3, 11), (None, None, None)]
    assert [d.raw for d in dead] == [b"not json", b"{}"]
    assert [item[0] for item in out if isinstance(item, tuple)] == ["TECH:1m"]
