"""Tests of :mod:`flows.shards`: stable shard keys, per-ticker results unchanged, snapshots, timers."""

from __future__ import annotations

import pickle
import zlib
from collections import defaultdict

import numpy as np
import pytest

from common.errors import ConfigError
from contracts.bar import Bar
from flows.aggregation import AggregationConfig, TickChunk, TickerBars, partial_bars
from flows.decode import decode_batch
from flows.indicators import IndicatorConfig
from flows.shards import SNAPSHOT_TAG, ShardBars, ShardKeys, SnapshotMismatchError
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
    half = len(chunks) // 2  # 30 chunks: the restored shard must produce finals of its own
    part = ShardBars(BACKFILL)
    first = part.on_chunks(chunks[:half], 0)[0]
    restored = ShardBars.restore(BACKFILL, pickle.loads(pickle.dumps(part.snapshot())))
    second = restored.on_chunks(chunks[half:], 0)[0]
    assert first
    assert second
    assert sorted(first + second, key=_key) == sorted(expected, key=_key)  # on_chunks groups per ticker
    with pytest.raises(TypeError, match="expected 'flows.shards.ShardBars/2' shard state"):
        ShardBars.restore(BACKFILL, pickle.dumps([1, 2]))
    with pytest.raises(TypeError, match="expected a dict of TickerState"):
        ShardBars.restore(BACKFILL, pickle.dumps((SNAPSHOT_TAG, BACKFILL.state_shape(), {"A": 1})))


def _fed_shard(config: AggregationConfig, shards: int | None = None) -> tuple[ShardBars, list[TickChunk]]:
    """A shard of 5 tickers fed the first half of the chunks; returns it and the chunks still to come."""
    chunks = [c for batch in batches(values(tickers=5)) for _, c in batch]
    half = len(chunks) // 2
    shard = ShardBars(config, shards=shards)
    shard.on_chunks(chunks[:half], 0)
    assert len(shard.tickers) == 5
    return shard, chunks[half:]


def _with(**changes: object) -> AggregationConfig:
    fields = {"close_on_system_time": False, "live_enabled": False, **changes}
    return AggregationConfig(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changed", "message"),
    [
        (
            _with(indicators=IndicatorConfig(sma_periods=(2, 3, 4))),
            r"FLOW_SMA_PERIODS was \(20, 50, 200\) when the snapshot was written, now \(2, 3, 4\)",
        ),
        (
            _with(timeframes=("1m", "5m")),
            r"FLOW_TIMEFRAMES was \('1m', '5m', '15m', '1h', '1d'\)[^;]*now \('1m', '5m'\)",
        ),
        (_with(timeframes=("5m", "15m", "1h", "1d")), "FLOW_TIMEFRAMES"),  # another base
        (_with(indicators=IndicatorConfig(bb_nbdev=2.5)), r"FLOW_BB_NBDEV was 2\.0 .*now 2\.5"),
        (_with(indicators=IndicatorConfig(macd_signal=1)), "FLOW_MACD_SIGNAL"),
    ],
)
def test_restore_under_other_shaping_settings_fails_naming_them(changed: AggregationConfig, message: str) -> None:
    shard, _ = _fed_shard(BACKFILL)
    with pytest.raises(SnapshotMismatchError, match=message) as info:
        ShardBars.restore(changed, shard.snapshot())
    assert isinstance(info.value, ConfigError)
    assert "reset the bars flow's recovery store" in str(info.value)


def test_restore_names_every_setting_that_differs() -> None:
    shard, _ = _fed_shard(BACKFILL)
    changed = _with(timeframes=("1m", "5m"), indicators=IndicatorConfig(sma_periods=(2, 3, 4), rsi_period=7))
    with pytest.raises(SnapshotMismatchError) as info:
        ShardBars.restore(changed, shard.snapshot())
    text = str(info.value)
    assert all(name in text for name in ("FLOW_TIMEFRAMES", "FLOW_SMA_PERIODS", "FLOW_RSI_PERIOD"))
    assert "FLOW_EMA_PERIODS" not in text


def test_restore_under_another_shard_count_fails() -> None:
    shard, rest = _fed_shard(BACKFILL, shards=64)
    with pytest.raises(SnapshotMismatchError, match=r"shard count \(build_flow\(shards=...\)\) was 64 .*now 32"):
        ShardBars.restore(BACKFILL, shard.snapshot(), shards=32)
    # same count, or a caller that does not know it: fine
    assert ShardBars.restore(BACKFILL, shard.snapshot(), shards=64).shards == 64
    assert ShardBars.restore(BACKFILL, shard.snapshot()).on_chunks(rest, 0)[0]


