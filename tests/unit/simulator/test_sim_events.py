"""Scheduled events: parsing, and their exact effect on an otherwise identical stream."""

from __future__ import annotations

import numpy as np
import pytest

from common.errors import ConfigError
from simulator.encode import BatchEncoder
from simulator.engine import TickBatch, TickEngine
from simulator.events import EventSchedule, MarketEvent, parse_event
from simulator.session import Session
from simulator.universe import load_universe

T0 = 1_767_607_200_000  # 2026-01-05T10:00:00Z
MIN = 60_000


def test_parse_each_kind() -> None:
    assert parse_event("tech:jump:+8%@2026-01-05T10:00Z") == MarketEvent("TECH", "jump", 0.08, T0)
    assert parse_event("TECH:jump:-5.5%@2026-01-05T10:00:00+00:00") == MarketEvent("TECH", "jump", -0.055, T0)
    assert parse_event("TECH:volume:x5@2026-01-05T10:00/5m") == MarketEvent("TECH", "volume", 5.0, T0, 5 * MIN)
    assert parse_event("*:regime:stressed@2026-01-05T10:00Z") == MarketEvent("*", "regime", 1.0, T0)
    assert parse_event("*:regime:calm@2026-01-05T10:00Z").value == 0.0
    assert parse_event("TECH:delay:500ms@2026-01-05T10:00Z/2m") == MarketEvent("TECH", "delay", 500.0, T0, 2 * MIN)
    assert parse_event("TECH:delay:3s@2026-01-05T10:00Z").value == 3_000.0


@pytest.mark.parametrize(
    "text",
    ["TECH:jump:8@2026-01-05T10:00Z", "TECH:jump:-100%@2026-01-05T10:00Z", "TECH:volume:5@2026-01-05T10:00Z",
     "TECH:regime:panic@2026-01-05T10:00Z", "TECH:jump:+8%@yesterday", "TECH:crash:+8%@2026-01-05T10:00Z", "TECH",
     "TECH:delay:0ms@2026-01-05T10:00Z", "TECH:delay:2h@2026-01-05T10:00Z", "TECH:delay:3601s@2026-01-05T10:00Z",
     "TECH:delay:slow@2026-01-05T10:00Z"],
)  # fmt: skip
def test_bad_events_are_rejected_quoting_the_text(text: str) -> None:
    with pytest.raises(ConfigError, match="event"):
        parse_event(text)


def test_unknown_ticker_is_rejected() -> None:
    with pytest.raises(ConfigError, match="NOPE"):
        EventSchedule([parse_event("NOPE:jump:+8%@2026-01-05T10:00Z")], ["TECH"])


def _run(events: list[str]) -> tuple[TickBatch, list[str], TickEngine]:
    universe = load_universe("default")
    schedule = EventSchedule([parse_event(e) for e in events], universe.symbols) if events else None
    engine = TickEngine(universe, Session(mode="24/7"), 11, T0 - 5 * MIN, tick_ms=1000, before_block=schedule)
    return TickBatch.concat(list(engine.blocks(T0 + 10 * MIN))), universe.symbols, engine


def test_a_jump_shifts_one_ticker_from_its_block_on_and_nothing_else() -> None:
    base, symbols, _ = _run([])
    jumped, _, _ = _run(["TECH:jump:+8%@2026-01-05T10:00Z"])
    tech = symbols.index("TECH")
    others = base.ticker != tech
    for name in ("price", "bid", "ask", "volume", "ts_ms"):
        assert np.array_equal(getattr(base, name)[others], getattr(jumped, name)[others])
    before = (base.ticker == tech) & (base.ts_ms < T0)
    assert np.array_equal(base.price[before], jumped.price[before])
    after = (base.ticker == tech) & (base.ts_ms >= T0)
    ratio = jumped.price[after] / base.price[after]
    assert np.allclose(ratio, 1.08, atol=0.002)  # cent rounding of ~$300 prices


def test_a_volume_burst_lasts_its_duration() -> None:
    base, symbols, _ = _run([])
    burst, _, _ = _run(["TECH:volume:x10@2026-01-05T10:00Z/2m"])
    tech = base.ticker == symbols.index("TECH")

    def total(b: TickBatch, lo: int, hi: int) -> int:
        return int(b.volume[tech & (b.ts_ms >= lo) & (b.ts_ms < hi)].sum())

    assert total(burst, T0, T0 + 2 * MIN) > 5 * total(base, T0, T0 + 2 * MIN)
    assert total(burst, T0 + 2 * MIN, T0 + 10 * MIN) == total(base, T0 + 2 * MIN, T0 + 10 * MIN)
    assert total(burst, T0 - 5 * MIN, T0) == total(base, T0 - 5 * MIN, T0)


def test_a_regime_event_switches_the_model() -> None:
    _, _, engine = _run(["*:regime:stressed@2026-01-05T10:00Z"])
    assert engine.model.stressed  # the model may switch back by itself, but not within minutes
    schedule = engine.before_block
    assert isinstance(schedule, EventSchedule)
    assert [(at, e.kind) for at, e in schedule.applied] == [(T0, "regime")]


def test_a_delay_stamps_one_tickers_ticks_earlier_for_its_duration_and_changes_nothing_else() -> None:
    base, symbols, _ = _run([])
    delayed, _, _ = _run(["TECH:delay:500ms@2026-01-05T10:00Z/2m"])
    for name in ("ticker", "seq", "ts_ms", "price", "bid", "ask", "volume"):  # prices and pacing unchanged
        assert np.array_equal(getattr(base, name), getattr(delayed, name)), name
    tech = base.ticker == symbols.index("TECH")
    during = tech & (base.ts_ms >= T0) & (base.ts_ms < T0 + 2 * MIN)
    assert during.any()
    assert np.array_equal(delayed.stamp_ms[during], base.ts_ms[during] - 500)
    assert np.array_equal(delayed.stamp_ms[~during], base.ts_ms[~during])
    # what goes on the wire carries the stamp: the JSON encoding and the contract objects
    row = int(np.flatnonzero(during)[0])
    one = delayed.take(row, row + 1)
    assert f'"timestamp":{int(base.ts_ms[row]) - 500}'.encode() in BatchEncoder(symbols).messages(one)[0]
    assert one.to_ticks(symbols)[0].timestamp == int(base.ts_ms[row]) - 500
    assert base.delay_ms is None  # no event: no delay column at all
