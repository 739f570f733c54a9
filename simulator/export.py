"""Files without Kafka: ticks, or OHLCV bars simulated directly at 1s / 1m / 1d steps, to CSV or Parquet.

``tick`` writes exactly the ticks the Kafka modes send (same engine, same seed). Coarser intervals run the
same :class:`~simulator.models.MarketModel` with one step per bar: close from the model, open from the
previous close (times the overnight gap return on a session's first bar), high/low sampled exactly from the
Brownian bridge between open and close, volume from the expected tick volume of the bar scaled like the tick
model (intraday U shape, vol level, size of the move). 20 years of daily bars for 100 tickers take about a
second because the loop runs once per day over vectorised tickers.

Ranges are ``[start, end)`` on the rows' timestamps (a bar's is its open time): a start inside a bar block
simulates a partial first block from the first bar at/after the start (block-aligned starts give the same
bars as always). A range without any session still writes the file, empty but with its header (CSV) or schema
(Parquet), replacing whatever was at ``out``, and logs a warning.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from numpy.typing import NDArray
from tqdm import tqdm

from common.clock import iso_from_ms
from common.errors import ConfigError
from simulator.engine import TickBatch, TickEngine
from simulator.events import EventSchedule
from simulator.microstructure import MicrostructureParams, bar_volume, bridge_high_low
from simulator.models import SeedLike, child_sequence
from simulator.session import Session, block_starts, intraday_volume_shape
from simulator.universe import Universe

Interval = Literal["tick", "1s", "1m", "1d"]
FileFormat = Literal["csv", "parquet"]
I64 = NDArray[np.int64]
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BarBatch:
    """Bars as columns ``[bars * tickers]`` (time-major); prices in cents."""

    ticker: NDArray[np.int32]
    ts_ms: I64
    open: I64
    high: I64
    low: I64
    close: I64
    volume: I64

    def __len__(self) -> int:
        return int(self.ticker.size)


def _bar_layout(session: Session, interval: Interval) -> tuple[int, int]:
    """(bar length ms, block length ms) for a bar interval."""
    if interval == "1s":
        return 1000, 60_000
    if interval == "1m":
        return 60_000, 1_800_000 if session.mode == "exchange" and session.session_seconds % 1800 == 0 else 60_000
    if interval == "1d":
        day = int(session.session_seconds * 1000)
        return day, day
    msg = f"bar interval must be 1s, 1m or 1d, got {interval!r}"
    raise ConfigError(msg)


def simulate_bars(
    universe: Universe,
    session: Session,
    seed: SeedLike,
    start_ms: int,
    end_ms: int,
    interval: Interval,
    tick_rate: float = 10.0,
    micro: MicrostructureParams | None = None,
    progress: bool = False,
) -> Iterator[BarBatch]:
    """OHLCV bars ``[start_ms, end_ms)`` simulated directly at the bar step, one block at a time."""
    micro = micro or MicrostructureParams()
    bar_ms, block_ms = _bar_layout(session, interval)
    m = block_ms // bar_ms
    model = universe.model(seed)
    if model.heston is not None:  # the variance updates once per block and once per overnight gap
        model.heston.check_step(block_ms / 1000.0 * session.years_per_second())
        model.heston.check_step(session.gap_years())
    # the bridge/volume uniforms come from a stream disjoint from the model's (spawn key 2)
    rng = np.random.default_rng(child_sequence(seed, 2))
    n = len(universe)
    dt = bar_ms / 1000.0 * session.years_per_second()
    sd = model.diffusive_sigma
    x = np.log(universe.start_prices)
    ticks_per_bar = bar_ms / 1000.0 * tick_rate
    tickers = np.tile(np.arange(n, dtype=np.int32), m)
    total = max(1, (end_ms - start_ms) // block_ms)
    bar = tqdm(total=total, unit="block", disable=not progress, mininterval=1.0, desc=f"export {interval}")
    skip_before: int | None = start_ms  # the first block may start before start_ms: its bars before it are skipped
    try:
        for t0, gap in block_starts(session, start_ms, block_ms, partial=True):
            if t0 >= end_ms:
                return
            mb = m
            if skip_before is not None:
                skip = max(0, -(-(skip_before - t0) // bar_ms))
                if skip >= m:  # the start is after the block's last bar: the next block is the first
                    continue
                t0, mb, skip_before = t0 + skip * bar_ms, m - skip, None
                gap = False  # the first block generated: no night before a fresh start
            x_open = x
            if gap and session.gap_years() > 0.0:
                x_open = x + model.advance(1, session.gap_years()).log_returns[0]
            res = model.advance(mb, dt)
            r = res.log_returns
            closes = x_open + np.cumsum(r, axis=0)
            opens = np.vstack([x_open[None, :], closes[:-1]])
            var = (res.sigma**2 * dt)[None, :]
            u = 1.0 - rng.random((3, mb, n))  # (0, 1]: safe for log
            hi, lo = bridge_high_low(opens, closes, np.broadcast_to(var, r.shape), u[0], u[1])
            x = closes[-1].copy()
            ts = t0 + np.arange(mb, dtype=np.int64) * bar_ms
            pos = session.session_position(ts) if interval != "1d" else None
            shape = (
                None
                if pos is None
                else intraday_volume_shape(pos + 0.5 * bar_ms / (session.session_seconds * 1e3), micro.intraday_depth)
            )
            vol = bar_volume(
                ticks_per_bar, r, res.sigma * math.sqrt(dt), universe.tick_volumes, res.sigma / sd, shape, u[2], micro
            )
            o_c, c_c = _cents(opens), _cents(closes)
            h_c = np.maximum(_cents(hi), np.maximum(o_c, c_c))
            l_c = np.minimum(_cents(lo), np.minimum(o_c, c_c))
            keep = int(np.searchsorted(ts, end_ms, side="left"))
            k = keep * n
            yield BarBatch(
                ticker=tickers[:k],
                ts_ms=np.repeat(ts, n)[:k],
                open=o_c.ravel()[:k],
                high=h_c.ravel()[:k],
                low=l_c.ravel()[:k],
                close=c_c.ravel()[:k],
                volume=vol.ravel()[:k],
            )
            bar.update(1)
    finally:
        bar.close()


def _cents(log_price: NDArray[np.float64]) -> I64:
    out: I64 = np.maximum(1, np.rint(np.exp(log_price) * 100.0)).astype(np.int64)
    return out


# --------------------------------------------------------------------------- files


def _symbols(universe: Universe, idx: NDArray[np.int32]) -> pa.Array:
    return pa.DictionaryArray.from_arrays(pa.array(idx, type=pa.int32()), pa.array(universe.symbols))


def tick_table(universe: Universe, b: TickBatch) -> pa.Table:
    """Arrow table of ticks: the contract's fields, prices in dollars."""
    return pa.table(
        {
            "ticker": _symbols(universe, b.ticker),
            "seq": b.seq,
            "timestamp": b.stamp_ms,
            "price": b.price / 100.0,
            "bid": b.bid / 100.0,
            "ask": b.ask / 100.0,
            "bid_size": b.bid_size,
            "ask_size": b.ask_size,
            "volume": b.volume,
        }
    )


