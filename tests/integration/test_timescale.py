"""The TimescaleDB storage path of ``sql/`` on a real TimescaleDB (2.23 in PGlite, served over the wire).

One server per module (start-up takes seconds): it is created fresh, migrated, stopped and started again on
the same data directory, so every test runs against a reopened database — the case where TimescaleDB must be
loaded explicitly. The server runs no background jobs, so each policy is exercised with ``CALL run_job``.
Tests share the database: each writes its own tickers and asserts only on them, and tests that act on whole
chunks use days of their own (compression: 10 days ago; retention: 20, 35 and 45 days ago).
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

from stack.migrate import apply_migrations, storage_flavour
from stack.pglite import pglite_url, prepare_pglite
from stack.runner import ManagedProcess, running
from stack.services import free_port

# a statement PGlite cannot answer hangs instead of failing: fail the test long before the global timeout
pytestmark = [pytest.mark.integration, pytest.mark.timescale, pytest.mark.timeout(180)]

TICK_COLUMNS = "time, ticker, seq, price, bid, ask, bid_size, ask_size, volume"
INSERT_TICK = f"INSERT INTO market_ticks ({TICK_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
CENT = Decimal("0.01")

Tick = tuple[datetime, str, int, Decimal, Decimal, Decimal, int, int, int]


@dataclass(frozen=True)
class TimescaleServer:
    """The module's PGlite server and what happened while it was set up."""

    url: str
    process: ManagedProcess
    applied_on_first_start: list[str]
    first_exit_code: int | None


@pytest.fixture(scope="module")
def timescale(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TimescaleServer]:
    """A migrated TimescaleDB, restarted once on its data directory before the tests use it."""
    home: Path = tmp_path_factory.mktemp("pglite")
    data, logs = home / "data", home / "logs"
    first = prepare_pglite(data, free_port())
    with running(first, logs, timeout_s=180) as proc:
        applied = apply_migrations(pglite_url(first.port), single_connection=True)
        proc.stop()
        first_exit = proc.proc.returncode
    second = prepare_pglite(data, free_port())
    with running(second, logs, timeout_s=180) as proc:
        yield TimescaleServer(pglite_url(second.port), proc, applied, first_exit)


def connect(server: TimescaleServer) -> psycopg.Connection:
    """Autocommit: ``run_job`` and continuous aggregate refreshes refuse to run inside a transaction."""
    return psycopg.connect(server.url, autocommit=True)


def new_ticker(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8].upper()}"


def day_start(days_ago: int) -> datetime:
    """UTC midnight ``days_ago`` days back: the start of one 1-day chunk of ``market_ticks``."""
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=days_ago)


def make_ticks(ticker: str, start: datetime, count: int, step: timedelta, first_seq: int = 0) -> list[Tick]:
    """Deterministic ticks on the cent grid: prices wander in a 23-cent band, volumes cycle 1..5 hundred."""
    rows: list[Tick] = []
    for i in range(count):
        price = Decimal(100) + Decimal((i * 37) % 23) * CENT
        rows.append((start + i * step, ticker, first_seq + i, price, price - CENT, price + CENT, 3, 4,
                     100 * (1 + i % 5)))  # fmt: skip
    return rows


def insert_ticks(conn: psycopg.Connection, rows: list[Tick], on_conflict: str = "") -> None:
    """``executemany`` (pipelined), as the sinks write; COPY FROM STDIN would crash this WASM build."""
    with conn.cursor() as cur:
        cur.executemany(INSERT_TICK + on_conflict, rows)


def job_id(conn: psycopg.Connection, proc_name: str, relation: str) -> int:
    row = conn.execute(
        "SELECT job_id FROM timescaledb_information.jobs WHERE proc_name = %s AND hypertable_name = %s",
        (proc_name, relation),
    ).fetchone()
    assert row is not None, f"no {proc_name} job on {relation}"
    return int(row[0])


def chunks(conn: psycopg.Connection, start: datetime) -> list[tuple[str, bool]]:
    """(name, is_compressed) of the ``market_ticks`` chunk that starts at ``start``, if any."""
    return conn.execute(
        "SELECT chunk_name, is_compressed FROM timescaledb_information.chunks"
        " WHERE hypertable_name = 'market_ticks' AND range_start = %s",
        (start,),
    ).fetchall()


# --------------------------------------------------------------------------- migrations and server


