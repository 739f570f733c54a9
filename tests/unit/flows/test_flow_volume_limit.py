"""The volume limit and the newest tick per ticker depend only on the records and their order, not on the batches.

Three audit findings, each checked against the rule taken one tick at a time: the volume limit rejected all of a
batch's ticks for a window at once, even those that fit (the bars then depended on the batch cuts, and a replay
could publish a second, different final bar); a tick rejected for volume still raised its batch's watermark, so
later ticks of the batch were late against a watermark the ticker never had; and the newest tick per ticker of a
batch was chosen by (timestamp, arrival), while the Redis compare-and-set of ``latest_price:{ticker}`` orders by
(timestamp, seq).
"""

from __future__ import annotations

import pickle
from collections import defaultdict

import numpy as np
import pytest
from bytewax.testing import TestingSink, TestingSource, run_main

from contracts.bar import Bar
from contracts.tick import MAX_INT64
from flows.aggregation import AggregationConfig, TickChunk, TickerBars, partial_bars
from flows.bars import build_flow
from flows.decode import DeadLetter, WireTick, decode_batch
from flows.settings import FlowSettings
from tests.bar_rule import CAP, GRACE, MIN, Outcome, Record, content, idle, one_minute, oracle, record, to_batches
from tests.ticks import tick_bytes

T0 = 1_705_276_800_000  # 2024-01-15 00:00 UTC
DAY = 86_400_000
BIG = 2**53  # the largest volume a tick may carry: over the cap on its own
BACKFILL = AggregationConfig(close_on_system_time=False, live_enabled=False)


def value(ticker: str, seq: int, ts: int, cents: int = 10_000, volume: int = 1) -> bytes:
    return tick_bytes(ticker, seq, ts, cents / 100, volume=volume, bid_size=1, ask_size=1)


def tick(ticker: str, seq: int, ts: int, cents: int = 10_000, volume: int = 1, stamp: int | None = None) -> Record:
    return record(ticker, seq, ts, ts if stamp is None else stamp, cents, volume)


