"""Tests of :mod:`flows.shards`: stable shard keys, per-ticker results unchanged, snapshots, timers."""

from __future__ import annotations

import pickle
import zlib
from collections import defaultdict

import numpy as np
import pytest

from contracts.bar import Bar
from flows.aggregation import AggregationConfig, TickChunk, TickerBars, partial_bars
from flows.decode import decode_batch
from flows.shards import ShardBars, ShardKeys
from tests.ticks import tick_bytes

T0 = 1_705_276_800_000
MIN = 60_000
BACKFILL = AggregationConfig(close_on_system_time=False, live_enabled=False)


def values(n: int = 3_000, tickers: int = 30, seed: int = 2) -> list[bytes]:
    rng = np.random.default_rng(seed)
    ts = T0 + np.sort(rng.integers(0, 20 * MIN, n)) + rng.integers(-5_000, 1_000, n)
    return [
        tick_bytes(f"X{k:02d}", i, int(t), int(c) / 100, volume=int(c) % 7, bid_size=1, ask_size=1)
        for i, (t, c, k) in enumerate(zip(ts, rng.integers(9_000, 11_000, n), rng.integers(0, tickers, n), strict=True))
    ]  # fmt: skip


def batches(vals: list[bytes], size: int = 500) -> list[list[tuple[str, TickChunk]]]:
    out = []
    for i in range(0, len(vals), size):
        decoded, _ = decode_batch(vals[i : i + size])
        out.append(partial_bars(decoded, MIN, BACKFILL.grace_ms).chunks)
    return out


def test_shard_keys_are_stable_crc32_and_validated() -> None:
    keys = ShardKeys(64)
    assert keys.key("AAPL") == f"s{zlib.crc32(b'AAPL') % 64}"  # never Python's salted hash()
    assert keys.key("AAPL") == ShardKeys(64).key("AAPL")
    assert {ShardKeys(1).key(t) for t in ("A", "B", "C")} == {"s0"}
    with pytest.raises(ValueError, match="shards=0"):
        ShardKeys(0)


def test_shards_give_the_same_bars_and_late_ticks_as_one_state_per_ticker() -> None:
    keys = ShardKeys(4)
    shards: dict[str, ShardBars] = {}
    per_ticker: dict[str, TickerBars] = {}
    got: list[Bar] = []
    want: list[Bar] = []
    got_late: list[bytes] = []
    want_late: list[bytes] = []
    for chunks in batches(values()):
        for key, own in keys.grouped(chunks):
            finals, _, late, _ = shards.setdefault(key, ShardBars(BACKFILL)).on_chunks(own, 0)
            got += finals
            got_late += [d.raw for d in late]
        by_ticker: dict[str, list[TickChunk]] = defaultdict(list)
        for ticker, chunk in chunks:
            by_ticker[ticker].append(chunk)
        for ticker, own in by_ticker.items():
            emitted = per_ticker.setdefault(ticker, TickerBars(BACKFILL, ticker)).on_chunks(own, 0)
            want += emitted.finals
            want_late += [d.raw for d in emitted.late]
    key = lambda b: (b.ticker, b.timeframe, b.start)  # noqa: E731
    assert len(shards) == 4
    assert sorted(got, key=key) == sorted(want, key=key)
    assert sorted(got_late) == sorted(want_late)
    assert len(want) > 100


def test_snapshot_restore_resumes_identically() -> None:
    chunks = [c for batch in batches(values(tickers=5)) for _, c in batch]
    whole = ShardBars(BACKFILL)
    expected = whole.on_chunks(chunks, 0)[0]
    part = ShardBars(BACKFILL)
    first = part.on_chunks(chunks[:40], 0)[0]
    restored = ShardBars.restore(BACKFILL, pickle.loads(pickle.dumps(part.snapshot())))
    assert first + restored.on_chunks(chunks[40:], 0)[0] == expected
    with pytest.raises(TypeError, match="expected a dict of TickerState"):
        ShardBars.restore(BACKFILL, pickle.dumps([1, 2]))


def test_timer_runs_only_the_tickers_that_are_due() -> None:
    live = AggregationConfig(live_enabled=False)
    shard = ShardBars(live)
    decoded, _ = decode_batch(values(n=1, tickers=1))
    (ticker, chunk), *_ = partial_bars(decoded, MIN, live.grace_ms).chunks
    arrival = T0 + 1_000_000
    shard.on_chunks([chunk], arrival)
    deadline = shard.next_deadline_ms()
    assert deadline is not None
    assert shard.on_time(deadline - 1)[0] == []
    finals = shard.on_time(deadline)[0]
    assert [(b.ticker, b.timeframe) for b in finals] == [(ticker, "1m")]
    assert ShardBars(BACKFILL).next_deadline_ms() is None


def _scan(shard: ShardBars) -> int | None:
    deadlines = [d for d in (b.next_deadline_ms() for b in shard.tickers.values()) if d is not None]
    return min(deadlines, default=None)


def test_cached_deadline_is_never_later_than_a_full_scan_and_exact_after_on_time() -> None:
    live = AggregationConfig()
    shard = ShardBars(live)
    decoded, _ = decode_batch(values(n=30, tickers=5))
    chunks = [chunk for _, chunk in partial_bars(decoded, MIN, live.grace_ms).chunks]
    now = T0 + 1_000_000
    for i, chunk in enumerate(chunks):
        shard.on_chunks([chunk], now + i)
        cached, scanned = shard.next_deadline_ms(), _scan(shard)
        assert cached is not None
        assert scanned is not None
        assert cached <= scanned
    for step in range(5):
        shard.on_time(now + step * 30_000)
        assert shard.next_deadline_ms() == _scan(shard)
