"""``simulator.export``: bars simulated at the bar step are reproducible for every kind of seed and well formed;
``[start, end)`` ranges inside a block, and ranges without rows."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow.csv as pacsv
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


# --------------------------------------------------------------------------- ranges and empty ranges


EXCHANGE = Session(mode="exchange")
MON_OPEN = to_ms(datetime(2026, 1, 5, 14, 30, tzinfo=UTC))  # Monday 09:30 New York


def _all(parts: list[BarBatch]) -> BarBatch:
    return BarBatch(**{f: np.concatenate([getattr(p, f) for p in parts]) for f in BarBatch.__dataclass_fields__})


def test_minute_bars_from_inside_a_block_start_at_the_start(universe: Universe) -> None:
    """1m exchange bars of [10:10, 11:00) New York used to start at 10:30 (30-minute blocks): 30 bars, not 50."""
    start, end = MON_OPEN + 40 * 60_000, MON_OPEN + 90 * 60_000
    b = _all(list(simulate_bars(universe, EXCHANGE, 42, start, end, "1m")))
    ts = np.unique(b.ts_ms)
    assert int(ts[0]) == start
    assert ts.size == 50
    assert len(b) == 50 * len(universe)
    aligned = _all(list(simulate_bars(universe, EXCHANGE, 42, MON_OPEN + 30 * 60_000, end, "1m")))
    assert aligned.ts_ms.size == 60 * len(universe)  # a block-aligned start: the whole range too


def test_daily_bars_from_a_utc_midnight_are_those_from_the_next_open(universe: Universe) -> None:
    """A start after a session's open skips that day's bar (its time is before the start) and applies no
    overnight gap before the first bar: the same bars as a start at the next open."""
    tue_midnight = to_ms(datetime(2026, 1, 6, tzinfo=UTC))  # Monday 19:00 New York
    tue_open = MON_OPEN + DAY_MS
    end = tue_open + 10 * DAY_MS
    a = _all(list(simulate_bars(universe, EXCHANGE, 42, tue_midnight, end, "1d")))
    b = _all(list(simulate_bars(universe, EXCHANGE, 42, tue_open, end, "1d")))
    assert int(a.ts_ms[0]) == tue_open
    for field in ("ts_ms", "open", "close", "volume"):
        assert np.array_equal(getattr(a, field), getattr(b, field)), field


@pytest.mark.parametrize(("interval", "fmt"), [("tick", "parquet"), ("tick", "csv"), ("1m", "parquet"), ("1m", "csv")])
def test_an_export_without_rows_replaces_the_old_file_with_an_empty_one(
    universe: Universe, tmp_path: Path, interval: str, fmt: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A range holding no session used to write nothing, leaving a previous export's file at --out."""
    out = tmp_path / f"x.{fmt}"
    friday = to_ms(datetime(2026, 1, 9, 14, 30, tzinfo=UTC))
    assert export(universe, EXCHANGE, 42, friday, friday + 300_000, interval, fmt, out) > 0  # type: ignore[arg-type]
    saturday = to_ms(datetime(2026, 1, 10, tzinfo=UTC))
    assert export(universe, EXCHANGE, 7, saturday, saturday + DAY_MS, interval, fmt, out) == 0  # type: ignore[arg-type]
    table = pq.read_table(out) if fmt == "parquet" else pacsv.read_csv(out)
    assert table.num_rows == 0
    assert "timestamp" in table.column_names
    assert "volume" in table.column_names
    assert "written with no rows" in caplog.text
