"""Tests of :mod:`flows.aggregation`: exact bars, late ticks, timers, exactly-once finals, properties."""

from __future__ import annotations

import pickle
import re
from collections import defaultdict
from dataclasses import dataclass

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.bar import TIMEFRAMES, Bar, bar_problem, decode_bar, encode_bar
from flows.aggregation import AggregationConfig, Emitted, FlowBar, TickChunk, TickerBars, partial_bars
from flows.decode import DeadLetter, decode_batch
from tests.ticks import tick_bytes

T0 = 1_705_276_800_000  # 2024-01-15 00:00:00 UTC, a day boundary
MIN = 60_000
BACKFILL = AggregationConfig(close_on_system_time=False, live_enabled=False)


def tick(ts: int, cents: int, volume: int = 100, ticker: str = "AAA", seq: int = 0) -> bytes:
    return tick_bytes(ticker, seq, ts, cents / 100, volume=volume, bid_size=1, ask_size=1)


@dataclass
class Run:
    finals: list[Bar]
    lives: list[Bar]
    late: list[DeadLetter]
    duplicates: int


class Driver:
    """The flow's logic without Bytewax: decode, pre-aggregate, one TickerBars per ticker."""

    def __init__(self, config: AggregationConfig = BACKFILL) -> None:
        self.config = config
        self.tickers: dict[str, TickerBars] = {}
        self.run = Run([], [], [], 0)

    def feed(self, values: list[bytes], now_ms: int = 0) -> Driver:
        batch, dead = decode_batch(values)
        assert dead == []
        result = partial_bars(batch, self.config.lengths[0], self.config.grace_ms)
        per: dict[str, list[TickChunk]] = defaultdict(list)
        for ticker, chunk in result.chunks:
            per[ticker].append(chunk)
        for ticker, chunks in per.items():
            bars = self.tickers.setdefault(ticker, TickerBars(self.config, ticker))
            self._collect(bars.on_chunks(chunks, now_ms))
        return self

    def clock(self, now_ms: int) -> Driver:
        for bars in self.tickers.values():
            self._collect(bars.on_time(now_ms))
        return self

    def _collect(self, emitted: Emitted) -> None:
        self.run.finals.extend(emitted.finals)
        self.run.lives.extend(emitted.lives)
        self.run.late.extend(emitted.late)
        self.run.duplicates += emitted.duplicates_suppressed

    def final(self, timeframe: str, ticker: str = "AAA") -> list[Bar]:
        return [b for b in self.run.finals if b.timeframe == timeframe and b.ticker == ticker]


def test_one_minute_bar_is_exact() -> None:
    d = Driver().feed(
        [
            tick(T0 + 1_000, 15_234, 100),
            tick(T0 + 2_000, 15_240, 300),
            tick(T0 + 3_000, 15_201, 100),
            tick(T0 + 59_999, 15_222, 0),
        ]  # fmt: skip
    )
    assert d.run.finals == []  # the window is still open
    d.feed([tick(T0 + MIN + 2_000, 15_300)])  # watermark = end + grace: closes [T0, T0+1m)
    (bar,) = d.final("1m")
    assert (bar.start, bar.end) == (T0, T0 + MIN)
    assert (bar.open, bar.high, bar.low, bar.close) == (152.34, 152.40, 152.01, 152.22)
    assert (bar.volume, bar.trades, bar.first_tick, bar.last_tick) == (500, 4, T0 + 1_000, T0 + 59_999)
    assert bar.vwap == (15_234 * 100 + 15_240 * 300 + 15_201 * 100) / 500 / 100
    assert bar.final
    assert bar.indicators is not None
    assert bar.indicators.sma_20 is None


def test_zero_volume_bar_has_vwap_equal_to_close() -> None:
    d = Driver().feed([tick(T0, 10_000, 0), tick(T0 + 5, 10_002, 0), tick(T0 + 10 * MIN, 10_000)])
    (bar,) = d.final("1m")
    assert bar.volume == 0
    assert bar.vwap == bar.close == 100.02


