"""Native partitions are created safely when several flow processes need the same new partition at once.

Two bars-flow processes (``-i 0/1 -a``) writing their first bars of a new month used to race in
``md_ensure_partitions`` (``CREATE TABLE IF NOT EXISTS`` is not atomic) and one died with ``DuplicateTable``.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import psycopg
import pytest

from flows.sinks import _Partitions

pytestmark = pytest.mark.integration

WORKERS = 6
DAY_MS = 86_400_000


@pytest.mark.parametrize(("table", "monthly"), [("market_bars", True), ("market_ticks", False)])
def test_concurrent_writers_create_each_partition_once(pg_url: str, table: str, monthly: bool) -> None:
    lo = int(datetime(2031, 3, 30, tzinfo=UTC).timestamp() * 1000)
    hi = int(datetime(2031, 6, 2, tzinfo=UTC).timestamp() * 1000)
    conns = [psycopg.connect(pg_url, options="-c lock_timeout=20s") for _ in range(WORKERS)]
    barrier = threading.Barrier(WORKERS)
    errors: list[BaseException] = []

    def ensure(conn: psycopg.Connection) -> None:
        try:
            parts = _Partitions(conn, table, monthly=monthly)
            barrier.wait(timeout=30)
            parts.ensure(conn, range(lo, hi + 1, DAY_MS))  # a batch with rows on every day of the range
        except BaseException as err:  # noqa: BLE001 - collected and asserted below
            errors.append(err)
            barrier.abort()  # the others stop waiting for this one

    threads = [threading.Thread(target=ensure, args=(c,)) for c in conns]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    alive = [t.name for t in threads if t.is_alive()]
    assert alive == [], f"writers still running after 60 s: {alive}"
    for conn in conns:
        conn.close()
    assert errors == []
    with psycopg.connect(pg_url) as conn:
        names = [
            r[0]
            for r in conn.execute(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = %s::regclass AND c.relname LIKE %s",
                (table, f"{table}_p2031%"),
            )
        ]
    expected = 4 if monthly else 65  # Mar..Jun; or 30 Mar..2 Jun
    assert len(names) == len(set(names)) == expected, sorted(names)


def _partitions(conn: psycopg.Connection, table: str) -> list[str]:
    rows = conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = %s::regclass",
        (table,),
    )
    return sorted(r[0] for r in rows)


@pytest.mark.parametrize(("table", "monthly"), [("market_bars", True), ("market_ticks", False)])
def test_only_the_periods_holding_rows_get_partitions(pg_url: str, table: str, monthly: bool) -> None:
    """Rows decades apart (both valid timestamps of the contract) need two partitions, not one per day between
    them: that was ~100,000 partitions in one transaction, and the archive's retries then stopped the flow."""
    times = [
        int(datetime(2031, 3, 30, 12, tzinfo=UTC).timestamp() * 1000),
        int(datetime(2031, 3, 31, 1, tzinfo=UTC).timestamp() * 1000),
        int(datetime(2286, 11, 20, tzinfo=UTC).timestamp() * 1000),
    ]
    with psycopg.connect(pg_url) as conn:
        before = _partitions(conn, table)
        _Partitions(conn, table, monthly=monthly).ensure(conn, times)
        made = sorted(set(_partitions(conn, table)) - set(before))
    expected = (
        [f"{table}_p20310301", f"{table}_p22861101"]
        if monthly
        else [f"{table}_p20310330", f"{table}_p20310331", f"{table}_p22861120"]
    )
    assert made == expected