def test_migrations_apply_then_reapply_as_a_no_op(timescale: TimescaleServer) -> None:
    sql = Path(__file__).resolve().parents[2] / "sql"
    every = sorted(p.stem for p in sql.glob("[0-9][0-9][0-9][0-9]_*") if p.suffix in {".sql", ".py"})
    assert len(every) >= 3
    assert timescale.applied_on_first_start == every
    assert apply_migrations(timescale.url, single_connection=True) == []
    assert storage_flavour(timescale.url) == "timescaledb"
    with connect(timescale) as conn:
        applied = conn.execute("SELECT migration_id FROM _yoyo_migration ORDER BY migration_id").fetchall()
        assert applied == [(m,) for m in every]
        # a second application created no second set of policies
        jobs = conn.execute(
            "SELECT proc_name, count(*) FROM timescaledb_information.jobs WHERE hypertable_name IS NOT NULL"
            " GROUP BY 1 ORDER BY 1"
        ).fetchall()
        assert jobs == [("policy_compression", 1), ("policy_refresh_continuous_aggregate", 1),
                        ("policy_retention", 1)]  # fmt: skip


def test_server_stops_cleanly_and_reopens_its_data_dir(timescale: TimescaleServer) -> None:
    assert timescale.first_exit_code == 0
    with connect(timescale) as conn:
        # without LOAD 'timescaledb' after reopening, inserts into a hypertable's root table are refused
        conn.execute(INSERT_TICK, make_ticks(new_ticker("RE"), day_start(0), 1, timedelta(seconds=1))[0])


# A client process that dies in the middle of a transaction: its socket is reset (SO_LINGER 0), not closed.
CRASHING_CLIENT = """
import os, socket, struct, sys
import psycopg
conn = psycopg.connect(sys.argv[1])
conn.execute(sys.argv[2], (sys.argv[3],))
conn.execute("SET TIME ZONE 'America/New_York'")
sock = socket.socket(fileno=os.dup(conn.fileno()))
sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
os._exit(0)
"""


def test_a_dropped_client_leaves_no_session_state_behind(timescale: TimescaleServer) -> None:
    ticker = new_ticker("DR")
    insert = f"INSERT INTO market_ticks ({TICK_COLUMNS}) VALUES (now(), %s, 1, 100.00, 99.99, 100.01, 1, 1, 1)"
    subprocess.run([sys.executable, "-c", CRASHING_CLIENT, timescale.url, insert, ticker], check=True, timeout=60)
    with connect(timescale) as conn:  # the server stays up and hands a clean session to the next client
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert conn.execute("SELECT count(*) FROM market_ticks WHERE ticker = %s", (ticker,)).fetchone() == (0,)
        assert conn.execute("SHOW TIME ZONE").fetchone() != ("America/New_York",)
    assert timescale.process.proc.poll() is None


def test_messages_larger_than_a_tcp_chunk_arrive_whole(timescale: TimescaleServer) -> None:
    big = "x" * 300_000  # pglite-socket 0.0.19 alone would pass this message on in pieces and crash the engine
    with connect(timescale) as conn:
        assert conn.execute("SELECT length(%s)", (big,)).fetchone() == (300_000,)
    assert timescale.process.proc.poll() is None


# --------------------------------------------------------------------------- hypertables and policies


def test_time_series_tables_are_hypertables(timescale: TimescaleServer) -> None:
    with connect(timescale) as conn:
        dims = conn.execute(
            "SELECT hypertable_name, column_name, time_interval FROM timescaledb_information.dimensions"
            " WHERE hypertable_name IN ('market_ticks', 'market_bars') ORDER BY 1"
        ).fetchall()
        assert dims == [("market_bars", "time", timedelta(days=7)), ("market_ticks", "time", timedelta(days=1))]