def test_out_of_order_within_grace_is_accepted_in_event_time_order() -> None:
    d = Driver().feed([tick(T0 + 30_000, 10_010), tick(T0 + MIN + 500, 10_050), tick(T0 + 10_000, 10_000)])
    d.feed([tick(T0 + MIN + 1_000, 10_060), tick(T0 + 59_000, 10_020)])  # watermark 61.0 s < end + grace
    d.feed([tick(T0 + 5 * MIN, 10_000)])
    first = d.final("1m")[0]
    assert (first.open, first.close, first.trades) == (100.00, 100.20, 3)
    assert d.run.late == []


@pytest.mark.parametrize("split", [False, True])
def test_late_tick_is_dead_lettered_and_never_changes_the_final_bar(split: bool) -> None:
    on_time = [tick(T0 + 1_000, 10_000), tick(T0 + MIN + 2_000, 10_100)]  # closes [T0, T0+1m)
    late = tick(T0 + 59_000, 99_900)
    d = Driver()
    if split:
        d.feed(on_time).feed([late])
    else:
        d.feed([*on_time, late])
    d.feed([tick(T0 + 10 * MIN, 10_000)])
    assert [x.raw for x in d.run.late] == [late]
    assert d.run.late[0].kind == "late"
    # one wording whether the tick was late within its batch (seq and time known) or against the ticker's state
    which = "" if split else r" seq=\d+ at \d+"
    window = rf"1m window \[{T0}, {T0 + MIN}\) already closed"
    pattern = rf"late tick 'AAA'{which}: {window} \(watermark {T0 + MIN + 2_000}, grace 2000 ms"
    assert re.match(pattern, d.run.late[0].reason), d.run.late[0].reason
    bars = d.final("1m")
    assert [b.start for b in bars] == [T0, T0 + MIN]
    assert bars[0].high == 100.00
    assert bars[0].trades == 1


def test_tick_exactly_at_grace_boundary_is_late_and_one_ms_before_is_not() -> None:
    d = Driver().feed([tick(T0, 10_000), tick(T0 + MIN + 1_999, 10_000), tick(T0 + 59_999, 10_001)])
    assert d.run.late == []
    d.feed([tick(T0 + MIN + 2_000, 10_000), tick(T0 + 59_999, 10_002)])
    assert len(d.run.late) == 1


def test_windows_align_to_utc_epoch_and_empty_intervals_make_no_bar() -> None:
    d = Driver().feed([tick(T0 + 17_000, 10_000), tick(T0 + 4 * MIN + 1, 10_000), tick(T0 + 2 * 86_400_000, 10_000)])
    assert [b.start for b in d.final("1m")] == [T0, T0 + 4 * MIN]
    assert [b.start for b in d.final("5m")] == [T0]
    assert [(b.start, b.end) for b in d.final("1d")] == [(T0, T0 + 86_400_000)]
    for b in d.run.finals:
        assert b.start % TIMEFRAMES[b.timeframe] == 0


def test_quiet_ticker_closes_on_the_clock_in_live_mode() -> None:
    live = AggregationConfig(live_enabled=False)
    bars = TickerBars(live, "AAA")
    d = Driver(live)
    d.tickers["AAA"] = bars
    # the tick arrives 100 ms after its event time: the watermark then moves on with the system clock, so
    # the window [T0, T0+1m) closes when the clock has run 1m + grace past the tick, 100 ms after end + grace
    d.feed([tick(T0 + 1_000, 10_000)], now_ms=T0 + 1_100)
    assert bars.next_deadline_ms() == T0 + MIN + 2_100
    d.clock(T0 + MIN + 2_099)
    assert d.run.finals == []
    d.clock(T0 + MIN + 2_100)
    assert [b.timeframe for b in d.run.finals] == ["1m"]
    # a tick for the closed window arriving afterwards is late, even though its event time is the newest
    d.feed([tick(T0 + 59_000, 10_500)], now_ms=T0 + MIN + 2_500)
    assert len(d.run.late) == 1
    d.clock(T0 + 2 * 86_400_000)
    assert sorted(b.timeframe for b in d.run.finals) == sorted(TIMEFRAMES)
    assert d.tickers["AAA"].next_deadline_ms() is None


