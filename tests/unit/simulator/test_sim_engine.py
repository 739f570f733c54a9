"""Tick engine: invariants on every tick, determinism across batch sizes and threads, session calendar."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from common.clock import to_ms
from contracts.tick import encode_tick
from simulator.encode import BatchEncoder
from simulator.engine import TickBatch, TickEngine
from simulator.session import DAY_MS, Session
from simulator.universe import Universe, UniverseConfig, load_universe

START_MS = to_ms(datetime(2024, 3, 8, 14, 0, tzinfo=UTC))  # Friday 09:00 New York


def _stream(u: Universe, session: Session, batch: int, end_ms: int, threads: int = 1, seed: int = 7) -> TickBatch:
    eng = TickEngine(u, session, seed, START_MS, tick_ms=500, threads=threads)
    try:
        return TickBatch.concat(list(eng.batches(batch, end_ms=end_ms)))
    finally:
        eng.close()


@pytest.fixture(scope="module")
def exchange_ticks(default_universe: Universe) -> TickBatch:
    return _stream(default_universe, Session(mode="exchange"), 10_000, START_MS + 4 * DAY_MS)


def test_every_tick_satisfies_the_contract(exchange_ticks: TickBatch, default_universe: Universe) -> None:
    ticks = exchange_ticks.to_ticks(default_universe.symbols)  # Tick() validates each invariant
    assert len(ticks) == len(exchange_ticks) > 0
    b = exchange_ticks
    assert np.all(b.bid < b.ask)
    assert np.all(b.ask - b.bid >= 1)
    assert np.all((b.price >= b.bid) & (b.price <= b.ask))
    assert np.all(b.volume >= 0)
    assert np.all(b.bid_size > 0)
    assert np.all(b.ask_size > 0)


def test_per_ticker_seq_gapless_and_timestamps_monotone(exchange_ticks: TickBatch) -> None:
    for i in range(5):
        sel = exchange_ticks.ticker == i
        seq = exchange_ticks.seq[sel]
        assert np.array_equal(seq, np.arange(seq.size))
        assert np.all(np.diff(exchange_ticks.ts_ms[sel]) > 0)


def test_exchange_session_only_ticks_when_open(exchange_ticks: TickBatch) -> None:
    session = Session(mode="exchange")
    from common.clock import from_ms

    local = [from_ms(int(t)).astimezone(session.tz) for t in np.unique(exchange_ticks.ts_ms)[::97]]
    assert all(d.weekday() < 5 for d in local)
    assert all((9, 30) <= (d.hour, d.minute) < (16, 0) for d in local)
    # Friday afternoon then Monday: an overnight+weekend gap exists between consecutive ticks
    gaps = np.diff(np.unique(exchange_ticks.ts_ms))
    assert gaps.max() > 2 * DAY_MS


@pytest.mark.parametrize(("batch", "threads"), [(1_000, 1), (77_777, 2), (3, 1)])
def test_stream_identical_whatever_batch_size_or_threads(default_universe: Universe, batch: int, threads: int) -> None:
    end = START_MS + 3_600_000 * 3
    ref = _stream(default_universe, Session(), 50_000, end)
    got = _stream(default_universe, Session(), batch, end, threads=threads)
    for name in ("ticker", "seq", "ts_ms", "price", "bid", "ask", "bid_size", "ask_size", "volume"):
        assert np.array_equal(getattr(ref, name), getattr(got, name)), name


def test_threads_and_groups_deterministic_for_large_universe() -> None:
    u = Universe(UniverseConfig(factors=["market", "a"], generate={"count": 1100, "seed": 3}))
    end = START_MS + 120_000
    a = _stream(u, Session(), 100_000, end, threads=1)
    b = _stream(u, Session(), 9_999, end, threads=2)
    assert np.array_equal(a.price, b.price)
    assert np.array_equal(a.volume, b.volume)


def test_resuming_after_end_continues_the_same_stream(default_universe: Universe) -> None:
    end = START_MS + 600_000
    whole = _stream(default_universe, Session(), 10_000, end)
    eng = TickEngine(default_universe, Session(), 7, START_MS, tick_ms=500)
    first = TickBatch.concat(list(eng.blocks(START_MS + 123_456)))
    second = TickBatch.concat(list(eng.blocks(end)))
    assert np.array_equal(np.concatenate([first.price, second.price]), whole.price)


def test_different_seed_gives_different_stream(default_universe: Universe) -> None:
    end = START_MS + 60_000
    a = _stream(default_universe, Session(), 10_000, end, seed=1)
    b = _stream(default_universe, Session(), 10_000, end, seed=2)
    assert not np.array_equal(a.price, b.price)


def test_batch_encoder_is_byte_identical_to_contract(exchange_ticks: TickBatch, default_universe: Universe) -> None:
    part = exchange_ticks.take(0, 20_000)
    got = BatchEncoder(default_universe.symbols).messages(part)
    want = [encode_tick(t) for t in part.to_ticks(default_universe.symbols)]
    assert got == want
    assert BatchEncoder(default_universe.symbols, chunk_rows=7).messages(part) == want  # chunk seams


def test_batch_encoder_edge_values() -> None:
    """Zero, one-cent, round-dollar, 10-cent and large values format like msgspec floats/ints."""
    cents = np.array([1, 10, 100, 101, 110, 199, 99_999_999_999, 1_000_000], dtype=np.int64)
    n = cents.size
    b = TickBatch(
        ticker=np.zeros(n, np.int32),
        seq=np.arange(n, dtype=np.int64) * 1000,
        ts_ms=np.full(n, 1_700_000_000_000, np.int64),
        price=cents,
        bid=cents,
        ask=cents + 1,
        bid_size=np.zeros(n, np.int64),
        ask_size=np.arange(n, dtype=np.int64) ** 5,
        volume=np.array([0, 9, 10, 99, 100, 12345, 10**15, 7], dtype=np.int64),
    )
    got = BatchEncoder(["X.Y-1"]).messages(b)
    assert got == [encode_tick(t) for t in b.to_ticks(["X.Y-1"])]


def test_volume_u_shaped_and_spread_wider_for_volatile_and_cheap(default_universe: Universe) -> None:
    b = _stream(default_universe, Session(mode="exchange"), 100_000, START_MS + 2 * DAY_MS)
    from common.clock import from_ms

    session = Session(mode="exchange")
    minutes = np.array(
        [(lambda d: d.hour * 60 + d.minute)(from_ms(int(t)).astimezone(session.tz)) for t in np.unique(b.ts_ms)]
    )
    per_ts = np.bincount(np.searchsorted(np.unique(b.ts_ms), b.ts_ms), weights=b.volume)
    edge = per_ts[(minutes < 600) | (minutes >= 930)].mean()
    mid = per_ts[(minutes >= 750) & (minutes < 810)].mean()
    assert edge > 1.3 * mid
    rel = (b.ask - b.bid) / b.price
    tech, finance = rel[b.ticker == 1].mean(), rel[b.ticker == 2].mean()  # TECH: more volatile; FINANCE: cheaper
    assert tech > 0
    assert finance > 0


@pytest.fixture(scope="module")
def default_universe() -> Universe:
    return load_universe("default")


@pytest.mark.parametrize("ms", [539_656_225_879, 4_322_037_655_952, 1_705_276_800_123, 0])
def test_to_ms_is_exact_for_times_with_milliseconds(ms: int) -> None:
    # int(dt.timestamp() * 1000) is 1 ms low for about 1 % of such times (the first two here)
    assert to_ms(datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)) == ms


def test_to_ms_rejects_naive_and_parse_time_takes_naive_as_utc() -> None:
    from common.errors import ConfigError
    from simulator.session import parse_time

    with pytest.raises(ConfigError, match="naive datetime"):
        to_ms(datetime(2024, 1, 2))  # noqa: DTZ001 -- the naive value under test
    assert to_ms(parse_time("2024-01-02T03:04:05.006")) == to_ms(datetime(2024, 1, 2, 3, 4, 5, 6000, tzinfo=UTC))