def bar_table(universe: Universe, b: BarBatch) -> pa.Table:
    """Arrow table of OHLCV bars, prices in dollars."""
    return pa.table(
        {
            "ticker": _symbols(universe, b.ticker),
            "timestamp": b.ts_ms,
            "open": b.open / 100.0,
            "high": b.high / 100.0,
            "low": b.low / 100.0,
            "close": b.close / 100.0,
            "volume": b.volume,
        }
    )


class _Writer:
    def __init__(self, path: Path, fmt: FileFormat) -> None:
        self.path, self.fmt = path, fmt
        self._w: pq.ParquetWriter | pacsv.CSVWriter | None = None
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        if self.fmt == "csv":
            table = table.cast(
                pa.schema(
                    [pa.field(f.name, pa.string() if pa.types.is_dictionary(f.type) else f.type) for f in table.schema]
                )
            )
        if self._w is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._w = (
                pq.ParquetWriter(self.path, table.schema, compression="zstd")
                if self.fmt == "parquet"
                else pacsv.CSVWriter(self.path, table.schema)
            )
        self._w.write_table(table)
        self.rows += table.num_rows

    @property
    def opened(self) -> bool:
        return self._w is not None

    def close(self) -> None:
        if self._w is not None:
            self._w.close()


def _empty_tick_batch() -> TickBatch:
    z = np.zeros(0, dtype=np.int64)
    return TickBatch(np.zeros(0, dtype=np.int32), z, z, z, z, z, z, z, z)