def test_settings_that_do_not_shape_the_state_may_change_across_a_restore() -> None:
    """Grace, mode and the live-bar throttle only steer closing and publishing: a restore under new values works,
    and resumes as an uninterrupted run under those values would after the same first part."""
    shard, rest = _fed_shard(BACKFILL)
    relaxed = AggregationConfig(grace_ms=5_000, close_on_system_time=False, live_enabled=True, live_interval_ms=10)
    restored = ShardBars.restore(relaxed, shard.snapshot())
    reference = ShardBars(relaxed, {t: TickerBars(relaxed, t, pickle.loads(pickle.dumps(b.state)))
                                    for t, b in shard.tickers.items()})  # fmt: skip
    got, want = restored.on_chunks(rest, 0), reference.on_chunks(rest, 0)
    assert got == want
    assert got[0], "final bars were produced after the restore"


def test_same_settings_restore_and_every_ticker_keeps_the_current_periods() -> None:
    """Same (non-default) settings: the restore works and no ticker is left with other indicator periods."""
    config = _with(indicators=IndicatorConfig(sma_periods=(2, 3, 4)))
    shard, rest = _fed_shard(config)
    restored = ShardBars.restore(config, shard.snapshot())
    finals = restored.on_chunks(rest, 0)[0]
    assert finals
    assert {ind.config for bars in restored.tickers.values() for ind in bars.state.indicators} == {config.indicators}


def _legacy_snapshot(shard: ShardBars) -> bytes:
    """The snapshot format before the settings were recorded: the bare ``{ticker: TickerState}``."""
    return pickle.dumps({ticker: bars.state for ticker, bars in shard.tickers.items()})


def test_snapshots_from_before_the_recorded_settings_still_restore_when_they_agree() -> None:
    chunks = [c for batch in batches(values(tickers=5)) for _, c in batch]
    half = len(chunks) // 2
    expected = ShardBars(BACKFILL).on_chunks(chunks, 0)[0]
    shard = ShardBars(BACKFILL)
    first = shard.on_chunks(chunks[:half], 0)[0]
    restored = ShardBars.restore(BACKFILL, _legacy_snapshot(shard))
    second = restored.on_chunks(chunks[half:], 0)[0]
    assert second
    assert sorted(first + second, key=_key) == sorted(expected, key=_key)
    # and the next snapshot is written in the new format
    assert pickle.loads(restored.snapshot())[0] == SNAPSHOT_TAG


@pytest.mark.parametrize(
    ("changed", "message"),
    [
        (_with(indicators=IndicatorConfig(sma_periods=(2, 3, 4))), r"FLOW_SMA_PERIODS was \(20, 50, 200\)"),
        (_with(timeframes=("1m", "5m")), r"FLOW_TIMEFRAMES was '5 timeframe\(s\)'"),
    ],
)
def test_legacy_snapshots_under_other_settings_fail_naming_them(changed: AggregationConfig, message: str) -> None:
    shard, _ = _fed_shard(BACKFILL)
    with pytest.raises(SnapshotMismatchError, match=message):
        ShardBars.restore(changed, _legacy_snapshot(shard))


def test_same_number_of_other_timeframes_is_caught_by_the_recorded_settings_only() -> None:
    """A state records how many timeframes it has, not which: only the new format sees 5m -> 15m."""
    before, after = _with(timeframes=("1m", "5m", "1h")), _with(timeframes=("1m", "15m", "1h"))
    shard, _ = _fed_shard(before)
    with pytest.raises(SnapshotMismatchError, match=r"FLOW_TIMEFRAMES was \('1m', '5m', '1h'\)"):
        ShardBars.restore(after, shard.snapshot())
    ShardBars.restore(after, _legacy_snapshot(shard))  # documented limit of the old format


def test_legacy_snapshot_with_mixed_periods_is_refused() -> None:
    """A store written by the old code after a period change holds states of both periods: refused."""
    shard, _ = _fed_shard(BACKFILL)
    new = _with(indicators=IndicatorConfig(sma_periods=(2, 3, 4)))
    states = {ticker: bars.state for ticker, bars in shard.tickers.items()}
    states["NEW"] = TickerBars(new, "NEW").state
    with pytest.raises(SnapshotMismatchError, match="FLOW_SMA_PERIODS"):
        ShardBars.restore(new, pickle.dumps(states))
    with pytest.raises(SnapshotMismatchError, match="FLOW_SMA_PERIODS"):
        ShardBars.restore(BACKFILL, pickle.dumps(states))


def test_a_ticker_snapshot_under_other_settings_is_refused() -> None:
    bars = TickerBars(BACKFILL, "A")
    with pytest.raises(ConfigError, match="rsi_period"):
        TickerBars.restore(_with(indicators=IndicatorConfig(rsi_period=3)), bars.snapshot())
    assert TickerBars.restore(BACKFILL, bars.snapshot()).state == bars.state


def _key(bar: Bar) -> tuple[str, str, int]:
    return (bar.ticker, bar.timeframe, bar.start)


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