def test_compression_policy_compresses_an_old_chunk(timescale: TimescaleServer) -> None:
    ticker = new_ticker("CP")
    old_day, recent = day_start(10), datetime.now(UTC) - timedelta(hours=1)
    old_rows = make_ticks(ticker, old_day + timedelta(hours=13), 500, timedelta(seconds=1))
    recent_rows = make_ticks(ticker, recent, 5, timedelta(seconds=1), first_seq=10_000)
    with connect(timescale) as conn:
        settings = conn.execute(
            "SELECT attname, segmentby_column_index, orderby_column_index FROM"
            " timescaledb_information.compression_settings WHERE hypertable_name = 'market_ticks' ORDER BY 1"
        ).fetchall()
        assert settings == [("seq", None, 2), ("ticker", 1, None), ("time", None, 1)]
        job = job_id(conn, "policy_compression", "market_ticks")
        config = conn.execute("SELECT config FROM timescaledb_information.jobs WHERE job_id = %s", (job,)).fetchone()
        assert config is not None
        assert config[0]["compress_after"] == "2 days"

        insert_ticks(conn, old_rows + recent_rows)
        select = f"SELECT {TICK_COLUMNS} FROM market_ticks WHERE ticker = %s ORDER BY time, seq"
        before = conn.execute(select, (ticker,)).fetchall()
        [(_, compressed)] = chunks(conn, old_day)
        assert not compressed

        conn.execute("CALL run_job(%s)", (job,))

        [(name, compressed)] = chunks(conn, old_day)
        assert compressed
        status = conn.execute(
            "SELECT compression_status, before_compression_total_bytes, after_compression_total_bytes"
            " FROM chunk_compression_stats('market_ticks') WHERE chunk_name = %s",
            (name,),
        ).fetchone()
        assert status is not None
        assert status[0] == "Compressed"
        assert status[1] > 0
        assert status[2] > 0
        # the chunk of the last two days is left alone, and compressed rows read back unchanged
        recent_chunk = day_start(0) if recent >= day_start(0) else day_start(1)
        assert [c for _, c in chunks(conn, recent_chunk)] == [False]
        assert conn.execute(select, (ticker,)).fetchall() == before == [tuple(r) for r in old_rows + recent_rows]

        # a replay (e.g. a flow recovering from a snapshot) into the compressed chunk is still a no-op
        insert_ticks(conn, old_rows[:50], " ON CONFLICT DO NOTHING")
        assert conn.execute(select, (ticker,)).fetchall() == before


def test_retention_policy_drops_chunks_older_than_30_days(timescale: TimescaleServer) -> None:
    ticker = new_ticker("RT")
    days = {45: day_start(45), 35: day_start(35), 20: day_start(20)}
    with connect(timescale) as conn:
        job = job_id(conn, "policy_retention", "market_ticks")
        config = conn.execute("SELECT config FROM timescaledb_information.jobs WHERE job_id = %s", (job,)).fetchone()
        assert config is not None
        assert config[0]["drop_after"] == "30 days"
        for ago, start in days.items():
            insert_ticks(conn, make_ticks(ticker, start + timedelta(hours=12), 20, timedelta(minutes=1), ago * 100))
        assert all(chunks(conn, start) for start in days.values())

        conn.execute("CALL run_job(%s)", (job,))

        assert chunks(conn, days[45]) == []
        assert chunks(conn, days[35]) == []
        assert len(chunks(conn, days[20])) == 1
        left = conn.execute("SELECT min(time), count(*) FROM market_ticks WHERE ticker = %s", (ticker,)).fetchone()
        assert left == (days[20] + timedelta(hours=12), 20)


# --------------------------------------------------------------------------- continuous aggregate


OHLCV_DIRECT = """
SELECT time_bucket(INTERVAL '1 minute', time) AS bucket, ticker,
       (array_agg(price ORDER BY time, seq))[1], max(price), min(price),
       (array_agg(price ORDER BY time DESC, seq DESC))[1], sum(volume), count(*)
FROM market_ticks WHERE ticker = %s GROUP BY 1, 2 ORDER BY 1
"""
OHLCV_VIEW = (
    "SELECT bucket, ticker, open, high, low, close, volume, trades FROM market_ticks_1m WHERE ticker = %s ORDER BY 1"
)


def expected_bars(rows: list[Tick]) -> list[tuple[datetime, str, Decimal, Decimal, Decimal, Decimal, int, int]]:
    """1-minute OHLCV computed in Python, independently of SQL."""
    buckets: dict[datetime, list[Tick]] = {}
    for row in sorted(rows, key=lambda r: (r[0], r[2])):
        buckets.setdefault(row[0].replace(second=0, microsecond=0), []).append(row)
    return [
        (b, ts[0][1], ts[0][3], max(t[3] for t in ts), min(t[3] for t in ts), ts[-1][3], sum(t[8] for t in ts), len(ts))
        for b, ts in sorted(buckets.items())
    ]


def test_continuous_aggregate_materialises_1m_ohlcv(timescale: TimescaleServer) -> None:
    ticker = new_ticker("AG")
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=3)
    rows = make_ticks(ticker, start + timedelta(seconds=5), 150, timedelta(seconds=1.5))  # spans 4 minutes
    with connect(timescale) as conn:
        cagg = conn.execute(
            "SELECT materialized_only FROM timescaledb_information.continuous_aggregates"
            " WHERE view_name = 'market_ticks_1m'"
        ).fetchone()
        assert cagg == (True,)
        job = job_id(conn, "policy_refresh_continuous_aggregate", "market_ticks_1m")
        insert_ticks(conn, rows)
        assert conn.execute(OHLCV_VIEW, (ticker,)).fetchall() == []  # nothing until the refresh runs

        conn.execute("CALL run_job(%s)", (job,))

        bars = conn.execute(OHLCV_VIEW, (ticker,)).fetchall()
        assert len(bars) == 4
        assert bars == conn.execute(OHLCV_DIRECT, (ticker,)).fetchall() == expected_bars(rows)

        # a late tick invalidates its bucket; the next refresh rewrites that bar only
        late: list[Tick] = [(start + timedelta(seconds=59.9), ticker, 9_999, Decimal("250.00"), Decimal("249.99"),
                             Decimal("250.01"), 1, 1, 7)]  # fmt: skip
        insert_ticks(conn, late)
        conn.execute("CALL run_job(%s)", (job,))
        updated = conn.execute(OHLCV_VIEW, (ticker,)).fetchall()
        assert updated == expected_bars(rows + late)
        assert updated[0][3] == Decimal("250.00")
        assert updated[0][5] == Decimal("250.00")
        assert updated[1:] == bars[1:]


