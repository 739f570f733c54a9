"""The raw tick archive sink: every valid tick into ``market_ticks`` once, however often it is replayed.

Write path per batch (one transaction; see docs/storage.md, "Tick archive write path"):

1. The decoded batch becomes columns and one binary ``COPY`` payload built with NumPy (:mod:`flows.tick_copy`).
2. **Fast path**: the payload is copied straight into ``market_ticks`` inside a savepoint. The primary key
   (ticker, time, seq) is the arbiter: if any row already exists the server raises a unique violation, the
   savepoint is rolled back and nothing of the attempt remains.
3. **Replay path**: the same payload is copied into a session-local staging table of the same column types
   (``TEMP``, so unlogged and without per-row casts) and merged with ``INSERT ... SELECT ... ON CONFLICT DO
   NOTHING``. The sink stays on this path while batches hold known rows (a replay after a restart) and goes
   back to the fast path after the first batch whose rows were all new.

Both paths leave the same table: existing rows are kept, new rows added once. Retention is applied by
:func:`apply_tick_retention` (TimescaleDB policy or daily partition drops).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

import numpy as np
import psycopg
from bytewax.outputs import DynamicSink

from flows.decode import DecodedBatch
from flows.sinks import _PostgresPartition, staging_table
from flows.tick_copy import COLUMNS, TickColumns, copy_payload, tick_columns

log = logging.getLogger(__name__)

_STAGE_TABLE = "md_ticks_staged"
_STAGE, _COPY_STAGE = staging_table(_STAGE_TABLE, "LIKE market_ticks", COLUMNS)
_COPY_DIRECT = f"COPY market_ticks ({COLUMNS}) FROM STDIN (FORMAT binary)"
# built from constants only, never from input
_MERGE = f"INSERT INTO market_ticks ({COLUMNS}) SELECT {COLUMNS} FROM {_STAGE_TABLE} ON CONFLICT DO NOTHING"  # noqa: S608


class _TickArchivePartition(_PostgresPartition[DecodedBatch]):
    table = "market_ticks"
    setup_sql = _STAGE

    def __init__(self, database_url: str, fast_path: bool = True) -> None:
        super().__init__(database_url)
        self._fast_path = fast_path
        self._direct = fast_path  # False while replaying known rows
        self.direct_batches = 0  # batches written by direct COPY
        self.merged_batches = 0  # batches merged through the staging table
        self.conflicts = 0  # direct COPYs undone because the batch held stored rows

    def rows(self, items: list[DecodedBatch]) -> list[Any]:
        cols = tick_columns(items)
        return [cols] if len(cols) else []

    def partition_times(self, rows: list[Any]) -> Iterable[int]:
        # one time per day of the batch: the days where the day changes from the previous row (in C, ~60 us
        # for 50,000 rows; np.unique sorts, ~1.5 ms), the set dropping repeats of an unsorted batch
        days = rows[0].timestamps // 86_400_000
        changes = np.empty(len(days), dtype=bool)
        changes[0] = True
        np.not_equal(days[1:], days[:-1], out=changes[1:])
        return {day * 86_400_000 for day in days[changes].tolist()}

    def row_count(self, rows: list[Any]) -> int:
        return len(rows[0])  # one TickColumns holding the whole batch

    def write_rows(self, cur: psycopg.Cursor[Any], rows: list[Any]) -> None:
        cols: TickColumns = rows[0]
        payload = copy_payload(cols)
        if self._direct:
            try:
                with self._conn.transaction():  # a savepoint: a conflict undoes only this attempt
                    with cur.copy(_COPY_DIRECT) as copy:
                        copy.write(payload)
            except psycopg.errors.UniqueViolation:
                log.info("market_ticks: batch of %d ticks holds stored rows; merging (replay path)", len(cols))
                self._direct = False
                self.conflicts += 1
            else:
                self.direct_batches += 1
                return
        with cur.copy(_COPY_STAGE) as copy:
            copy.write(payload)
        cur.execute(_MERGE)
        self.merged_batches += 1
        if self._fast_path and cur.rowcount == len(cols):
            self._direct = True  # every row was new: the replay is over


class TickArchiveSink(DynamicSink[DecodedBatch]):
    """Every valid tick into ``market_ticks`` with binary COPY, idempotent on (ticker, time, seq).

    ``fast_path=False`` always merges through the staging table (the replay path); the result is the same.
    """

    def __init__(self, database_url: str, fast_path: bool = True) -> None:
        self._url = database_url
        self._fast_path = fast_path

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _TickArchivePartition:
        return _TickArchivePartition(self._url, self._fast_path)


def apply_tick_retention(database_url: str, days: int, every_s: float = 3600.0) -> None:
    """Keep ``days`` of raw ticks: a TimescaleDB retention policy, or hourly partition drops on plain PostgreSQL."""

    def native_once() -> None:
        with psycopg.connect(database_url) as conn:
            dropped = conn.execute(
                "SELECT md_drop_partitions_before('market_ticks', now() - make_interval(days => %s))", (days,)
            ).fetchone()
        if dropped and dropped[0]:
            log.info("retention: dropped %d market_ticks partitions older than %d days", dropped[0], days)

    with psycopg.connect(database_url, autocommit=True) as conn:
        timescale = conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
        if timescale:
            conn.execute("SELECT remove_retention_policy('market_ticks', if_exists => true)")
            conn.execute("SELECT add_retention_policy('market_ticks', make_interval(days => %s))", (days,))
            return

    def loop() -> None:  # a daemon thread: it ends with the process
        while True:
            time.sleep(every_s)
            try:
                native_once()
            except psycopg.Error as err:  # retried at the next tick of the timer
                log.warning("tick retention failed: %s", err)

    native_once()
    threading.Thread(target=loop, name="tick-retention", daemon=True).start()
