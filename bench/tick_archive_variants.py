"""Write strategies for ``market_ticks`` compared by ``bench_flow_ticks.py`` (the levers, side by side).

Each variant is a :class:`flows.tick_archive_sink._TickArchivePartition` (same connection handling, partition
creation, retries and transaction per batch) that overrides only how a batch is written:

- ``baseline``: the previous sink: ``copy.write_row`` per tick (text COPY) into a float staging table, then
  ``INSERT ... SELECT to_timestamp(..), round(..::numeric, 2) ... ON CONFLICT DO NOTHING``.
- ``text-bulk``: the same SQL, but the text COPY payload of a batch is built with one string join and sent
  with one ``copy.write``.
- ``bin-stage``: binary COPY (NumPy-built, typed) into a ``TEMP`` staging table of ``market_ticks``' own types,
  ``INSERT ... SELECT ... ON CONFLICT DO NOTHING`` without casts (the production replay path).
- ``bin-unlogged``: as ``bin-stage`` with an ``UNLOGGED`` staging table, truncated after each batch.
- ``bin-merge``: as ``bin-stage`` with ``MERGE ... WHEN NOT MATCHED THEN INSERT`` instead of ``ON CONFLICT``.
- ``direct``: the production sink (binary COPY straight into ``market_ticks``, replay path on conflict).
- ``direct-async``: ``direct`` with ``SET synchronous_commit = off`` on the session.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import psycopg
from bytewax.outputs import DynamicSink

from flows.decode import DecodedBatch
from flows.tick_archive_sink import _STAGE_TABLE, _TickArchivePartition
from flows.tick_copy import COLUMNS, TickColumns, copy_payload

_FLOAT_STAGE = """CREATE TEMP TABLE IF NOT EXISTS md_ticks_stage (
    ts_ms bigint, ticker text, seq bigint, price float8, bid float8, ask float8,
    bid_size integer, ask_size integer, volume bigint) ON COMMIT DELETE ROWS"""
_FLOAT_MERGE = """INSERT INTO market_ticks (time, ticker, seq, price, bid, ask, bid_size, ask_size, volume)
SELECT to_timestamp(ts_ms / 1000.0), ticker, seq, round(price::numeric, 2), round(bid::numeric, 2),
       round(ask::numeric, 2), bid_size, ask_size, volume
FROM md_ticks_stage ON CONFLICT DO NOTHING"""
_FLOAT_COPY = "COPY md_ticks_stage (ts_ms, ticker, seq, price, bid, ask, bid_size, ask_size, volume) FROM STDIN"


class _FloatStaged(_TickArchivePartition):
    """The previous design: a float staging table and a casting merge."""

    setup_sql = _FLOAT_STAGE

    def rows(self, items: list[DecodedBatch]) -> list[Any]:
        ticks = [t for batch in items for t in batch.ticks]
        return [ticks] if ticks else []

    def partition_times(self, rows: list[Any]) -> Iterable[int]:
        return {t.timestamp for t in rows[0]}


class Baseline(_FloatStaged):
    def write_rows(self, cur: psycopg.Cursor[Any], rows: list[Any]) -> None:
        with cur.copy(_FLOAT_COPY) as copy:
            for t in rows[0]:
                copy.write_row((t.timestamp, t.ticker, t.seq, t.price, t.bid, t.ask, t.bid_size, t.ask_size, t.volume))
        cur.execute(_FLOAT_MERGE)


class TextBulk(_FloatStaged):
    def write_rows(self, cur: psycopg.Cursor[Any], rows: list[Any]) -> None:
        text = "".join(
            [
                f"{t.timestamp}\t{t.ticker}\t{t.seq}\t{t.price!r}\t{t.bid!r}\t{t.ask!r}\t{t.bid_size}\t{t.ask_size}\t{t.volume}\n"
                for t in rows[0]
            ]
        )  # tickers are 1-32 printable characters: nothing to escape in these tests' data
        with cur.copy(_FLOAT_COPY) as copy:
            copy.write(text)
        cur.execute(_FLOAT_MERGE)


class BinStage(_TickArchivePartition):
    def __init__(self, database_url: str) -> None:
        super().__init__(database_url, fast_path=False)


class BinUnlogged(_TickArchivePartition):
    def __init__(self, database_url: str) -> None:
        self._stage = f"md_ticks_unlogged_{os.getpid()}"
        self.setup_sql = f"CREATE UNLOGGED TABLE IF NOT EXISTS {self._stage} (LIKE market_ticks)"
        super().__init__(database_url, fast_path=False)

    def write_rows(self, cur: psycopg.Cursor[Any], rows: list[Any]) -> None:
        with cur.copy(f"COPY {self._stage} ({COLUMNS}) FROM STDIN (FORMAT binary)") as copy:
            copy.write(copy_payload(rows[0]))
        cur.execute(f"INSERT INTO market_ticks ({COLUMNS}) SELECT {COLUMNS} FROM {self._stage} ON CONFLICT DO NOTHING")  # noqa: S608
        cur.execute(f"TRUNCATE {self._stage}")

    def close(self) -> None:
        self._conn.execute(f"DROP TABLE IF EXISTS {self._stage}")
        self._conn.commit()
        super().close()


_MERGE = (
    f"MERGE INTO market_ticks t USING {_STAGE_TABLE} s ON t.ticker = s.ticker AND t.time = s.time AND t.seq = s.seq"  # noqa: S608
    f" WHEN NOT MATCHED THEN INSERT ({COLUMNS}) VALUES (s.time, s.ticker, s.seq, s.price, s.bid, s.ask, s.bid_size,"
    " s.ask_size, s.volume)"
)


class BinMerge(_TickArchivePartition):
    def write_rows(self, cur: psycopg.Cursor[Any], rows: list[Any]) -> None:
        cols: TickColumns = rows[0]
        with cur.copy(f"COPY {_STAGE_TABLE} ({COLUMNS}) FROM STDIN (FORMAT binary)") as copy:
            copy.write(copy_payload(cols))
        cur.execute(_MERGE)


class Direct(_TickArchivePartition):
    def __init__(self, database_url: str) -> None:
        super().__init__(database_url, fast_path=True)


class DirectAsync(_TickArchivePartition):
    def __init__(self, database_url: str) -> None:
        self.setup_sql = f"{self.setup_sql}; SET synchronous_commit = off"
        super().__init__(database_url, fast_path=True)


class VariantSink(DynamicSink[DecodedBatch]):
    """A Bytewax sink writing with one of :data:`VARIANTS`."""

    def __init__(self, variant: str, database_url: str) -> None:
        self._cls = VARIANTS[variant]
        self._url = database_url

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _TickArchivePartition:
        return self._cls(self._url)


VARIANTS: dict[str, type[_TickArchivePartition]] = {
    "baseline": Baseline,
    "text-bulk": TextBulk,
    "bin-stage": BinStage,
    "bin-unlogged": BinUnlogged,
    "bin-merge": BinMerge,
    "direct": Direct,
    "direct-async": DirectAsync,
}
