"""Live mode closes windows on the Kafka partition's log time (:mod:`flows.logclock`), not the wall clock.

The properties that matter: the final bars and the late ticks depend only on the records and their order
(not on how they are cut into batches, not on when they are processed, not on a crash and resume), a quiet
ticker's windows close as the partition's log moves on, and every tick is judged at its own log time.
"""

from __future__ import annotations

import pickle
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, TestingSource, run_main

from contracts.bar import Bar
from flows.aggregation import AggregationConfig, TickerBars, TickerState, partial_bars
from flows.bars import build_flow
from flows.decode import DeadLetter, RawBatch, decode_batch
from flows.logclock import LogClock, MarkerPlan, log_columns, running_log_times
from flows.partial import NO_REACH
from flows.settings import FlowSettings
from tests.bar_rule import MIN, Record, Windows, content, idle, one_minute, oracle, to_batches
from tests.bar_rule import record as tick

T0 = 1_705_276_800_000  # a whole UTC minute
GRACE = 2_000
SETTINGS = FlowSettings(mode="live", live_enabled=False, timeframes=("1m", "5m"), grace_ms=GRACE)


def random_stream(seed: int, n: int = 3_000) -> list[Record]:
    """Ticks of active and quiet tickers (quiet ones trade in the first 20 s of each minute only), most read
    within 50 ms of their event time, some seconds late; producer timestamps jitter; two idle spells."""
    rng = np.random.default_rng(seed)
    active, quiet = ["A0", "A1", "A2"], ["Q0", "Q1", "Q2", "Q3"]
    out: list[Record] = []
    now = T0
    for seq in range(n):
        now += int(rng.integers(0, 150))
        if seq in (n // 3, 2 * n // 3):  # the producer pauses; the source's idle clock steps in meanwhile
            out += [idle(now + 1_000), idle(now + 4_000)]
            now += 5_000
        names = active + (quiet if now % MIN < 20_000 else [])
        name = names[int(rng.integers(0, len(names)))]
        delay = int(rng.integers(0, 50)) if rng.random() > 0.05 else int(rng.integers(1_000, 9_000))
        stamp = now + int(rng.integers(-30, 30))
        out.append(tick(name, seq, now - delay, stamp, int(rng.integers(9_000, 11_000)), int(rng.integers(1, 500))))
    out.append(idle(now + 10 * MIN))  # the end: the log far ahead closes every 1m and 5m window
    return out


def run(
    batches: list[Any], wall: int, recovery: Path | None = None, batch_size: int = 3
) -> tuple[list[Bar], list[DeadLetter]]:
    """The bars flow over ``batches``, ``batch_size`` of them decoded together (as one source poll)."""
    finals: list[Bar] = []
    dead: list[DeadLetter] = []
    flow = build_flow(
        TestingSource(batches, batch_size=batch_size),
        final_sink=TestingSink(finals),
        dead_letter_sink=TestingSink(dead),
        settings=SETTINGS,
        clock=lambda: wall,
    )
    if recovery is None:
        run_main(flow)  # type: ignore[no-untyped-call]
    else:
        config = RecoveryConfig(str(recovery))  # type: ignore[no-untyped-call]
        run_main(flow, epoch_interval=timedelta(milliseconds=0), recovery_config=config)  # type: ignore[no-untyped-call]
    return finals, dead


def rule(records: list[Record]) -> tuple[Windows, set[bytes]]:
    """The rule's closed 1m windows and late ticks for ``records`` (live mode: windows close on the log too)."""
    want = oracle(records, live=True, grace=GRACE)
    return want.bars, want.late()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_bars_and_late_ticks_follow_the_log_whatever_the_batches_and_the_wall_clock(seed: int) -> None:
    records = random_stream(seed)
    want_bars, want_late = rule(records)
    rng = np.random.default_rng(seed)
    splits = {
        "one record per batch": list(range(len(records))),
        "random cuts": sorted(rng.choice(len(records), 60, replace=False).tolist()),
        "one batch (but idle steps)": [],
    }
    end = max(r.stamp for r in records)
    walls = {
        "wall clock on time": end + 1,
        "stalled for an hour": end + 3_600_000,
        "replayed days later": end + 86_400_000 * 3,
    }
    outputs = []
    for (split, cuts), wall in zip(splits.items(), walls.values(), strict=True):
        finals, dead = run(to_batches(records, cuts), wall, batch_size=1)
        assert one_minute(finals) == want_bars, split
        assert {d.raw for d in dead} == want_late, split
        assert {d.kind for d in dead} == {"late"}
        outputs.append(content(finals))
    assert outputs[0] == outputs[1] == outputs[2]
    # not trivial: ticks late only by the log (their ticker's own event time had not passed end + grace), and
    # quiet tickers' windows closed while they sent nothing more
    assert want_late
    assert any(ticker.startswith("Q") for ticker, _ in want_bars)


def jumpy_stream(seed: int, n: int = 800) -> list[Record]:
    """Two tickers trading around minute ends, read 0-3 s after their event time and in bursts, so the log
    often moves past a window's end + grace between a ticker's rises (out-of-order ticks, gaps of seconds)."""
    rng = np.random.default_rng(seed)
    out: list[Record] = []
    log = T0 + 50_000
    for seq in range(n):
        log += int(rng.integers(0, 900)) if rng.random() < 0.3 else 0
        if log % MIN > 8_000 and log % MIN < 52_000:  # skip the middle of each minute
            log += 52_000 - log % MIN
        ts = log - int(rng.integers(0, 3_000))
        out.append(tick(f"J{int(rng.integers(0, 2))}", seq, ts, log, int(rng.integers(9_000, 11_000))))
    out.append(idle(log + 10 * MIN))
    return out


@pytest.mark.parametrize("seed", [13, 17, 24, 41, 44])
def test_bars_and_late_ticks_follow_the_log_for_out_of_order_ticks_read_in_bursts(seed: int) -> None:
    records = jumpy_stream(seed)
    want_bars, want_late = rule(records)
    rng = np.random.default_rng(seed)
    for cuts in (list(range(len(records))), sorted(rng.choice(len(records), 80, replace=False).tolist()), []):
        finals, dead = run(to_batches(records, cuts), records[-1].stamp, batch_size=1)
        assert {d.raw for d in dead} == want_late, len(cuts)
        assert one_minute(finals) == want_bars, len(cuts)
    assert want_late


def test_the_frontier_a_tick_reached_stays_when_a_later_tick_of_the_batch_raises_the_watermark() -> None:
    """A's tick 2 (no rise) is read 1,100 ms after A's watermark rose to 61 s: the frontier reaches 60.1 s and
    closes [0, 1m). Tick 3 then raises the watermark by 10 ms only (frontier 59.01 s from it); tick 4, for the
    closed window, is late however the records are cut into batches."""
    records = [
        tick("A", 0, T0 + 59_000, T0 + 59_000),
        tick("A", 1, T0 + 61_000, T0 + 61_000),
        tick("A", 2, T0 + 60_500, T0 + 62_100),
        tick("A", 3, T0 + 61_010, T0 + 62_100),
        tick("A", 4, T0 + 59_500, T0 + 62_101),
        idle(T0 + 10 * MIN),
    ]
    for cuts in ([1, 2, 3, 4], [2, 4], [1, 2, 4], []):
        finals, dead = run(to_batches(records, cuts), records[-1].stamp, batch_size=1)
        assert [d.raw for d in dead] == [records[4].raw], cuts
        assert one_minute(finals)["A", T0] == (10_000, 10_000, 10_000, 10_000, 1, 1), cuts


def test_a_late_tick_that_would_raise_the_watermark_leaves_the_log_clock_at_the_rise_before_it() -> None:
    """Q went quiet at 10 s and A moved the log to 63 s, which closed Q's [0, 1m). Q's next tick (59 s) is late
    and does not raise Q's watermark, so the one after it (70 s, read at log time 122 s) is judged from the rise
    at 10 s: frontier 10 s + 112 s - grace = 120 s closes its window [1m, 2m) too, also in one batch."""
    records = [
        tick("Q", 0, T0 + 10_000, T0 + 10_000),
        tick("A", 1, T0 + 63_000, T0 + 63_000),
        tick("Q", 2, T0 + 59_000, T0 + 63_000),
        tick("Q", 3, T0 + 70_000, T0 + 122_000),
        idle(T0 + 10 * MIN),
    ]
    for cuts in ([1, 2, 3], [2]):
        finals, dead = run(to_batches(records, cuts), records[-1].stamp, batch_size=1)
        assert [d.raw for d in dead] == [records[2].raw, records[3].raw], cuts
        assert ("Q", T0 + MIN) not in one_minute(finals), cuts


def test_a_quiet_tickers_window_closes_exactly_when_the_log_passes_end_plus_grace() -> None:
    base = [tick("Q", 0, T0 + 10_000, T0 + 10_005), tick("A", 1, T0 + 11_000, T0 + 11_000)]
    # Q's watermark rose at log time T0+10,005 to T0+10,000: its frontier reaches T0+1m when the log is at
    # T0+1m + grace + 5 ms
    edge = T0 + MIN + GRACE + 5
    for last_log, closed in ((edge - 1, False), (edge, True)):
        records = [*base, tick("A", 2, last_log - 3, last_log)]
        finals, _ = run(to_batches(records, [1]), wall=T0 + 86_400_000)
        assert ("Q", T0) in one_minute(finals) if closed else ("Q", T0) not in one_minute(finals), last_log


def test_an_idle_partition_closes_on_its_idle_clock() -> None:
    records = [tick("Q", 0, T0 + 10_000, T0 + 10_000), idle(T0 + MIN + GRACE - 1)]
    finals, _ = run(to_batches(records, []), wall=T0 + 86_400_000)
    assert finals == []
    finals, _ = run(to_batches([*records, idle(T0 + MIN + GRACE)], []), wall=T0 + 86_400_000)
    assert [(b.ticker, b.timeframe, b.start) for b in finals] == [("Q", "1m", T0)]


def test_a_tick_is_judged_at_its_own_log_time_inside_a_batch() -> None:
    """One batch in which Q's window closes part-way (A moves the log on): the tick of Q read 1 ms before the
    log reaches Q's end + grace is accepted, the one read at it is late."""
    records = [
        tick("Q", 0, T0 + 50_000, T0 + 50_000),
        # Q's watermark rises to 59 s at log time 61 s, so its window [0, 1m) closes at log time
        # 61 s + (1m + grace - 59 s) = 64 s
        tick("Q", 1, T0 + 59_000, T0 + 61_000),
        tick("A", 2, T0 + 63_999, T0 + 63_999),
        tick("Q", 3, T0 + 58_000, T0 + 63_999),  # accepted (older than the watermark, still open)
        tick("A", 4, T0 + 64_000, T0 + 64_000),
        tick("Q", 5, T0 + 58_500, T0 + 64_000),  # late
    ]
    for cuts in ([], [1, 2, 3, 4, 5]):
        finals, dead = run(to_batches([*records, idle(T0 + 10 * MIN)], cuts), wall=T0 + 64_000)
        assert [d.raw for d in dead] == [records[5].raw], cuts
        assert "late tick 'Q'" in dead[0].reason
        assert one_minute(finals)["Q", T0][5] == 3


def test_a_backlog_is_merged_segment_by_segment_with_the_bars_of_the_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    """Catching up: hours of ticks written long ago, read in batches whose chunks span minutes (their log times
    all but equal). No window closes part-way through a chunk by the log, so no chunk is redone tick by tick
    (the slow path), and the bars are the rule's."""

    def forbidden(self: TickerBars, chunk: Any, now_ms: int) -> list[DeadLetter]:
        raise AssertionError(f"{self.state.ticker}: chunk redone tick by tick")

    written = T0 + 86_400_000
    records = [tick(f"B{i % 3}", i, T0 + i * 700, written + i // 100) for i in range(3_000)]
    records.append(idle(written + 10 * MIN))
    want_bars, want_late = rule(records)
    monkeypatch.setattr(TickerBars, "_tick_by_tick", forbidden)
    finals, dead = run(to_batches(records, list(range(0, len(records), 500))), written, batch_size=1)
    assert one_minute(finals) == want_bars
    assert dead == []
    assert want_late == set()
    assert len(want_bars) == 3 * 35  # 35 minutes of each ticker closed on event time, the last by the log


def test_live_bars_carry_the_lag_also_when_a_chunk_is_redone_tick_by_tick() -> None:
    """Q's chunk closes its first window part-way (the slow path, common when catching up on a backlog): its
    live bar still carries the processing lag of the newest tick merged (bar.v1 ``lag_ms``)."""
    records = [
        tick("Q", 0, T0 + 50_000, T0 + 50_000),
        tick("Q", 1, T0 + 59_000, T0 + 61_000),
        tick("A", 2, T0 + 64_000, T0 + 64_000),  # the log passes Q's end + grace inside the batch
        tick("Q", 3, T0 + 60_500, T0 + 64_001),
    ]
    decoded, dead = decode_batch(to_batches(records, []), read_ms=T0 + 64_100)
    assert dead == []
    chunks = [chunk for ticker, chunk in partial_bars(decoded, MIN, GRACE).chunks if ticker == "Q"]
    bars = TickerBars(AggregationConfig(timeframes=("1m",), grace_ms=GRACE, live_interval_ms=0), "Q")
    emitted = bars.on_chunks(chunks, T0 + 65_000)
    assert [(b.start, b.final) for b in emitted.finals] == [(T0, True)]  # closed part-way through the chunk
    assert [(b.start, b.lag_ms) for b in emitted.lives] == [(T0 + MIN, 65_000 - 60_500)]


def test_abort_and_resume_give_the_finals_and_late_ticks_of_an_uninterrupted_run(tmp_path: Path) -> None:
    """A crash between a window closed by the log and a tick of it read late: after the resume (hours later
    on the wall clock), the replay judges that tick the same way and no window gets a second, different
    final (the failure of closing on the wall clock, docs/flows.md)."""
    records = random_stream(7, n=1_500)
    batches: list[Any] = to_batches(records, list(range(0, len(records), 40)))
    want_finals, want_dead = run(batches, wall=T0)
    cut = len(batches) // 2
    init_db_dir(tmp_path, 1)  # type: ignore[no-untyped-call]
    items = [*batches[:cut], TestingSource.ABORT(), *batches[cut:]]  # one ABORT object: it fires once
    first, first_dead = run(items, T0, tmp_path)
    second, second_dead = run(items, T0 + 7_200_000, tmp_path)
    assert first
    assert second
    by_key: dict[tuple[str, str, int], tuple[Any, ...]] = {}
    for bar in first + second:
        row = (bar.open, bar.high, bar.low, bar.close, bar.volume, bar.trades)
        assert by_key.setdefault((bar.ticker, bar.timeframe, bar.start), row) == row, "two different finals"
    assert content(want_finals) == sorted((*k, *v) for k, v in by_key.items())
    assert {d.raw for d in first_dead + second_dead} == {d.raw for d in want_dead}


def test_running_log_times_keep_the_maximum_and_skip_missing_and_future_stamps() -> None:
    stamps = [(1, 100), (1, 90), (0, -1), (1, 120), (1, 10_000), (1, 130)]
    times, end = running_log_times(stamps, seed=95, not_after_ms=1_000)
    assert times.tolist() == [100, 100, 100, 120, 120, 130]
    assert end == 130
    times, end = running_log_times([], seed=95, not_after_ms=1_000)
    assert (times.tolist(), end) == ([], 95)


def test_log_columns_line_up_with_the_values_and_give_each_logs_end() -> None:
    items: list[Any] = [
        RawBatch("t", 0, [1, 2], [b"a", b"b"], np.array([5, 7]), 7),
        b"plain",
        RawBatch("t", 1, [], [], None, 40),  # idle step
        RawBatch("t", 2, [9], [b"c"]),  # a source without log times
    ]
    times, sources, ends = log_columns(items, read_ms=1_000)
    assert times.tolist() == [5, 7, 1_000, 1_000]
    assert sources == ["t#0", "t#0", None, None]
    assert ends == {"t#0": 7, "t#1": 40}


def test_chunk_clock_summarises_a_tickers_log_times() -> None:
    records = [
        tick("A", 0, T0 + 1_000, T0 + 1_010),
        tick("B", 1, T0 + 1_500, T0 + 1_520),
        tick("A", 2, T0 + 900, T0 + 1_530),  # out of order: the watermark does not rise
        tick("A", 3, T0 + 2_000, T0 + 2_050),
        tick("A", 4, T0 + 2_000, T0 + 2_060),  # equal: it does not rise either
        tick("C", 5, T0 + 59_000, T0 + 59_000),
        tick("C", 6, T0 + 58_000, T0 + 61_100),  # the log 2,100 ms past C's rise: frontier 59,100, still open
        tick("C", 7, T0 + 57_500, T0 + 62_000),  # 3,000 ms past it: frontier 60,000 closes [0, 1m) before it
    ]
    (batch,) = to_batches(records, [])
    decoded, dead = decode_batch([batch], read_ms=0)
    assert dead == []
    chunks = dict(partial_bars(decoded, MIN, GRACE).chunks)
    # (log key, log at the last tick, log where the event time last rose, first tick's event and log time,
    # reach: max over later ticks of the batch's watermark + log since it rose, smooth)
    # A's reach: at tick 3, watermark 1,000 (risen at log 1,010) + 1,040
    assert chunks["A"].clock == ("market-ticks#0", T0 + 2_060, T0 + 2_050, T0 + 1_000, T0 + 1_010, T0 + 2_040, True)
    assert chunks["B"].clock == ("market-ticks#0", T0 + 1_520, T0 + 1_520, T0 + 1_500, T0 + 1_520, NO_REACH, True)
    c_clock = ("market-ticks#0", T0 + 62_000, T0 + 59_000, T0 + 59_000, T0 + 59_000, T0 + 62_000, False)
    assert chunks["C"].clock == c_clock
    restored = pickle.loads(pickle.dumps(chunks["A"]))  # an exchange between workers keeps only its own rows
    assert restored.clock == chunks["A"].clock
    assert restored[6].log_times.tolist() == [T0 + 1_010, T0 + 1_530, T0 + 2_050, T0 + 2_060]


def test_marker_plan_sends_a_logs_clock_to_everyone_at_most_every_interval() -> None:
    plan = MarkerPlan(interval_ms=25)
    assert plan.broadcast({"t#0": 100}) == [LogClock(("t#0", 100))]
    assert plan.broadcast({"t#0": 124}) == []
    assert plan.broadcast({"t#0": 125, "t#1": 3}) == [LogClock(("t#0", 125)), LogClock(("t#1", 3))]


def test_a_state_pickled_before_log_times_loads_with_its_wall_time_as_log_time() -> None:
    state = TickerState("A", watermark=5, watermark_log=7)
    _, slots = state.__getstate__()  # type: ignore[misc]
    old = {("watermark_wall" if k == "watermark_log" else k): v for k, v in slots.items() if k != "source"}
    loaded = TickerState.__new__(TickerState)
    loaded.__setstate__((None, old))
    assert (loaded.watermark, loaded.watermark_log, loaded.source) == (5, 7, None)
