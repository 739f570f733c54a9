"""``simulator.export``: bars simulated at the bar step are reproducible for every kind of seed and well formed."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from common.clock import to_ms
from simulator.export import BarBatch, export, simulate_bars
from simulator.session import DAY_MS, Session
from simulator.universe import Universe, load_universe

START_MS = to_ms(datetime(2024, 1, 1, tzinfo=UTC))


@pytest.fixture(scope="module")
def universe() -> Universe:
    return load_universe("default")


def _bars(universe: Universe, seed: object, days: int = 40) -> BarBatch:
    parts = list(simulate_bars(universe, Session(), seed, START_MS, START_MS + days * DAY_MS, "1d"))  # type: ignore[arg-type]
    return BarBatch(**{f: np.concatenate([getattr(p, f) for p in parts]) for f in BarBatch.__dataclass_fields__})


@pytest.mark.parametrize(
    "make_seed",
    [lambda: 5, lambda: np.random.SeedSequence(5), lambda: np.random.default_rng(np.random.SeedSequence(5))],
    ids=["int", "SeedSequence", "Generator"],
)
def test_every_seed_kind_gives_the_same_bars_twice(universe: Universe, make_seed: object) -> None:
    a, b = _bars(universe, make_seed()), _bars(universe, make_seed())  # type: ignore[operator]
    for field in ("open", "high", "low", "close", "volume"):
        assert np.array_equal(getattr(a, field), getattr(b, field)), field


def test_an_int_seed_and_its_sequence_agree(universe: Universe) -> None:
    a, b = _bars(universe, 7), _bars(universe, np.random.SeedSequence(7))
    assert np.array_equal(a.high, b.high)
    assert np.array_equal(a.volume, b.volume)


def test_bars_are_well_formed(universe: Universe) -> None:
    b = _bars(universe, 3, days=60)
    assert len(b) == 60 * len(universe)
    assert (b.low <= np.minimum(b.open, b.close)).all()
    assert (b.high >= np.maximum(b.open, b.close)).all()
    assert (b.low > 0).all()
    assert (b.volume >= 0).all()
    assert (np.diff(b.ts_ms.reshape(60, len(universe))[:, 0]) == DAY_MS).all()


def test_export_writes_the_simulated_bars(universe: Universe, tmp_path: Path) -> None:
    out = tmp_path / "bars.parquet"
    rows = export(universe, Session(), 3, START_MS, START_MS + 10 * DAY_MS, "1d", "parquet", out)
    table = pq.read_table(out)
    assert rows == table.num_rows == 10 * len(universe)
    expected = _bars(universe, 3, days=10)
    assert table.column("volume").to_pylist() == expected.volume.tolist()