def _empty_bar_batch() -> BarBatch:
    z = np.zeros(0, dtype=np.int64)
    return BarBatch(np.zeros(0, dtype=np.int32), z, z, z, z, z, z)


def export(
    universe: Universe,
    session: Session,
    seed: SeedLike,
    start_ms: int,
    end_ms: int,
    interval: Interval,
    fmt: FileFormat,
    out: Path,
    tick_ms: int = 100,
    threads: int = 1,
    progress: bool = False,
    slice_ms: int | None = None,
    events: EventSchedule | None = None,
) -> int:
    """Write ticks or bars for ``[start_ms, end_ms)`` to ``out``; returns the number of rows written.

    ``events`` (scheduled events, :mod:`simulator.events`) act on tick exports only: bars are simulated directly
    at the bar step, where an event has no block to act at, so passing them with a bar interval is an error.
    A range without rows still replaces ``out`` with an empty file (header or schema only) and logs it.
    """
    if end_ms <= start_ms:
        msg = f"export end {end_ms!r} must be after start {start_ms!r}"
        raise ConfigError(msg)
    if events is not None and interval != "tick":
        msg = f"scheduled events (--inject) act on tick exports only, not on {interval} bars"
        raise ConfigError(msg)
    writer = _Writer(out, fmt)
    try:
        if interval == "tick":
            engine = TickEngine(
                universe,
                session,
                seed,
                start_ms,
                tick_ms=tick_ms,
                threads=threads,
                slice_ms=slice_ms,
                before_block=events,
            )
            try:
                bar = tqdm(total=(end_ms - start_ms) // 1000, unit="sim-s", disable=not progress, desc="export tick")
                done = 0
                for b in engine.batches(500_000, end_ms=end_ms):
                    writer.write(tick_table(universe, b))
                    now = (int(b.ts_ms[-1]) - start_ms) // 1000
                    bar.update(now - done)
                    done = now
                bar.close()
            finally:
                engine.close()
        else:
            pending: list[pa.Table] = []
            rows = 0
            for bb in simulate_bars(
                universe, session, seed, start_ms, end_ms, interval, 1000.0 / tick_ms, progress=progress
            ):
                pending.append(bar_table(universe, bb))
                rows += len(bb)
                if rows >= 250_000:  # few large writes: one per bar block would dominate daily exports
                    writer.write(pa.concat_tables(pending))
                    pending, rows = [], 0
            if pending:
                writer.write(pa.concat_tables(pending))
        if not writer.opened:  # no session in the range: an empty file, not the one a previous export left
            log.warning(
                "export: [%s, %s) holds no %s row (no open %s session, or shorter than one step): %s written"
                " with no rows",
                iso_from_ms(start_ms),
                iso_from_ms(end_ms),
                interval,
                session.mode,
                out,
            )
            if interval == "tick":
                writer.write(tick_table(universe, _empty_tick_batch()))
            else:
                writer.write(bar_table(universe, _empty_bar_batch()))
    finally:
        writer.close()
    return writer.rows
