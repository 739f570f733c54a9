"""The bars dataflow under Bytewax's TestingSource/TestingSink: one worker, two workers, and the pure logic
all produce the same final bars and dead letters."""

from __future__ import annotations

import time
from collections import defaultdict
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, TestingSource, cluster_main, run_main

from contracts.bar import TIMEFRAMES, Bar
from contracts.tick import Tick, encode_tick
from flows.aggregation import TickChunk, TickerBars, partial_bars
from flows.bars import build_flow
from flows.decode import DeadLetter, WireTick, decode_batch
from flows.settings import FlowSettings
from flows.shards import SnapshotMismatchError
from tests.ticks import tick_bytes

T0 = 1_705_276_800_000
MIN = 60_000
SETTINGS = FlowSettings(mode="backfill", live_enabled=False)


def make_values(seed: int = 3, n: int = 6_000, tickers: int = 12) -> list[bytes]:
    rng = np.random.default_rng(seed)
    names = [f"S{i:02d}" for i in range(tickers)]
    ts = T0 + np.sort(rng.integers(0, 90 * MIN, n)) + rng.integers(-20_000, 5_000, n)
    cents = rng.integers(9_000, 11_000, n)
    values = [
        tick_bytes(names[k], i, int(t), int(c) / 100, volume=int(v), bid_size=1, ask_size=1)
        for i, (t, c, v, k) in enumerate(
            zip(ts, cents, rng.integers(0, 2_000, n), rng.integers(0, tickers, n), strict=True)
        )
    ]  # fmt: skip
    values[100:100] = [b"garbage", b'{"ticker":"S01"}']
    # one tick per ticker two days later closes every window, 1d included
    values += [
        tick_bytes(name, n + i, T0 + 2 * 86_400_000, 100.0, volume=1, bid_size=1, ask_size=1)
        for i, name in enumerate(names)
    ]  # fmt: skip
    return values


def expected(values: list[bytes], batch: int) -> tuple[list[Bar], list[bytes]]:
    cfg = SETTINGS.aggregation_config()
    bars: dict[str, TickerBars] = {}
    finals: list[Bar] = []
    dead: list[bytes] = []
    for i in range(0, len(values), batch):
        decoded, bad = decode_batch(values[i : i + batch])
        result = partial_bars(decoded, cfg.lengths[0], cfg.grace_ms)
        dead += [d.raw for d in bad]
        per: dict[str, list[TickChunk]] = defaultdict(list)
        for ticker, chunk in result.chunks:
            per[ticker].append(chunk)
        for ticker, chunks in per.items():
            emitted = bars.setdefault(ticker, TickerBars(cfg, ticker)).on_chunks(chunks, 0)
            finals += emitted.finals
            dead += [d.raw for d in emitted.late]
    return finals, dead


def run_flow(values: list[bytes], batch: int, workers: int) -> tuple[list[Bar], list[DeadLetter], list[list[WireTick]]]:
    finals: list[Bar] = []
    dead: list[DeadLetter] = []
    latest: list[list[WireTick]] = []
    flow = build_flow(
        TestingSource(values, batch_size=batch),
        final_sink=TestingSink(finals),
        dead_letter_sink=TestingSink(dead),
        latest_sink=TestingSink(latest),
        settings=SETTINGS,
    )
    if workers == 1:
        run_main(flow)  # type: ignore[no-untyped-call]
    else:
        cluster_main(flow, [], 0, worker_count_per_proc=workers)  # type: ignore[no-untyped-call]
    return finals, dead, latest


def key(bar: Bar) -> tuple[str, str, int]:
    return (bar.ticker, bar.timeframe, bar.start)


@pytest.fixture(scope="module")
def values() -> list[bytes]:
    return make_values()


@pytest.mark.parametrize("workers", [1, 2])
def test_flow_matches_pure_logic(values: list[bytes], workers: int) -> None:
    finals, dead, latest = run_flow(values, batch=500, workers=workers)
    want_finals, want_dead = expected(values, batch=500)
    assert sorted(finals, key=key) == sorted(want_finals, key=key)
    assert sorted(d.raw for d in dead) == sorted(want_dead)
    assert {d.kind for d in dead} == {"malformed", "late"}
    # every window of every timeframe closed, each exactly once
    assert len({key(b) for b in finals}) == len(finals)
    assert {b.timeframe for b in finals} == set(TIMEFRAMES)
    assert all(b.final and b.indicators is not None for b in finals)
    assert all(isinstance(t, WireTick) for batch in latest for t in batch)


def test_two_workers_and_batch_sizes_give_identical_bars(values: list[bytes]) -> None:
    one, dead_one, _ = run_flow(values, batch=1_000, workers=1)
    two, dead_two, _ = run_flow(values, batch=1_000, workers=2)
    assert sorted(one, key=key) == sorted(two, key=key)
    assert sorted(d.raw for d in dead_one) == sorted(d.raw for d in dead_two)


