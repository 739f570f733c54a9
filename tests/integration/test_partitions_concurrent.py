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
            parts.ensure(conn, lo, hi)
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
    expected = 5 if monthly else 65  # Mar..Jun plus the month ahead; or 30 Mar..2 Jun plus the day ahead
    assert len(names) == len(set(names)) == expected, sorted(names)