def test_live_mode_closes_historic_ticks_on_event_time() -> None:
    """A backfill replayed at full speed in live mode: days-old ticks are not late, and bars close as their
    event time passes, because the clock only extrapolates the watermark from when the newest tick arrived."""
    live = AggregationConfig(live_enabled=False)
    d = Driver(live)
    now = T0 + 3 * 86_400_000  # the wall clock is days ahead of the ticks' event time
    d.feed([tick(T0 + 1_000, 10_000)], now_ms=now)
    d.feed([tick(T0 + 30_000, 10_100)], now_ms=now + 5)
    assert d.run.late == []
    assert d.run.finals == []
    d.feed([tick(T0 + MIN + 2_500, 10_200)], now_ms=now + 10)
    assert d.run.late == []
    assert [(b.timeframe, b.start, b.close) for b in d.run.finals] == [("1m", T0, 101.0)]


def test_backfill_mode_ignores_the_clock() -> None:
    d = Driver().feed([tick(T0 + 1_000, 10_000)], now_ms=T0 + 10 * 86_400_000)
    d.clock(T0 + 10 * 86_400_000)
    assert d.run.finals == []
    assert d.run.late == []
    assert d.tickers["AAA"].next_deadline_ms() is None


def test_a_window_is_never_finalized_twice() -> None:
    """Even if the open window is recreated (what a reopened Bytewax window would do), no second final."""
    d = Driver().feed([tick(T0 + 1_000, 10_000), tick(T0 + 3 * MIN, 10_000)])
    bars = d.tickers["AAA"]
    assert len(d.final("1m")) == 1
    state = bars.state
    # simulate a reopened window: inject an open accumulator for the already final [T0, T0+1m) window
    state.open_base[T0] = state.open_base[T0 + 3 * MIN].copy(T0)
    state.frontier = state.watermark = T0  # and a state that forgot how far it had closed
    d.feed([tick(T0 + 10 * MIN, 10_000)])
    assert [b.start for b in d.final("1m")] == [T0, T0 + 3 * MIN]
    assert d.run.duplicates == 1
    # and ticks for a window already final are late even when the watermark would accept them
    d.tickers["AAA"].state.frontier = d.tickers["AAA"].state.watermark = T0
    d.feed([tick(T0 + 2_000, 10_000)])
    assert len(d.run.late) == 1
    assert len(d.final("1m")) == 2


def test_snapshot_restore_resumes_identically() -> None:
    values = [tick(T0 + i * 7_919, 10_000 + (i * 37) % 200, i % 500) for i in range(400)]
    whole = Driver().feed(values)
    part = Driver().feed(values[:150])
    snapshot = pickle.loads(pickle.dumps(part.tickers["AAA"].snapshot()))  # as Bytewax stores it
    part.tickers["AAA"] = TickerBars.restore(BACKFILL, snapshot)
    part.feed(values[150:])
    assert part.run.finals == whole.run.finals


def test_live_bars_are_throttled_and_not_final() -> None:
    cfg = AggregationConfig(close_on_system_time=False, live_interval_ms=250)
    d = Driver(cfg)
    d.feed([tick(T0 + 1_000, 10_000)], now_ms=1_000)
    assert sorted(b.timeframe for b in d.run.lives) == sorted(TIMEFRAMES)
    assert not any(b.final for b in d.run.lives)
    assert [bar_problem(b) for b in d.run.lives] == [None] * 5
    d.feed([tick(T0 + 2_000, 10_100)], now_ms=1_100)
    assert len(d.run.lives) == 5  # throttled
    d.feed([tick(T0 + 3_000, 10_050)], now_ms=1_250)
    assert len(d.run.lives) == 10
    latest_5m = [b for b in d.run.lives if b.timeframe == "5m"][-1]
    assert (latest_5m.high, latest_5m.close, latest_5m.trades) == (101.0, 100.5, 3)
    by_ticks = Driver(AggregationConfig(close_on_system_time=False, live_interval_ms=10**9, live_every_ticks=2))
    by_ticks.feed([tick(T0 + 1_000, 10_000)], now_ms=10**9 + 1).feed([tick(T0 + 1_500, 10_000)], now_ms=10**9 + 2)
    by_ticks.feed([tick(T0 + 1_600, 10_000)], now_ms=10**9 + 3).feed([tick(T0 + 1_700, 10_000)], now_ms=10**9 + 4)
    assert len(by_ticks.run.lives) == 10