def test_indicators_follow_bar_order_per_timeframe(values: list[bytes]) -> None:
    finals, _, _ = run_flow(values, batch=2_000, workers=1)
    ones = sorted((b for b in finals if b.ticker == "S00" and b.timeframe == "1m"), key=lambda b: b.start)
    assert len(ones) >= 60
    closes = [b.close for b in ones]
    sma20 = [b.indicators.sma_20 for b in ones if b.indicators is not None]
    assert sma20[:19] == [None] * 19
    assert sma20[19] == pytest.approx(sum(closes[:20]) / 20, abs=1e-9)
    assert sma20[-1] == pytest.approx(sum(closes[-20:]) / 20, abs=1e-9)


def test_live_mode_timer_closes_a_quiet_tickers_bar() -> None:
    """Live mode: no further tick arrives, yet the bar is final once the (shifted) clock passes end + grace.

    The ticks arrive about when they happened (the test clock starts just after the last one's event time);
    with no newer tick the watermark then moves on with the clock and reaches end + grace ~3 s into the run.
    The source pauses 6 s so the dataflow stays alive for it (a functional check, no timing assertion).
    """
    offset = T0 + MIN - 900 - time.time_ns() // 1_000_000
    clock = lambda: time.time_ns() // 1_000_000 + offset  # noqa: E731
    values: list[Any] = [
        encode_tick(Tick(ticker="Q", seq=i, timestamp=T0 + MIN - 3_000 + 1_000 * i, price=10.0 + i / 100, bid=9.0,
                         ask=11.0, bid_size=1, ask_size=1, volume=10, version=1))
        for i in range(3)
    ]  # fmt: skip
    values.append(TestingSource.PAUSE(timedelta(seconds=6)))
    finals: list[Bar] = []
    lives: list[Bar] = []
    dead: list[DeadLetter] = []
    flow = build_flow(
        TestingSource(values),
        final_sink=TestingSink(finals),
        live_sink=TestingSink(lives),
        dead_letter_sink=TestingSink(dead),
        settings=FlowSettings(mode="live", timeframes=("1m", "5m")),
        clock=clock,
    )
    run_main(flow)  # type: ignore[no-untyped-call]
    assert [(b.timeframe, b.start, b.trades, b.close) for b in finals] == [("1m", T0, 3, 10.02)]
    assert lives
    assert not any(b.final for b in lives)
    assert dead == []


def test_abort_and_resume_from_recovery_gives_the_same_final_bars(values: list[bytes], tmp_path: Path) -> None:
    """Bytewax recovery: abort mid-stream, resume from the snapshots; with idempotent sinks (last write per
    key wins) the final bars equal an uninterrupted run, and any replayed final is identical to the first."""
    init_db_dir(tmp_path, 1)  # type: ignore[no-untyped-call]
    items: list[Any] = [*values[:3_000], TestingSource.ABORT(), *values[3_000:]]
    source = TestingSource(items, batch_size=250)
    finals: list[Bar] = []
    dead: list[DeadLetter] = []
    flow = build_flow(source, final_sink=TestingSink(finals), dead_letter_sink=TestingSink(dead), settings=SETTINGS)
    recovery = RecoveryConfig(str(tmp_path))  # type: ignore[no-untyped-call]
    run_main(flow, epoch_interval=timedelta(milliseconds=0), recovery_config=recovery)  # type: ignore[no-untyped-call]
    first_run = len(finals)
    assert 0 < first_run
    run_main(flow, epoch_interval=timedelta(milliseconds=0), recovery_config=recovery)  # type: ignore[no-untyped-call]
    by_key: dict[tuple[str, str, int], Bar] = {}
    for bar in finals:
        assert by_key.setdefault(key(bar), bar) == bar, f"a replayed final differs: {key(bar)}"
    uninterrupted, _, _ = run_flow(values, batch=250, workers=1)
    assert sorted(by_key.values(), key=key) == sorted(uninterrupted, key=key)
    # the second run resumed from a snapshot (mid-stream), it did not start over
    assert len(finals) - first_run < len(uninterrupted)


def test_resume_under_other_indicator_periods_fails_naming_the_setting(values: list[bytes], tmp_path: Path) -> None:
    """The recovery store holds state shaped by the old periods: the restarted flow stops with an error naming
    the setting and the reset, instead of computing old periods for old tickers and new ones for new tickers."""
    init_db_dir(tmp_path, 1)  # type: ignore[no-untyped-call]
    recovery = RecoveryConfig(str(tmp_path))  # type: ignore[no-untyped-call]
    # nothing after the abort: the state is loaded, and the mismatch found, at start-up, before any input
    source = TestingSource([*values[:1_000], TestingSource.ABORT()], batch_size=250)

    def run(settings: FlowSettings) -> list[Bar]:
        finals: list[Bar] = []
        flow = build_flow(source, final_sink=TestingSink(finals), dead_letter_sink=TestingSink([]), settings=settings)
        run_main(flow, epoch_interval=timedelta(milliseconds=0), recovery_config=recovery)  # type: ignore[no-untyped-call]
        return finals

    assert run(SETTINGS)
    changed = FlowSettings(mode="backfill", live_enabled=False, sma_periods=(2, 3, 4))
    with pytest.raises(SnapshotMismatchError, match=r"FLOW_SMA_PERIODS was \(20, 50, 200\).*now \(2, 3, 4\)") as info:
        run(changed)
    assert "recovery store" in str(info.value)