# --------------------------------------------------------------------------- idempotent writes


def test_tick_insert_on_conflict_do_nothing_is_idempotent(timescale: TimescaleServer) -> None:
    ticker = new_ticker("ID")
    rows = make_ticks(ticker, datetime.now(UTC) - timedelta(minutes=30), 40, timedelta(milliseconds=250))
    with connect(timescale) as conn:
        insert_ticks(conn, rows, " ON CONFLICT DO NOTHING")
        insert_ticks(conn, rows[10:] + make_ticks(ticker, rows[-1][0], 5, timedelta(seconds=1), 1_000),
                     " ON CONFLICT DO NOTHING")  # fmt: skip
        assert conn.execute("SELECT count(*) FROM market_ticks WHERE ticker = %s", (ticker,)).fetchone() == (45,)
        with pytest.raises(psycopg.errors.UniqueViolation):
            insert_ticks(conn, rows[:1])


BAR_UPSERT = """
INSERT INTO market_bars (time, ticker, timeframe, open, high, low, close, volume, vwap, trades,
                         first_tick_time, last_tick_time, sma_20, rsi_14)
VALUES (%(time)s, %(ticker)s, %(timeframe)s, %(open)s, %(high)s, %(low)s, %(close)s, %(volume)s, %(vwap)s,
        %(trades)s, %(first)s, %(last)s, %(sma_20)s, %(rsi_14)s)
ON CONFLICT (ticker, timeframe, time) DO UPDATE SET
    open = EXCLUDED.open, high = EXCLUDED.high, low = EXCLUDED.low, close = EXCLUDED.close,
    volume = EXCLUDED.volume, vwap = EXCLUDED.vwap, trades = EXCLUDED.trades,
    first_tick_time = EXCLUDED.first_tick_time, last_tick_time = EXCLUDED.last_tick_time,
    sma_20 = EXCLUDED.sma_20, rsi_14 = EXCLUDED.rsi_14, updated_at = now()
"""


def test_bar_upsert_on_ticker_timeframe_time_updates_in_place(timescale: TimescaleServer) -> None:
    ticker = new_ticker("BR")
    t = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=5)
    bar = {"time": t, "ticker": ticker, "timeframe": "1m", "open": Decimal("100.00"), "high": Decimal("100.50"),
           "low": Decimal("99.90"), "close": Decimal("100.20"), "volume": 1_000, "vwap": Decimal("100.150000"),
           "trades": 10, "first": t + timedelta(seconds=1), "last": t + timedelta(seconds=50), "sma_20": None,
           "rsi_14": None}  # fmt: skip
    revised = {**bar, "high": Decimal("101.00"), "close": Decimal("100.90"), "volume": 1_500, "trades": 14,
               "vwap": Decimal("100.400000"), "last": t + timedelta(seconds=59), "sma_20": 100.3,
               "rsi_14": 61.5}  # fmt: skip
    select = (
        "SELECT open, high, low, close, volume, vwap, trades, last_tick_time, sma_20, rsi_14 FROM market_bars"
        " WHERE ticker = %s AND timeframe = '1m'"
    )
    with connect(timescale) as conn:
        conn.execute(BAR_UPSERT, bar)
        conn.execute(BAR_UPSERT, {**bar, "timeframe": "5m"})  # another timeframe is another row
        conn.execute(BAR_UPSERT, revised)
        conn.execute(BAR_UPSERT, revised)  # replaying the final version changes nothing
        assert conn.execute(select, (ticker,)).fetchall() == [
            (Decimal("100.00"), Decimal("101.00"), Decimal("99.90"), Decimal("100.90"), 1_500,
             Decimal("100.400000"), 14, t + timedelta(seconds=59), 100.3, 61.5)
        ]  # fmt: skip
        assert conn.execute("SELECT count(*) FROM market_bars WHERE ticker = %s", (ticker,)).fetchone() == (2,)
