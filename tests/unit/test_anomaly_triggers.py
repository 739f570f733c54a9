"""Every anomaly detector can be triggered on demand by a simulator event, through the real pieces: the
simulator's engine and JSON encoding (as on ``market-ticks``), the bars flow's decoding, aggregation,
indicators and live bars, and the detectors on the final and live 1m bars. Each event raises exactly the
anomalies listed, once; the same stream without events raises none.

The processing clock is the simulator's pacing time (when a real-time run produces each tick), so a ``delay``
event shows up as the live bars' processing lag exactly as in a live pipeline.
"""

from __future__ import annotations

from collections import Counter, defaultdict

import pytest

from contracts.bar import Bar
from flows.aggregation import AggregationConfig, TickerBars
from flows.decode import decode_batch
from flows.detectors import DetectorConfig, DetectorState, detect
from flows.partial import partial_bars
from simulator.encode import BatchEncoder
from simulator.engine import TickBatch, TickEngine
from simulator.events import EventSchedule, parse_event
from simulator.session import Session
from simulator.universe import load_universe

MIN = 60_000
T0 = 1_767_607_200_000  # 2026-01-05T10:00:00Z: the events' time; 30 minutes of history before it
FEED_MS = 10_000  # the ticks of 10 simulated seconds per batch


def anomalies(events: list[str], seed: int = 11) -> list[tuple[str, str, int]]:
    """``(ticker, type, minutes after T0)`` of every anomaly raised by 45 simulated minutes with ``events``."""
    universe = load_universe("default")
    schedule = EventSchedule([parse_event(e) for e in events], universe.symbols)
    engine = TickEngine(universe, Session(mode="24/7"), seed, T0 - 30 * MIN, tick_ms=1000, before_block=schedule)
    encoder = BatchEncoder(universe.symbols)
    bars_config = AggregationConfig(timeframes=("1m",), close_on_system_time=False, live_interval_ms=0)
    config = DetectorConfig()
    per_ticker: dict[str, TickerBars] = {}
    states: dict[str, DetectorState] = defaultdict(lambda: DetectorState(config.period))
    found: list[tuple[str, str, int]] = []

    def examine(bars: list[Bar], now: int) -> None:
        for bar in bars:
            found.extend(
                (a.ticker, a.type.value, (a.time - T0) // MIN) for a in detect(config, states[bar.ticker], bar, now)
            )

    block = TickBatch.concat(list(engine.blocks(T0 + 15 * MIN)))
    for lo in range(0, len(block), len(universe.symbols) * FEED_MS // 1000):
        batch = block.take(lo, lo + len(universe.symbols) * FEED_MS // 1000)
        now = int(batch.ts_ms[-1])  # produced (paced) then, and processed at once
        decoded, dead = decode_batch(encoder.messages(batch))
        assert dead == []
        result = partial_bars(decoded, MIN, bars_config.grace_ms)
        assert all(chunk.held is None for _, chunk in result.chunks)  # no tick late within its batch
        chunks = defaultdict(list)
        for ticker, chunk in result.chunks:
            chunks[ticker].append(chunk)
        for ticker, mine in chunks.items():
            emitted = per_ticker.setdefault(ticker, TickerBars(bars_config, ticker)).on_chunks(mine, now)
            examine(emitted.finals, now)
            examine(emitted.lives, now)
    return sorted(found)


@pytest.fixture(scope="module")
def baseline() -> list[tuple[str, str, int]]:
    return anomalies([])


def test_without_events_only_natural_rsi_extremes_are_raised(baseline: list[tuple[str, str, int]]) -> None:
    """A 14-bar RSI on 1m bars leaves 30..70 a few times an hour in a calm market; nothing else fires."""
    assert baseline  # the detectors do run on this stream
    assert {kind for _, kind, _ in baseline} <= {"rsi_overbought", "rsi_oversold"}
    assert [a for a in baseline if a[0] == "TECH"] == []


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        # a jump moves the close 8 % off its 20-bar average, and the 14-bar RSI past its bound with it
        ("TECH:jump:+8%@2026-01-05T10:00Z", [("TECH", "price_spike", 0), ("TECH", "rsi_overbought", 0)]),
        ("TECH:jump:-8%@2026-01-05T10:00Z", [("TECH", "price_spike", 0), ("TECH", "rsi_oversold", 0)]),
        ("TECH:volume:x6@2026-01-05T10:00Z/3m", [("TECH", "volume_spike", 0)]),
        ("TECH:delay:500ms@2026-01-05T10:00Z/2m", [("TECH", "high_latency", 0)]),
    ],
)
def test_each_detector_is_triggered_by_its_event_once(
    event: str, expected: list[tuple[str, str, int]], baseline: list[tuple[str, str, int]]
) -> None:
    """The event adds exactly ``expected`` (each once, at the event's minute) and takes nothing away: events
    draw no random numbers, so every other ticker's stream is byte-identical."""
    with_event = Counter(anomalies([event]))
    assert sorted((with_event - Counter(baseline)).elements()) == expected
    assert not Counter(baseline) - with_event
