"""Row counting of the PostgreSQL sink partitions (no database: the connection is a stub)."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from common.errors import SinkError
from flows.decode import decode_batch
from flows.observe import SINK_ROWS
from flows.tick_archive_sink import _TickArchivePartition
from tests.ticks import raw_tick_json


class _FailingConn:
    closed = False

    def cursor(self) -> Any:
        raise psycopg.errors.DataError("value out of range")

    def rollback(self) -> None:
        pass


class _NoPartitions:
    def ensure(self, conn: Any, lo: int, hi: int) -> None:
        pass


def _partition(conn: Any) -> _TickArchivePartition:
    part = object.__new__(_TickArchivePartition)
    part._name = "postgres_market_ticks"
    part._conn = conn
    part._parts = _NoPartitions()  # type: ignore[assignment]
    return part


def _batch(n: int) -> Any:
    batch, dead = decode_batch([raw_tick_json(seq=i) for i in range(n)])
    assert not dead
    return batch


def test_archive_error_names_the_number_of_ticks_not_one_row() -> None:
    part = _partition(_FailingConn())
    with pytest.raises(SinkError, match="writing 3 rows to market_ticks failed"):
        part.write_batch([_batch(3)])


def test_archive_counts_ticks_as_rows() -> None:
    part = _partition(None)
    part._write = lambda rows: None  # type: ignore[method-assign]
    before = SINK_ROWS.labels(part._name)._value.get()
    part.write_batch([_batch(4), _batch(2)])
    assert SINK_ROWS.labels(part._name)._value.get() == before + 6
