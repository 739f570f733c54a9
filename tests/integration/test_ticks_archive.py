"""The tick archive flow against real Kafka and PostgreSQL: every valid tick stored once, replays add nothing."""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import pytest
from bytewax.testing import run_main

from contracts.tick import Tick, encode_tick
from flows.decode import DecodedBatch, decode_batch
from flows.sources import RawKafkaSource
from flows.tick_archive_sink import TickArchiveSink
from flows.ticks import build_flow
from tests.support import produce
from tests.ticks import make_tick

pytestmark = pytest.mark.integration

T0 = 1_735_689_600_000  # 2025-01-01T00:00:00Z: outside the partitions the migration pre-creates


def _ticks(n: int) -> list[Tick]:
    return [
        make_tick(f"T{i % 4}", i // 4, T0 + i * 37_000, (10_000 + (i * 7919) % 500) / 100, volume=1 + i % 900,
                  bid_size=100, ask_size=200)
        for i in range(n)
    ]  # fmt: skip


def test_archive_stores_each_valid_tick_once_across_replays(
    kafka_bootstrap: str, make_topic: Callable[..., str], pg_url: str
) -> None:
    topic = make_topic(partitions=3)
    ticks = _ticks(5_000)  # spans ~2 days: the sink must create the daily partitions it needs
    values = [(t.ticker, encode_tick(t)) for t in ticks]
    values += [("T0", b"not json"), ("T1", b'{"ticker":"T1"}')]
    produce(kafka_bootstrap, topic, values)

    for _ in range(2):  # the second run replays the whole topic, as a restart without snapshots would
        source = RawKafkaSource(kafka_bootstrap, topic, tail=False, batch_size=700)
        run_main(build_flow(source, TickArchiveSink(pg_url)))
        with psycopg.connect(pg_url) as conn:
            count, distinct = conn.execute(
                "SELECT count(*), count(DISTINCT (ticker, seq)) FROM market_ticks"
            ).fetchone()  # type: ignore[misc]
            assert count == distinct == len(ticks)

    with psycopg.connect(pg_url) as conn:
        row = conn.execute(
            "SELECT time, price, bid, ask, volume FROM market_ticks WHERE ticker = 'T3' AND seq = 10"
        ).fetchone()
    expected = ticks[10 * 4 + 3]
    assert row is not None
    assert int(row[0].timestamp() * 1000) == expected.timestamp
    assert (str(row[1]), str(row[2]), str(row[3])) == (
        f"{expected.price:.2f}",
        f"{expected.bid:.2f}",
        f"{expected.ask:.2f}",
    )
    assert row[4] == expected.volume


def _stored(url: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT * FROM market_ticks ORDER BY ticker, time, seq").fetchall()


def _decoded(ticks: list[Tick]) -> DecodedBatch:
    batch, dead = decode_batch([encode_tick(t) for t in ticks])
    assert not dead
    return batch


def test_fast_path_and_replay_path_store_identical_tables(pg_url: str) -> None:
    ticks = _ticks(4_000)  # ~1.7 days from 2025-01-01: partitions are created inside the batch transactions
    a, b, c = ticks[:1_500], ticks[1_500:2_500], ticks[2_500:]
    sequence = [
        [_decoded(a[:1_000])],  # new: direct
        [_decoded(a[:1_000])],  # a replay: the direct COPY conflicts and is undone; merged
        [_decoded(a[500:])],  # half known: merged (still replaying)
        [_decoded(b)],  # all new: merged, which ends the replay
        [_decoded(b[-10:] + c[:500])],  # overlaps by 10 rows: direct COPY conflicts, is undone, then merged
        [_decoded(c[500:1_000])],  # all new: merged, back to direct
        [_decoded(c[1_000:] + c[1_000:1_010]), _decoded(c[-5:])],  # new rows, some twice in one batch: conflict
    ]
    tables = {}
    paths = {}
    for fast in (True, False):
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute("TRUNCATE market_ticks")
        part = TickArchiveSink(pg_url, fast_path=fast).build("archive", 0, 1)
        for items in sequence:
            part.write_batch(items)
        paths[fast] = (part.direct_batches, part.merged_batches, part.conflicts)
        part.close()
        tables[fast] = _stored(pg_url)

    assert paths == {True: (1, 6, 3), False: (0, 7, 0)}
    assert tables[True] == tables[False]
    assert len(tables[True]) == len(ticks)
    assert {(row[1], row[2]) for row in tables[True]} == {(t.ticker, t.seq) for t in ticks}


def test_fast_path_resumes_after_a_replay(pg_url: str) -> None:
    ticks = _ticks(900)
    part = TickArchiveSink(pg_url).build("archive", 0, 1)
    for chunk in (ticks[:300], ticks[:300], ticks[300:600], ticks[600:]):
        part.write_batch([_decoded(chunk)])
    # new (direct); replay (conflict, merged); new rows merged once, which ends the replay; direct again
    assert (part.direct_batches, part.merged_batches, part.conflicts) == (2, 2, 1)
    part.close()
    assert len(_stored(pg_url)) == len(ticks)
