"""Slices spread a step's ticks over its interval without changing any price; background prefetch changes nothing."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from pydantic import ValidationError

from common.clock import to_ms
from common.errors import ConfigError
from simulator.engine import TickBatch, TickEngine
from simulator.session import Session
from simulator.settings import SimulatorSettings
from simulator.universe import Universe, UniverseConfig

START_MS = to_ms(datetime(2024, 3, 8, 14, 0, tzinfo=UTC))
END_MS = START_MS + 150_000  # two and a half one-minute blocks


@pytest.fixture(scope="module")
def universe() -> Universe:
    return Universe(UniverseConfig(factors=["market", "a"], generate={"count": 23, "seed": 5}))


def _all(u: Universe, slice_ms: int | None, batch: int = 10_000, prefetch: bool = False) -> TickBatch:
    eng = TickEngine(u, Session(), 3, START_MS, tick_ms=100, slice_ms=slice_ms)
    parts: list[TickBatch] = []
    try:
        if not prefetch:
            return TickBatch.concat(list(eng.batches(batch, end_ms=END_MS)))
        upto = START_MS
        while upto < END_MS:  # like the real-time loop: small cuts, prefetch after each
            upto = min(END_MS, upto + 37)
            parts.extend(eng.batches(batch, end_ms=upto))
            eng.prefetch()
        return TickBatch.concat(parts)
    finally:
        eng.close()


def _by_step_and_ticker(b: TickBatch) -> np.ndarray:
    return np.lexsort((b.ticker, b.seq))


def test_slices_change_timestamps_and_order_only(universe: Universe) -> None:
    plain = _all(universe, None)
    sliced = _all(universe, 20)  # 5 slices of 20 ms per 100 ms step
    assert len(plain) == len(sliced) == 1500 * len(universe)
    a = _by_step_and_ticker(plain)
    b = _by_step_and_ticker(sliced)
    for col in ("ticker", "seq", "price", "bid", "ask", "bid_size", "ask_size", "volume"):
        np.testing.assert_array_equal(getattr(plain, col)[a], getattr(sliced, col)[b], err_msg=col)
    offset = sliced.ts_ms[b] - plain.ts_ms[a]
    np.testing.assert_array_equal(offset, plain.ticker[a] * 5 // len(universe) * 20)
    assert np.all(np.diff(sliced.ts_ms) >= 0)  # non-decreasing: cuts at end_ms stay exact
    np.testing.assert_array_equal(sliced.ticker, plain.ticker)  # rows stay in ticker order: no reordering
    steps = sliced.ts_ms.reshape(-1, len(universe))
    assert len(np.unique(steps[0])) == 5  # a step's tickers really are spread over 5 send times


def test_sliced_stream_identical_whatever_cuts_and_prefetch(universe: Universe) -> None:
    ref = _all(universe, 20)
    for got in (_all(universe, 20, batch=777), _all(universe, 20, batch=5_000, prefetch=True)):
        for col in ("ticker", "seq", "ts_ms", "price", "bid", "ask", "bid_size", "ask_size", "volume"):
            np.testing.assert_array_equal(getattr(ref, col), getattr(got, col), err_msg=col)


def test_slice_must_divide_the_interval(universe: Universe) -> None:
    with pytest.raises(ConfigError, match="slice length 30"):
        TickEngine(universe, Session(), 1, START_MS, tick_ms=100, slice_ms=30)
    with pytest.raises(ValidationError, match="slice_ms must divide"):
        SimulatorSettings(tick_rate=10, slice_ms=30)
    assert SimulatorSettings(tick_rate=10, slice_ms=10).effective_slice_ms == 10
    assert SimulatorSettings(tick_rate=10, slice_ms=1000).effective_slice_ms == 100  # longer than the interval: off
