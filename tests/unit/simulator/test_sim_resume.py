"""Resuming from the topic's last ticks: the pure tail logic, the resume plan and the engine's start state."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pytest

from common.clock import to_ms
from common.errors import ConfigError
from contracts.tick import Tick, encode_tick
from simulator.engine import TickBatch, TickEngine
from simulator.resume import LastTicks, ResumeState, describe_gap, next_step_ms, plan_resume, resume_seed
from simulator.session import YEAR_SECONDS_CALENDAR, Session, block_starts
from simulator.universe import Universe, load_universe
from tests.ticks import make_tick

T0 = to_ms(datetime(2026, 11, 20, 15, 0, tzinfo=UTC))
SYMBOLS = ["SYNTH", "TECH", "FINANCE", "ENERGY", "HEALTH"]


@pytest.fixture(scope="module")
def universe() -> Universe:
    return load_universe("default")


def _tick(ticker: str, seq: int, ts: int, price: float = 100.0) -> Tick:
    return make_tick(ticker, seq, ts, price, volume=10, bid_size=100, ask_size=100)


def _engine(u: Universe, start_ms: int, resume: ResumeState | None, **kw: int) -> TickEngine:
    return TickEngine(u, Session(), 7, start_ms, tick_ms=100, resume=resume, **kw)


def _take(eng: TickEngine, end_ms: int, batch: int = 10_000) -> TickBatch:
    try:
        return TickBatch.concat(list(eng.batches(batch, end_ms=end_ms)))
    finally:
        eng.close()


# --------------------------------------------------------------------------- last ticks


def test_last_ticks_keeps_the_highest_seq_whatever_the_order() -> None:
    last = LastTicks(frozenset({"A", "B"}))
    last.add(encode_tick(t) for t in [_tick("A", 5, T0 + 500), _tick("A", 9, T0 + 900), _tick("A", 7, T0 + 700)])
    assert last.last["A"].seq == 9
    assert not last.complete
    assert last.missing == ["B"]
    last.add([encode_tick(_tick("B", 0, T0))])
    assert last.complete
    assert last.scanned == 4


def test_last_ticks_breaks_seq_ties_by_timestamp() -> None:
    """Two histories with the same seq (a restart without resume): the later one is the end of the topic."""
    last = LastTicks(frozenset({"A"}))
    last.add([encode_tick(_tick("A", 3, T0 + 10_000, 101.0)), encode_tick(_tick("A", 3, T0, 99.0))])
    assert last.last["A"].timestamp == T0 + 10_000
    assert last.last["A"].price == 101.0


def test_last_ticks_skips_and_counts_undecodable_and_foreign_messages() -> None:
    good = encode_tick(_tick("A", 1, T0))
    bad_invariant = good.replace(b'"bid":99.99', b'"bid":100.5')  # bid above ask: breaks the contract
    assert bad_invariant != good
    last = LastTicks(frozenset({"A"}))
    last.add([b"not json", None, b'{"version":1}', bad_invariant, encode_tick(_tick("Z", 50, T0)), good])
    assert last.undecodable == 4
    assert last.foreign == 1
    assert last.scanned == 6
    assert last.last["A"].seq == 1


# --------------------------------------------------------------------------- plan


def test_plan_is_none_without_a_tick_of_the_universe() -> None:
    prices = np.full(2, 50.0)
    assert plan_resume({}, ["A", "B"], prices, 100, T0) is None
    assert plan_resume({"Z": _tick("Z", 3, T0)}, ["A", "B"], prices, 100, T0) is None


def test_plan_continues_found_tickers_and_starts_new_ones_fresh() -> None:
    last = {"A": _tick("A", 41, T0 + 1_230, 12.34), "C": _tick("C", 7, T0 + 5_050, 99.5)}
    plan = plan_resume(last, ["A", "B", "C"], np.array([10.0, 20.0, 30.0]), 100, T0 + 65_000)
    assert plan is not None
    assert plan.state.next_seq.tolist() == [42, 0, 8]
    assert plan.state.prices.tolist() == [12.34, 20.0, 99.5]
    assert plan.found == 2
    assert plan.fresh == ["B"]
    assert plan.latest_ms == T0 + 5_050
    # the step holding the latest tick (slice offset 50 ms) is T0 + 5000: the next one is T0 + 5100
    assert plan.start_ms == T0 + 5_100
    assert plan.gap_ms == 65_000 - 5_100
    assert plan.skipped_ms == 0
    assert plan.future_ms == 0


def test_plan_after_a_tick_in_the_future_starts_after_it() -> None:
    plan = plan_resume({"A": _tick("A", 0, T0 + 3_600_000)}, ["A"], np.ones(1), 100, T0)
    assert plan is not None
    assert plan.future_ms == 3_600_000
    assert plan.start_ms == T0 + 3_600_100
    assert plan.gap_ms == 0


def test_plan_bounds_the_gap_by_the_backfill_window() -> None:
    now = T0 + 10 * 3_600_000
    plan = plan_resume({"A": _tick("A", 5, T0)}, ["A"], np.ones(1), 100, now, max_gap_ms=3_600_000)
    assert plan is not None
    assert plan.start_ms == now - 3_600_000
    assert plan.gap_ms == 3_600_000
    assert plan.skipped_ms == now - 3_600_000 - (T0 + 100)
    assert plan.state.next_seq.tolist() == [6]  # seq still continues


@pytest.mark.parametrize(("ts", "want"), [(0, 100), (99, 100), (100, 200), (1_049, 1_100)])
def test_next_step_is_strictly_after_the_step_of_the_tick(ts: int, want: int) -> None:
    assert next_step_ms(ts, 100) == want


def test_describe_gap() -> None:
    assert describe_gap(850) == "850 ms"
    assert describe_gap(3_250) == "3.2 s"
    assert describe_gap(192_000) == "3.2 min"
    assert describe_gap(2 * 86_400_000) == "2.0 d"


def test_resume_state_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="shapes differ"):
        ResumeState(next_seq=np.zeros(2, np.int64), prices=np.ones(3))
    with pytest.raises(ValueError, match="positive"):
        ResumeState(next_seq=np.zeros(1, np.int64), prices=np.zeros(1))
    with pytest.raises(ValueError, match="seq must be >= 0"):
        ResumeState(next_seq=np.full(1, -1, np.int64), prices=np.ones(1))
    with pytest.raises(ValueError, match=r"got nan at index 1 \(2 bad\)"):  # the first bad one, not every price
        ResumeState(next_seq=np.zeros(3, np.int64), prices=np.array([1.0, np.nan, 0.0]))


def test_resume_seed_depends_on_the_seed_and_the_resume_point() -> None:
    def draw(seed: int, start: int) -> float:
        return float(np.random.default_rng(resume_seed(seed, start)).random())

    assert draw(42, T0) == draw(42, T0)
    assert draw(42, T0) != draw(42, T0 + 100)
    assert draw(42, T0) != draw(43, T0)
    assert draw(42, T0) != float(np.random.default_rng(42).random())


# --------------------------------------------------------------------------- engine start state


def _state(u: Universe, seqs: list[int], prices: list[float]) -> ResumeState:
    assert len(seqs) == len(prices) == len(u)
    return ResumeState(next_seq=np.array(seqs, dtype=np.int64), prices=np.array(prices))


def test_engine_starts_from_the_given_prices_and_seqs(universe: Universe) -> None:
    seqs = [1_000, 0, 17, 5, 123_456]
    prices = [12.34, 250.0, 33.33, 80.01, 1.05]
    eng = _engine(universe, T0 + 5_100, _state(universe, seqs, prices))
    assert np.allclose(eng.price_state(), prices, rtol=1e-12)  # before the first step
    ticks = _take(eng, T0 + 65_000)
    n = len(universe)
    assert int(ticks.ts_ms[0]) == T0 + 5_100  # starts inside a block, at the given step
    for i in range(n):
        sel = ticks.ticker == i
        assert np.array_equal(ticks.seq[sel], seqs[i] + np.arange(int(sel.sum())))
        assert np.all(np.diff(ticks.ts_ms[sel]) == 100)
    # the first step moves each price by one 100 ms step: within 6 sd (plus a cent of rounding) of the start
    first = ticks.take(0, n)
    dt = 0.1 / YEAR_SECONDS_CALENDAR
    vol = np.array([t.volatility for t in universe.tickers])[first.ticker]
    start = np.array(prices)[first.ticker]
    moved = np.abs(np.log(first.price / 100.0 / start))
    assert np.all(moved <= 6 * vol * math.sqrt(dt) + np.log1p(0.01 / start))


def test_engine_resume_is_deterministic_and_batch_independent(universe: Universe) -> None:
    state = _state(universe, [3, 4, 5, 6, 7], [10.0, 20.0, 30.0, 40.0, 50.0])
    a = _take(_engine(universe, T0 + 30_300, state), T0 + 200_000, batch=50_000)
    b = _take(_engine(universe, T0 + 30_300, state), T0 + 200_000, batch=777)
    for name in ("ticker", "seq", "ts_ms", "price", "bid", "ask", "volume"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    c = _take(_engine(universe, T0 + 30_400, state), T0 + 200_000)
    assert not np.array_equal(a.price[-5:], c.price[-5:])  # another resume point: other random numbers


def test_without_resume_state_the_stream_starts_fresh_at_the_start(universe: Universe) -> None:
    """Without a resume state: the first step at/after the start (inside a block too), seq 0, configured prices."""
    ticks = _take(_engine(universe, T0 + 5_050, None), T0 + 200_000)
    assert int(ticks.ts_ms[0]) == T0 + 5_100
    assert ticks.seq[: len(universe)].tolist() == [0] * len(universe)
    assert np.allclose(ticks.price[: len(universe)] / 100, universe.start_prices, rtol=0.01)


def test_resume_state_must_match_the_universe(universe: Universe) -> None:
    with pytest.raises(ConfigError, match="resume state has 2 tickers"):
        _engine(universe, T0, ResumeState(next_seq=np.zeros(2, np.int64), prices=np.ones(2)))


@pytest.mark.parametrize("slice_ms", [100, 10])
def test_a_resumed_stream_continues_a_stopped_one_without_overlap(universe: Universe, slice_ms: int) -> None:
    """Stop a stream anywhere, plan from its last ticks, resume: per ticker seq 0..n-1 and increasing times."""
    first = _take(_engine(universe, T0, None, slice_ms=slice_ms), T0 + 90_037)
    last = LastTicks(frozenset(universe.symbols))
    last.add(encode_tick(t) for t in first.to_ticks(universe.symbols))
    plan = plan_resume(last.last, universe.symbols, universe.start_prices, 100, T0 + 150_000)
    assert plan is not None
    assert plan.found == len(universe)
    second = _take(_engine(universe, plan.start_ms, plan.state, slice_ms=slice_ms), T0 + 150_000)
    both = TickBatch.concat([first, second])
    for i in range(len(universe)):
        sel = both.ticker == i
        assert np.array_equal(both.seq[sel], np.arange(int(sel.sum())))
        assert np.all(np.diff(both.ts_ms[sel]) > 0)
        resumed = second.price[second.ticker == i][0]
        assert resumed / first.price[first.ticker == i][-1] == pytest.approx(1.0, abs=0.01)


# --------------------------------------------------------------------------- exchange calendar


EXCHANGE = Session(mode="exchange")
FRI_OPEN = to_ms(datetime(2026, 11, 20, 14, 30, tzinfo=UTC))  # Friday 09:30 New York
FRI_CLOSE = FRI_OPEN + 23_400_000
MON_OPEN = FRI_OPEN + 3 * 86_400_000


def test_exchange_resume_inside_a_session_starts_in_the_block_holding_it() -> None:
    starts = block_starts(EXCHANGE, FRI_OPEN + 90_500, 60_000, resume=True)
    assert next(starts) == (FRI_OPEN + 60_000, False)


def test_exchange_resume_after_the_close_starts_at_the_next_open_with_the_gap() -> None:
    starts = block_starts(EXCHANGE, FRI_CLOSE, 60_000, resume=True)
    assert next(starts) == (MON_OPEN, True)
    assert next(block_starts(EXCHANGE, FRI_CLOSE, 60_000)) == (MON_OPEN, False)  # a fresh start: no gap


def test_exchange_resume_at_the_open_applies_the_overnight_gap(universe: Universe) -> None:
    state = _state(universe, [9] * 5, [100.0] * 5)
    eng = TickEngine(universe, EXCHANGE, 7, FRI_CLOSE - 50, tick_ms=100, resume=state)
    ticks = _take(eng, MON_OPEN + 1_000)
    assert int(ticks.ts_ms[0]) == MON_OPEN
    assert ticks.seq[:5].tolist() == [9] * 5
    # the weekend gap (20 % of a trading day of variance) moves prices far more than one 100 ms step would
    moved = np.abs(np.log(ticks.price[:5] / 100.0 / 100.0))
    assert moved.max() > 1e-3
