"""Scheduled events: parsing, and their exact effect on an otherwise identical stream."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from common.errors import ConfigError
from contracts.tick import encode_tick
from simulator.encode import BatchEncoder
from simulator.engine import TickBatch, TickEngine
from simulator.events import EventSchedule, MarketEvent, parse_event
from simulator.export import export
from simulator.resume import LastTicks, plan_resume
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


def test_a_regime_event_with_a_ticker_is_rejected() -> None:
    """``TECH:regime:stressed`` used to switch the whole market silently."""
    with pytest.raises(ConfigError, match=r"market-wide, write it \*:regime:stressed"):
        parse_event("TECH:regime:stressed@2026-01-05T10:00Z")


# --------------------------------------------------------------------------- events before the start, resume


def _history(events: list[str], stop_ms: int) -> tuple[TickBatch, EventSchedule]:
    u = load_universe("default")
    schedule = EventSchedule([parse_event(e) for e in events], u.symbols)
    eng = TickEngine(u, Session(), 42, T0, tick_ms=100, before_block=schedule)
    try:
        return TickBatch.concat(list(eng.blocks(stop_ms))), schedule
    finally:
        eng.close()


def _resumed(first: TickBatch, events: list[str], end_ms: int) -> tuple[TickBatch, EventSchedule]:
    """Restart after ``first`` (as ``run`` does from the topic) with the same ``--inject``."""
    u = load_universe("default")
    last = LastTicks(frozenset(u.symbols))
    last.add(encode_tick(t) for t in first.to_ticks(u.symbols))
    plan = plan_resume(last.last, u.symbols, u.start_prices, 100, end_ms)
    assert plan is not None
    schedule = EventSchedule([parse_event(e) for e in events], u.symbols)
    eng = TickEngine(u, Session(), 42, plan.start_ms, tick_ms=100, before_block=schedule, resume=plan.state)
    try:
        return TickBatch.concat(list(eng.blocks(end_ms))), schedule
    finally:
        eng.close()


@pytest.mark.parametrize("stop", [10 * MIN + 30_000, 10 * MIN])  # inside a block, on a block boundary
def test_a_resumed_run_does_not_apply_a_jump_again(stop: int, caplog: pytest.LogCaptureFixture) -> None:
    """The same --inject after a restart re-applied every event before the resume point at the first block."""
    events = ["SYNTH:jump:+8%@2026-01-05T10:05Z"]
    first, s1 = _history(events, T0 + stop)
    assert [at for at, _ in s1.applied] == [T0 + 5 * MIN]
    second, s2 = _resumed(first, events, T0 + 15 * MIN)
    assert s2.applied == []
    assert [e.kind for e in s2.dropped] == ["jump"]
    assert "dropping 1 event(s)" in caplog.text
    synth = load_universe("default").symbols.index("SYNTH")
    last, resumed = first.price[first.ticker == synth][-1], second.price[second.ticker == synth][0]
    assert abs(resumed / last - 1) < 0.01  # an 8 % jump again would be far outside one 100 ms step


def test_an_event_between_the_last_tick_and_the_next_block_acts_after_a_resume() -> None:
    """Run 1 stops at 10:10:30 before its 10:11 block: an event at 10:10:15 never acted there, so it acts now."""
    events = ["SYNTH:jump:+8%@2026-01-05T10:10:15Z"]
    first, s1 = _history(events, T0 + 10 * MIN + 30_000)
    assert s1.applied == []
    _, s2 = _resumed(first, events, T0 + 15 * MIN)
    assert [at for at, _ in s2.applied] == [T0 + 11 * MIN]
    assert s2.dropped == []


def test_a_volume_burst_running_at_the_resume_point_goes_on_until_its_end() -> None:
    events = ["TECH:volume:x20@2026-01-05T10:05Z/10m"]  # 10:05-10:15, the run stops at 10:10:30
    first, _ = _history(events, T0 + 10 * MIN + 30_000)
    second, s2 = _resumed(first, events, T0 + 20 * MIN)
    assert [e.kind for _, e in s2.applied] == ["volume"]
    tech = second.ticker == load_universe("default").symbols.index("TECH")

    def mean(lo: int, hi: int) -> float:
        return float(second.volume[tech & (second.ts_ms >= lo) & (second.ts_ms < hi)].mean())

    assert mean(T0 + 10 * MIN, T0 + 15 * MIN) > 5 * mean(T0 + 15 * MIN, T0 + 20 * MIN)


def test_a_fresh_start_drops_events_before_it_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    u = load_universe("default")
    events = [
        "TECH:jump:+8%@2026-01-05T09:00Z",
        "TECH:volume:x5@2026-01-05T09:30Z/5m",
        "*:regime:stressed@2026-01-05T10:00Z",
    ]
    schedule = EventSchedule([parse_event(e) for e in events], u.symbols)
    eng = TickEngine(u, Session(), 42, T0, tick_ms=1000, before_block=schedule)
    try:
        list(eng.blocks(T0 + 2 * MIN))
    finally:
        eng.close()
    assert [e.kind for e in schedule.dropped] == ["jump", "volume"]
    assert [(at, e.kind) for at, e in schedule.applied] == [(T0, "regime")]  # at the start: not before it
    assert "TECH:jump@2026-01-05T09:00:00+00:00" in caplog.text


def test_export_applies_injected_events_to_ticks(tmp_path: Path) -> None:
    """``export --inject`` used to ignore the events."""
    u = load_universe("default")
    out = tmp_path / "t.parquet"
    export(u, Session(), 11, T0 - 5 * MIN, T0 + 5 * MIN, "tick", "parquet", out, tick_ms=1000)
    base = pq.read_table(out).to_pandas()
    schedule = EventSchedule([parse_event("TECH:jump:+8%@2026-01-05T10:00Z")], u.symbols)
    export(u, Session(), 11, T0 - 5 * MIN, T0 + 5 * MIN, "tick", "parquet", out, tick_ms=1000, events=schedule)
    jumped = pq.read_table(out).to_pandas()
    tech = (base["ticker"] == "TECH") & (base["timestamp"] >= T0)
    assert np.allclose(jumped["price"][tech] / base["price"][tech], 1.08, atol=0.002)
    assert (jumped["price"][~tech] == base["price"][~tech]).all()


def test_export_of_bars_refuses_events(tmp_path: Path) -> None:
    u = load_universe("default")
    schedule = EventSchedule([parse_event("TECH:jump:+8%@2026-01-05T10:00Z")], u.symbols)
    with pytest.raises(ConfigError, match="tick exports only"):
        export(u, Session(), 11, T0, T0 + MIN, "1m", "csv", tmp_path / "b.csv", events=schedule)
