"""Tick engine: invariants on every tick, determinism across batch sizes and threads, session calendar, the
contract's limits (sizes, volumes, timestamps, the batch encoder) and starts inside a block."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from common.clock import to_ms
from common.errors import ConfigError, ContractError
from contracts.tick import MAX_INT32, MAX_VOLUME, encode_tick
from simulator.encode import BatchEncoder
from simulator.engine import TickBatch, TickEngine
from simulator.events import EventSchedule, parse_event
from simulator.microstructure import (
    MAX_LOT_SHARES,
    SIZE_LOTS_INT,
    MicrostructureParams,
    Quotes,
    dress_into,
    ticker_micro,
)
from simulator.session import DAY_MS, Session, parse_time
from simulator.universe import MAX_TICK_VOLUME, Universe, UniverseConfig, load_universe, parse_universe

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
    """Zero, one-cent, round-dollar, 10-cent and the largest allowed prices (ask $999,999,999.99) format like
    msgspec floats/ints."""
    cents = np.array([1, 10, 100, 101, 110, 199, 99_999_999_998, 1_000_000], dtype=np.int64)
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


# --------------------------------------------------------------------------- contract limits (audit fixes)


def _one_ticker(tick_volume: float) -> Universe:
    return parse_universe(
        {"tickers": [{"symbol": "BIG", "start_price": 100, "volatility": 0.2, "tick_volume": tick_volume}]}
    )


def test_largest_tick_volume_with_the_largest_burst_keeps_every_tick_in_the_contract() -> None:
    """Sizes used to reach 30 lots x 100 * round(tick_volume / 500): past MAX_INT32 from a ~36k x10,000 burst."""
    u = _one_ticker(MAX_TICK_VOLUME)
    schedule = EventSchedule([parse_event("BIG:volume:x10000@2024-03-08T14:01Z/2m")], u.symbols)
    eng = TickEngine(u, Session(), 42, START_MS, tick_ms=100, before_block=schedule)
    try:
        b = TickBatch.concat(list(eng.blocks(START_MS + 180_000)))
    finally:
        eng.close()
    assert [e.kind for _, e in schedule.applied] == ["volume"]
    assert int(b.bid_size.max()) <= MAX_INT32
    assert int(b.ask_size.max()) <= MAX_INT32
    burst = (b.ts_ms >= START_MS + 60_000) & (b.ts_ms < START_MS + 180_000)
    assert int(b.bid_size[burst].max()) > 1_000_000_000  # the lot is capped, not the burst dropped
    assert np.all(b.volume[burst] > 0)
    assert len(b.to_ticks(u.symbols)) == len(b)  # Tick() validates every limit
    assert len(BatchEncoder(u.symbols).messages(b)) == len(b)


def test_quote_sizes_and_volumes_are_clipped_to_the_contract_whatever_the_coefficients() -> None:
    params = MicrostructureParams()
    price = np.array([10_000], dtype=np.int64)
    sigma = np.array([0.2])
    coef = ticker_micro(price, sigma, sigma * 1e-4, np.array([1e30]), np.ones(1), params)
    assert int(coef.lot_shares[0]) == MAX_LOT_SHARES
    assert MAX_LOT_SHARES * int(SIZE_LOTS_INT.max()) <= MAX_INT32
    out = Quotes.empty(64, 1)
    r = np.full((64, 1), 0.5)  # huge moves: the volume model goes past int64
    dress_into(out, np.cumsum(r, axis=0) + np.log(100.0), r, coef, None, np.random.default_rng(1), params)
    assert int(out.volume.min()) > 0  # a float past 2**63 used to wrap to a negative int64
    assert int(out.volume.max()) <= MAX_VOLUME
    assert int(out.bid_size.max()) <= MAX_INT32


@pytest.mark.parametrize("h", [0.0, 1e-3])
def test_a_print_is_at_least_one_share(default_universe: Universe, h: float) -> None:
    """With the variance multiplier near 0 the volume model rounded prints to 0 shares (0.2-100 % of them)."""
    eng = TickEngine(default_universe, Session(), 42, START_MS, tick_ms=100)
    eng.model.h = h
    try:
        b = next(eng.blocks())
    finally:
        eng.close()
    assert int(b.volume.min()) >= 1


def test_the_smallest_tick_volume_gives_no_zero_share_prints() -> None:
    eng = TickEngine(_one_ticker(1), Session(), 42, START_MS, tick_ms=100)
    try:
        v = TickBatch.concat(list(eng.blocks(START_MS + 600_000))).volume
    finally:
        eng.close()
    assert int(v.min()) >= 1
    assert np.median(v) <= 2  # still about one share a print


@pytest.mark.parametrize("start", ["1965-01-04", "1995-01-03", "2286-11-21"])
def test_engine_rejects_a_start_outside_the_contracts_timestamps(default_universe: Universe, start: str) -> None:
    with pytest.raises(ConfigError, match="outside the tick contract's timestamp range"):
        TickEngine(default_universe, Session(), 42, to_ms(parse_time(start)))


def _batch(n: int = 3, **cols: np.ndarray) -> TickBatch:
    base: dict[str, np.ndarray] = {
        "ticker": np.zeros(n, np.int32),
        "seq": np.arange(n, dtype=np.int64),
        "ts_ms": np.full(n, 1_700_000_000_000, np.int64),
        "price": np.full(n, 10_000, np.int64),
        "bid": np.full(n, 9_999, np.int64),
        "ask": np.full(n, 10_001, np.int64),
        "bid_size": np.full(n, 100, np.int64),
        "ask_size": np.full(n, 100, np.int64),
        "volume": np.full(n, 10, np.int64),
    }
    return TickBatch(**{**base, **cols})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("ts_ms", -157_507_200_000),  # 1965: written as "timestamp":0 before
        ("ts_ms", 999_999_999_999),  # 12 digits: before the contract's range
        ("ts_ms", 10_000_000_000_000),  # 14 digits
        ("seq", -1),
        ("volume", -5),
        ("bid_size", 2**31),
        ("price", 0),
        ("price", 100_000_000_000),  # $1e9: prices are below it
        ("ask", 100_000_000_000),
        ("volume", 2**53 + 1),  # beyond JSON's exact integers
    ],
)
def test_batch_encoder_refuses_values_outside_the_contract(field: str, value: int) -> None:
    good = _batch()
    assert len(BatchEncoder(["X"]).messages(good)) == 3
    col = getattr(good, field).copy()
    col[1] = value
    with pytest.raises(ContractError, match=field.replace("ts_ms", "timestamp")):
        BatchEncoder(["X"]).encode(_batch(**{field: col}))


# --------------------------------------------------------------------------- starts inside a block


def test_a_start_inside_a_block_gives_every_tick_of_the_range(default_universe: Universe) -> None:
    """[00:00:30, 00:00:59) used to give no tick at all: the stream started at the next block."""
    t = to_ms(datetime(2026, 1, 5, tzinfo=UTC))
    eng = TickEngine(default_universe, Session(), 42, t + 30_050, tick_ms=100)
    try:
        b = TickBatch.concat(list(eng.blocks(t + 59_000)))
    finally:
        eng.close()
    steps = np.unique(b.ts_ms)
    assert int(steps[0]) == t + 30_100  # the first step at/after the start
    assert int(steps[-1]) == t + 58_900
    assert len(b) == 289 * len(default_universe)
    assert np.array_equal(b.seq[: len(default_universe)], np.zeros(len(default_universe)))


def test_a_start_inside_a_block_continues_on_the_block_grid(default_universe: Universe) -> None:
    t = to_ms(datetime(2026, 1, 5, tzinfo=UTC))
    eng = TickEngine(default_universe, Session(), 42, t + 30_000, tick_ms=100)
    try:
        blocks = [eng._generate_block() for _ in range(3)]
    finally:
        eng.close()
    assert [int(b.ts_ms[0]) for b in blocks] == [t + 30_000, t + 60_000, t + 120_000]
    assert [len(b) // len(default_universe) for b in blocks] == [300, 600, 600]


def test_a_start_after_the_last_step_of_a_session_opens_the_next_one_without_a_gap(default_universe: Universe) -> None:
    """A fresh start just before the close: the first block is the next open, with no overnight gap (none
    is applied before a fresh stream), exactly as a start at that open."""
    session = Session(mode="exchange")
    fri_close = to_ms(datetime(2024, 3, 8, 21, 0, tzinfo=UTC))
    mon_open = to_ms(datetime(2024, 3, 11, 13, 30, tzinfo=UTC))  # DST started on Sunday
    streams = []
    for start in (fri_close - 50, mon_open):
        eng = TickEngine(default_universe, session, 42, start, tick_ms=100)
        try:
            streams.append(TickBatch.concat(list(eng.blocks(mon_open + 120_000))))
        finally:
            eng.close()
    assert int(streams[0].ts_ms[0]) == mon_open
    for name in ("ts_ms", "price", "volume"):
        assert np.array_equal(getattr(streams[0], name), getattr(streams[1], name)), name