@pytest.mark.parametrize(
    "kwargs",
    [{"timeframes": ()}, {"timeframes": ("1m", "2m")}, {"timeframes": ("5m", "1m")}, {"grace_ms": -1}],
)
def test_invalid_config_is_rejected(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="="):
        AggregationConfig(**kwargs)  # type: ignore[arg-type]


# --- property tests against a tick-by-tick reference ---------------------------------------------------------


Expected = dict[tuple[str, int], tuple[int, int, int, int, int, int, int]]


def reference(ticks: list[tuple[str, int, int, int]], grace: int, timeframe_ms: int, base_ms: int = MIN) -> Expected:
    """Final bars by brute force: per ticker, a tick is late iff base end + grace <= max earlier event time;
    windows closed by the last watermark are final; OHLC in (event time, arrival) order."""
    watermark: dict[str, int] = {}
    accepted: dict[tuple[str, int], list[tuple[int, int, int, int]]] = defaultdict(list)
    for arrival, (ticker, ts, cents, vol) in enumerate(ticks):
        end = ts // base_ms * base_ms + base_ms
        if ticker in watermark and end + grace <= watermark[ticker]:
            continue
        watermark[ticker] = max(watermark.get(ticker, ts), ts)
        accepted[ticker, ts // timeframe_ms * timeframe_ms].append((ts, arrival, cents, vol))
    out: Expected = {}
    for (ticker, start), rows in accepted.items():
        if start + timeframe_ms + grace > watermark[ticker]:
            continue
        rows.sort()
        prices = [r[2] for r in rows]
        vol = sum(r[3] for r in rows)
        pv = sum(r[2] * r[3] for r in rows)
        out[ticker, start] = (prices[0], max(prices), min(prices), prices[-1], vol, pv, len(rows))
    return out


tick_streams = st.lists(
    st.tuples(
        st.sampled_from(["AAA", "BBB", "CCC"]),
        st.integers(0, 40 * MIN),
        st.integers(9_000, 11_000),
        st.integers(0, 5_000),
    ),
    min_size=1,
    max_size=150,
)


@settings(max_examples=60, deadline=None)
@given(ticks=tick_streams, cuts=st.lists(st.integers(0, 150), max_size=4), grace=st.sampled_from([0, 2_000, 90_000]))
def test_bars_equal_the_reference_and_hold_invariants(ticks, cuts, grace) -> None:  # type: ignore[no-untyped-def]
    # a gentle drift forward so streams look like markets, with hypothesis choosing the disorder
    stream = [(t, T0 + ts + i * 1_000, c, v) for i, (t, ts, c, v) in enumerate(ticks)]
    values = [tick(ts, c, v, ticker=t, seq=i) for i, (t, ts, c, v) in enumerate(stream)]
    cfg = AggregationConfig(grace_ms=grace, close_on_system_time=False, live_enabled=False)
    d = Driver(cfg)
    bounds = [0, *sorted(c for c in cuts if c < len(values)), len(values)]
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        if hi > lo:
            d.feed(values[lo:hi])
    for tf in cfg.timeframes:
        length = TIMEFRAMES[tf]
        expected = reference(stream, grace, length)
        got = {
            (b.ticker, b.start): (
                round(b.open * 100), round(b.high * 100), round(b.low * 100), round(b.close * 100), b.volume,
                b.trades,
            )
            for b in d.run.finals
            if b.timeframe == tf
        }  # fmt: skip
        assert got == {k: (o, h, lo_, c, v, n) for k, (o, h, lo_, c, v, _, n) in expected.items()}, tf
        for b in d.run.finals:
            assert b.low <= min(b.open, b.close) <= max(b.open, b.close) <= b.high
            assert b.low - 1e-9 <= b.vwap <= b.high + 1e-9
            assert bar_problem(b) is None  # the contract's own check, which FlowBar skips at construction
    # five (or fewer, non-empty) 1m bars sum to their 5m bar; OHLC consistent across timeframes
    ones = defaultdict(list)
    for b in d.run.finals:
        if b.timeframe == "1m":
            ones[b.ticker, b.start // (5 * MIN) * (5 * MIN)].append(b)
    for b in d.run.finals:
        if b.timeframe != "5m":
            continue
        parts = sorted(ones[b.ticker, b.start], key=lambda x: x.start)
        assert sum(p.volume for p in parts) == b.volume
        assert sum(p.trades for p in parts) == b.trades
        assert (parts[0].open, parts[-1].close) == (b.open, b.close)
        assert max(p.high for p in parts) == b.high
        assert min(p.low for p in parts) == b.low
    # accepted + late = all ticks
    accepted = sum(b.trades for b in d.run.finals if b.timeframe == "1m")
    still_open = sum(a.trades for bars in d.tickers.values() for a in bars.state.open_base.values())
    assert accepted + still_open + len(d.run.late) == len(values)


def test_batch_with_many_tickers_matches_one_by_one() -> None:
    rng = np.random.default_rng(5)
    n = 3_000
    names = [f"T{i:03d}" for i in range(40)]
    ts = T0 + np.sort(rng.integers(0, 30 * MIN, n)) + rng.integers(-15_000, 15_000, n)
    values = [
        tick(int(t), int(c), int(v), ticker=names[k], seq=i)
        for i, (t, c, v, k) in enumerate(
            zip(ts, rng.integers(9_000, 11_000, n), rng.integers(0, 1_000, n), rng.integers(0, 40, n), strict=True)
        )
    ]
    batched = Driver()
    for i in range(0, n, 1_000):
        batched.feed(values[i : i + 1_000])
    single = Driver()
    for v in values:
        single.feed([v])
    key = lambda b: (b.ticker, b.timeframe, b.start)  # noqa: E731
    assert sorted(batched.run.finals, key=key) == sorted(single.run.finals, key=key)
    assert sorted(x.raw for x in batched.run.late) == sorted(x.raw for x in single.run.late)
    assert len(batched.run.late) > 0


def test_chunk_pickles_only_its_own_values() -> None:
    values = [tick(T0 + i, 10_000, ticker=f"K{i % 50:02d}", seq=i) for i in range(2_000)]
    batch, _ = decode_batch(values)
    result = partial_bars(batch, MIN, 2_000)
    ticker, chunk = result.chunks[3]
    copy = pickle.loads(pickle.dumps(chunk))
    assert copy.ticker == ticker
    assert copy.segments == chunk.segments
    assert [copy.raw(i) for i in range(copy.ticks)] == [chunk.raw(i) for i in range(chunk.ticks)]
    assert len(pickle.dumps(chunk)) < sum(len(v) for v in values) / 20


def test_flow_bar_equals_encodes_and_hashes_like_the_contract_bar() -> None:
    d = Driver().feed([tick(T0 + 1_000, 10_000, 7), tick(T0 + 2_000, 10_100, 3), tick(T0 + 3 * MIN, 10_000)])
    (built,) = d.final("1m")
    fields = msgspec.structs.asdict(built)
    contract = Bar(**fields)
    assert built == contract
    assert contract == built
    assert not built != contract  # noqa: SIM202 -- __ne__ is reflected separately from __eq__
    assert hash(built) == hash(FlowBar(**fields))
    assert encode_bar(built) == encode_bar(contract)
    assert decode_bar(encode_bar(built)) == built
    assert built != msgspec.structs.replace(contract, volume=built.volume + 1)


def test_last_live_bar_of_each_timeframe_equals_its_final_bar() -> None:
    """Live bars of longer timeframes merge the closed 1m bars (roll-ups) with the open 1m windows."""
    cfg = AggregationConfig(close_on_system_time=False, live_interval_ms=0)
    d = Driver(cfg)
    rng = np.random.default_rng(4)
    ts = T0 + np.sort(rng.integers(0, 4 * MIN, 60))
    for i in range(0, 60, 7):  # several batches: some 1m windows close (roll-ups), others stay open
        d.feed([tick(int(t), int(c), int(v)) for t, c, v in zip(ts[i : i + 7], rng.integers(9_900, 10_100, 7),
                                                                  rng.integers(0, 50, 7), strict=False)])  # fmt: skip
    last_live = {b.timeframe: b for b in d.run.lives}
    d.feed([tick(T0 + 2 * 86_400_000, 10_000)])  # closes everything
    for tf in ("5m", "15m", "1h", "1d"):
        (final,) = [b for b in d.final(tf) if b.start == T0]
        live = msgspec.structs.replace(last_live[tf], final=True, indicators=final.indicators, lag_ms=msgspec.UNSET)
        assert live == final, tf


def test_live_bars_carry_the_processing_lag_of_the_newest_tick_merged_and_finals_do_not() -> None:
    """``lag_ms`` = the clock of the merge minus the newest event time it merged (not the watermark: an
    out-of-order tick merged later is judged by its own time); every timeframe's live bar carries it; final bars
    have none and encode without the field (their bytes replay identically)."""
    d = Driver(AggregationConfig(close_on_system_time=False, live_interval_ms=0))
    d.feed([tick(T0 + 1_000, 10_000), tick(T0 + 1_500, 10_010)], now_ms=T0 + 1_537)
    assert {b.timeframe: b.lag_ms for b in d.run.lives} == dict.fromkeys(("1m", "5m", "15m", "1h", "1d"), 37)
    d.run.lives.clear()
    d.feed([tick(T0 + 1_200, 10_020)], now_ms=T0 + 1_700)  # out of order: 500 ms after its event time
    assert {b.lag_ms for b in d.run.lives} == {500}
    d.run.lives.clear()
    d.feed([tick(T0 + 2_000, 10_020)], now_ms=T0 + 1_990)  # a producer clock ahead of ours: never negative
    assert {b.lag_ms for b in d.run.lives} == {0}
    d.feed([tick(T0 + 2 * 86_400_000, 10_000)], now_ms=T0 + 2 * 86_400_000 + 5)  # closes everything
    assert d.run.finals
    assert all(b.lag_ms is msgspec.UNSET for b in d.run.finals)
    assert all(b"lag_ms" not in encode_bar(b) for b in d.run.finals)
    assert b'"lag_ms":5' in encode_bar(d.run.lives[-1])


def test_batch_tally_counts_every_valid_tick_per_ticker_late_ones_included() -> None:
    values = [tick(T0 + 5 * MIN, 10_000, ticker="AAA", seq=0), tick(T0 + 1_000, 10_000, ticker="AAA", seq=1)]
    values += [tick(T0 + i, 10_000, ticker=f"K{i % 3}", seq=i) for i in range(10)]
    batch, _ = decode_batch(values)
    result = partial_bars(batch, MIN, 2_000)
    # AAA's second tick is late against its first in the same batch: held in AAA's chunk for the shard to decide
    held = {ticker: chunk.held for ticker, chunk in result.chunks}
    assert held["AAA"] is not None
    assert [x.raw for x in held["AAA"][1]] == [values[1]]
    assert held["K0"] is None
    names, counts = result.tally
    assert dict(zip(names, counts, strict=True)) == {"AAA": 2, "K0": 4, "K1": 3, "K2": 3}
    assert partial_bars(decode_batch([])[0], MIN, 2_000).tally == ([], [])


def test_huge_volumes_sum_exactly_and_never_overflow_a_bar() -> None:
    """Volumes up to the decoder's 2**53 per tick: segment sums are exact (1,024 of them wrap an int64), and ticks
    that would take a bar past what its longest-timeframe bar can hold in 64 bits are dead letters, not lost."""
    big = 2**53
    values = [tick(T0 + i, 10_000, big, seq=i) for i in range(1_025)]
    batch, dead = decode_batch(values)
    assert dead == []
    ((_, chunk),) = partial_bars(batch, MIN, 2_000).chunks
    assert [seg[5] for seg in chunk.segments] == [1_025 * big]  # exact, no wrap-around

    cap = (2**63 - 1) // (TIMEFRAMES["1d"] // MIN)  # 1,440 one-minute bars make a 1d bar
    v = 2**40
    fits = cap // v  # ticks of volume v one minute can hold
    values = [tick(T0 + i, 10_000, v, seq=i) for i in range(fits + 10)]
    d = Driver().feed(values[:fits]).feed(values[fits:])  # the bar fills up in one batch; the next would pass it
    d.feed([tick(T0 + 2 * MIN, 10_000, 1, seq=10**6)])  # closes the first minute
    (bar,) = d.final("1m")
    assert bar.volume == fits * v <= cap
    assert bar_problem(bar) is None
    assert [x.raw for x in d.run.late] == values[fits:]  # every rejected tick kept with its bytes
    assert {x.kind for x in d.run.late} == {"malformed"}
    assert "volume overflow 'AAA'" in d.run.late[0].reason