def stream(seed: int, n: int = 240) -> list[Record]:
    """Three tickers with volumes from a few shares to over the limit on their own, so windows fill up and
    overflow part-way through batches; a few ticks seconds or minutes late; ticks sharing a timestamp with an
    earlier one of their ticker but a lower seq. Each ticker ends on two ticks of the same newest timestamp (the
    second read with the lower seq; C's are equal in seq too), then the log moves on far enough to close all."""
    rng = np.random.default_rng(seed)
    names = ["A", "B", "C"]
    sizes = [1, CAP // 3, CAP // 2, CAP - 5, BIG]
    out: list[Record] = []
    last: dict[str, Record] = {}
    now = T0 + 1_000
    for i in range(n):
        now += int(rng.integers(0, 1_500))
        name = names[int(rng.integers(0, len(names)))]
        which = rng.random()
        delay = int(rng.integers(0, 50)) if which < 0.85 else int(rng.integers(1_000, 9_000 if which < 0.95 else MIN))
        size = sizes[int(rng.choice(len(sizes), p=[0.55, 0.2, 0.1, 0.05, 0.1]))]
        volume = size + int(rng.integers(0, 3)) if size < BIG else size
        cents = int(rng.integers(9_000, 11_000))
        seq = 10 * i + 5
        previous = last.get(name)
        ts = now - delay
        if previous is not None and rng.random() < 0.1:  # same event time as the ticker's last tick, lower seq
            ts, seq = previous.ts, previous.seq - 1
        record = tick(name, seq, ts, cents, volume, stamp=now + int(rng.integers(-30, 30)))
        out.append(record)
        last[name] = record
    end = now + 2 * DAY  # far enough to close the 1d windows too
    for k, name in enumerate(names):
        out.append(tick(name, 10 * n + 10 * k + 5, end + k, 10_000 + k, 1, stamp=end + k))
        second = 10 * n + 10 * k + (5 if name == "C" else 4)  # lower seq (C: an equal one)
        out.append(tick(name, second, end + k, 10_100 + k, 1, stamp=end + k))
    out.append(idle(end + 10 * MIN))
    return out


def run(records: list[Record], cuts: list[int], live: bool) -> tuple[Outcome, list[Bar]]:
    """The bars flow over the records cut at ``cuts``; the latest ticks through the sink's compare-and-set."""
    finals: list[Bar] = []
    dead: list[DeadLetter] = []
    latest: list[list[WireTick]] = []
    wall = max(r.stamp for r in records) + 1
    flow = build_flow(
        TestingSource(to_batches(records, cuts, live), batch_size=1),
        final_sink=TestingSink(finals),
        dead_letter_sink=TestingSink(dead),
        latest_sink=TestingSink(latest),
        settings=FlowSettings(mode="live" if live else "backfill", live_enabled=False, grace_ms=GRACE),
        clock=lambda: wall,
    )
    run_main(flow)  # type: ignore[no-untyped-call]
    stored: dict[str, WireTick] = {}
    for ticks in latest:  # flows.sinks._SET_IF_NEWER: set unless the stored tick is newer or equal by (ts, seq)
        for t in ticks:
            old = stored.get(t.ticker)
            if old is None or (t.timestamp, t.seq) > (old.timestamp, old.seq):
                stored[t.ticker] = t
    got = Outcome(
        one_minute(finals),
        sorted((d.kind, d.raw) for d in dead),
        {k: (t.timestamp, t.seq, t.price) for k, t in stored.items()},
    )
    return got, finals


@pytest.mark.parametrize("live", [False, True], ids=["backfill", "live"])
@pytest.mark.parametrize("seed", [3, 8])
def test_bars_dead_letters_and_latest_ticks_do_not_depend_on_the_batches(seed: int, live: bool) -> None:
    records = stream(seed)
    want = oracle(records, live)
    rng = np.random.default_rng(seed)
    cuts = {
        "one record per batch": list(range(len(records))),
        "random cuts": sorted(rng.choice(len(records), 25, replace=False).tolist()),
        "one batch": [],
    }
    every_timeframe = []
    for split, at in cuts.items():
        got, finals = run(records, at, live)
        assert got.bars == want.bars, split
        assert got.dead == want.dead, split
        assert got.latest == want.latest, split
        every_timeframe.append(content(finals))
    assert every_timeframe[0] == every_timeframe[1] == every_timeframe[2]
    # not trivial: windows filled up part-way (some of their ticks accepted, later ones rejected), ticks late,
    # big ticks accepted, and the newest ticks of every ticker tied on their timestamp
    by_raw = {r.raw: r for r in records}
    rejected = {
        (by_raw[raw].ticker, by_raw[raw].ts - by_raw[raw].ts % MIN) for kind, raw in want.dead if kind == "malformed"
    }
    assert {kind for kind, _ in want.dead} == {"late", "malformed"}
    assert rejected & set(want.bars)
    assert any(v > CAP // 2 for *_, v, _ in want.bars.values())
    assert {seq % 10 for _, seq, _ in want.latest.values()} == {5}  # the first read of each tied pair


def driver_run(batches: list[list[bytes]], config: AggregationConfig = BACKFILL) -> tuple[list[Bar], list[DeadLetter]]:
    """Decode, pre-aggregate and merge each batch (the flow without Bytewax); one ticker state per ticker."""
    tickers: dict[str, TickerBars] = {}
    finals: list[Bar] = []
    dead: list[DeadLetter] = []
    for values in batches:
        batch, bad = decode_batch(values)
        assert bad == []
        result = partial_bars(batch, config.lengths[0], config.grace_ms)
        per: dict[str, list[TickChunk]] = defaultdict(list)
        for ticker, chunk in result.chunks:
            per[ticker].append(chunk)
        for ticker, chunks in per.items():
            emitted = tickers.setdefault(ticker, TickerBars(config, ticker)).on_chunks(chunks, 0)
            finals.extend(emitted.finals)
            dead.extend(emitted.late)
    return finals, dead


def one_minute_rows(finals: list[Bar]) -> list[tuple[int, int, float, float, int]]:
    return [(b.start, b.volume, b.open, b.close, b.trades) for b in finals if b.timeframe == "1m"]


@pytest.mark.parametrize("together", [False, True], ids=["one per batch", "one batch"])
def test_ticks_that_fit_are_accepted_though_the_window_overflows_in_the_same_batch(together: bool) -> None:
    """4e15 + 4e15 passes the cap (~6.4e15), so the second tick is a dead letter; the first and third fit and
    make the bar, also when all three come in one batch (they were all rejected together)."""
    v = 4 * 10**15
    values = [value("A", 1, T0 + 1_000, 10_000, v), value("A", 2, T0 + 2_000, 10_001, v)]
    values += [value("A", 3, T0 + 3_000, 10_002, 1), value("A", 4, T0 + 2 * DAY, 10_000, 1)]
    finals, dead = driver_run([values[:3], values[3:]] if together else [[v_] for v_ in values])
    assert one_minute_rows(finals)[0] == (T0, v + 1, 100.00, 100.02, 2)
    assert [d.raw for d in dead] == [values[1]]
    assert dead[0].kind == "malformed"
    assert "volume overflow 'A'" in dead[0].reason
    (day,) = [b for b in finals if b.timeframe == "1d" and b.start == T0]
    assert day.volume == v + 1 <= MAX_INT64


@pytest.mark.parametrize("together", [False, True], ids=["one per batch", "one batch"])
def test_a_tick_rejected_for_volume_raises_no_watermark(together: bool) -> None:
    """B's second tick (10 minutes ahead, over the cap on its own) is rejected; the third, for the first minute,
    is then within grace of the watermark B has (its first tick's), not late against the rejected tick's."""
    values = [value("B", 1, T0 + 1_000, 10_000, 1), value("B", 2, T0 + 10 * MIN, 10_000, BIG)]
    values += [value("B", 3, T0 + 2_000, 10_005, 1), value("B", 4, T0 + 2 * DAY, 10_000, 1)]
    finals, dead = driver_run([values] if together else [[v_] for v_ in values])
    assert one_minute_rows(finals)[0] == (T0, 2, 100.00, 100.05, 2)
    assert [(d.kind, d.raw) for d in dead] == [("malformed", values[1])]


def test_in_live_mode_a_tick_rejected_for_volume_leaves_the_watermark_and_its_log_time() -> None:
    """The watermark and the log time at which it rose (which extrapolate the frontier) are those of the
    accepted ticks only, however the records are cut into batches: tick 2 (next minute, over the cap on its own)
    is rejected, so tick 3 is neither late against it nor leaves the watermark's log time at tick 2's."""
    config = AggregationConfig(live_enabled=False)
    records = [tick("L", 1, T0 + 1_000, stamp=T0 + 1_010), tick("L", 2, T0 + 90_000, volume=BIG, stamp=T0 + 30_010)]
    records.append(tick("L", 3, T0 + 2_000, stamp=T0 + 30_020))
    states = []
    for cuts in ([1, 2], []):
        bars = TickerBars(config, "L")
        dead: list[DeadLetter] = []
        for batch in to_batches(records, cuts, live=True):
            decoded, bad = decode_batch([batch], read_ms=T0 + 31_000)
            assert bad == []
            result = partial_bars(decoded, MIN, config.grace_ms)
            dead += bars.on_chunks([chunk for _, chunk in result.chunks], T0 + 31_000).late
        assert [(d.kind, d.raw) for d in dead] == [("malformed", records[1].raw)], cuts
        states.append((bars.state.watermark, bars.state.watermark_log, bars.state.open_base[T0].volume))
    assert states == [(T0 + 2_000, T0 + 30_020, 2)] * 2


def test_a_chunk_with_held_late_ticks_pickles_and_merges_as_the_original() -> None:
    """An exchange between workers: the pickled chunk keeps its held late ticks (renumbered with its own values)
    and its columns, so a merge redone tick by tick gives the same bars and dead letters."""
    values = [value("Z", 0, T0 + 500), value("H", 1, T0 + 1_000, 10_000, 1)]
    values += [value("H", 2, T0 + 5 * MIN, 10_010, BIG), value("Z", 3, T0 + 600)]
    values += [value("H", 4, T0 + 2_000, 10_020, 1), value("H", 5, T0 + 3_000, 10_030, 20)]
    decoded, _ = decode_batch(values)
    (chunk,) = [c for ticker, c in partial_bars(decoded, MIN, GRACE).chunks if ticker == "H"]
    assert chunk.held is not None
    assert [d.raw for d in chunk.held[1]] == [values[4], values[5]]  # late against tick 2, were it accepted
    copy = pickle.loads(pickle.dumps(chunk))
    assert copy.held is not None
    assert [copy.value(row) for row in copy.held[0]] == [chunk.value(row) for row in chunk.held[0]]
    results = []
    for c in (chunk, copy):
        bars = TickerBars(BACKFILL, "H")
        emitted = bars.on_chunks([c], 0)
        acc = bars.state.open_base[T0]
        results.append(([(d.kind, d.raw) for d in emitted.late], bars.state.watermark, acc.volume, acc.close))
    assert results[0] == results[1] == ([("malformed", values[2])], T0 + 3_000, 22, 10_030)


def test_the_newest_tick_of_a_batch_is_the_newest_by_timestamp_and_seq() -> None:
    """Two ticks of one timestamp, the one with the greater seq read first: the batch's newest is it (as the
    Redis compare-and-set decides), not the one read last; of equal seqs the first read."""
    values = [value("A", 6, T0 + 1_000, 10_006), value("A", 5, T0 + 1_000, 10_005)]
    values += [value("B", 7, T0 + 1_000, 10_007), value("B", 7, T0 + 1_000, 10_008)]
    values += [value("C", 1, T0 + 900, 10_001), value("C", 2, T0 + 1_000, 10_002)]
    values += [value("C", 3, T0 + 1_000, 10_003), value("C", 0, T0 + 999, 10_000)]
    decoded, _ = decode_batch(values)
    latest = partial_bars(decoded, MIN, GRACE).latest
    assert sorted((t.ticker, t.seq, t.price) for t in latest) == [("A", 6, 100.06), ("B", 7, 100.07), ("C", 3, 100.03)]
