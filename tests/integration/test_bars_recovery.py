"""Crash recovery and scale-out of ``python -m bytewax.run flows.bars`` against real Kafka, PostgreSQL and Redis.

Each test produces a deterministic backlog of ticks into its own topic, runs the flow as a subprocess exactly
as ``make up`` does (production settings: live mode, recovery on) and compares ``market_bars`` with a
reference: the same flow code run uninterrupted, in process, over the same ticks into a second database
through the same sink. A ticker's last tick is a *sentinel* a day after its backlog, so every backlog window
(1d included) closes on event time; bars holding a sentinel are left out of the comparison because the clock
may or may not have closed them yet (live mode).
"""

from __future__ import annotations

import contextlib
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from bytewax.testing import TestingSink, TestingSource, run_main

from contracts.bar import decode_bar
from contracts.tick import Tick, encode_tick
from flows.bars import build_flow
from flows.settings import FlowSettings
from flows.sinks import BarStoreSink
from stack.apps import init_recovery
from stack.services import free_port
from tests.support import Child, produce, read_topic, service_env, wait_for
from tests.ticks import make_tick

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]

T0 = 1_736_121_600_000  # 2025-01-06T00:00:00Z: a UTC midnight, so the backlog's 1d window starts here
HOURS = 4
CUT_MS = T0 + 160 * 60_000 + 59_500  # 0.5 s before a minute's end, two thirds into the backlog
SENTINEL_MS = T0 + 86_400_000 + 3_600_000  # the next day: closes every window of the backlog, 1d included
TICKERS = [f"R{i:02d}" for i in range(12)]
COLUMNS = (
    "ticker, timeframe, time, open, high, low, close, volume, vwap, trades, first_tick_time, last_tick_time,"
    " sma_20, sma_50, sma_200, ema_12, ema_26, rsi_14, macd, macd_signal, macd_hist, bb_upper, bb_middle, bb_lower"
)
Row = tuple[Any, ...]


def make_ticks(seed: int = 7) -> list[Tick]:
    """Ticks of every ticker every 0.3-2.5 s of event time over ``HOURS`` hours, then one sentinel each.

    Event times are increasing per ticker (each ticker lives in one Kafka partition, so arrival order is
    deterministic); prices are random walks on the cent grid, volumes include zeros.
    """
    rng = np.random.default_rng(seed)
    ticks: list[Tick] = []
    for ticker in TICKERS:
        gaps = rng.integers(300, 2_500, size=HOURS * 3_600 * 1_000 // 300)
        ts = T0 + np.cumsum(gaps)
        ts = ts[ts < T0 + HOURS * 3_600_000]
        cents = 10_000 + np.cumsum(rng.integers(-3, 4, size=len(ts)))
        volume = rng.integers(0, 1_000, size=len(ts))
        for seq, (t, c, v) in enumerate(zip(ts.tolist(), cents.tolist(), volume.tolist(), strict=True)):
            ticks.append(make_tick(ticker, seq, t, c / 100, volume=v, bid_size=100, ask_size=100))
        ticks.append(make_tick(ticker, len(ts), SENTINEL_MS, 100.0, volume=1, bid_size=1, ask_size=1))
    ticks.sort(key=lambda t: (t.timestamp, t.ticker))  # a market-wide time order, as the simulator produces
    return ticks


def produce_ticks(bootstrap: str, topic: str, ticks: list[Tick]) -> None:
    """Key = ticker, as the simulator produces; record timestamp = event time, as a producer replaying history
    stamps it (so the log time that closes windows in live mode follows the ticks' time, as it does when the
    simulator produces in real time, and not the moment this test produced them: see flows.logclock)."""
    produce(bootstrap, topic, ((tick.ticker, encode_tick(tick), tick.timestamp) for tick in ticks))


@pytest.fixture
def reference_url(make_database: Callable[[], str]) -> str:
    """A second database for the uninterrupted reference run."""
    return make_database()


def run_reference(ticks: list[Tick], database_url: str) -> dict[tuple[str, str, Any], Row]:
    """The flow's own logic, one worker, uninterrupted, over the ticks in Kafka order, into ``database_url``."""
    values = [encode_tick(t) for t in ticks]
    dead: list[Any] = []
    settings = FlowSettings(mode="backfill", live_enabled=False, metrics_port=0)
    flow = build_flow(
        TestingSource(values, batch_size=5_000),
        final_sink=BarStoreSink(database_url),
        dead_letter_sink=TestingSink(dead),
        settings=settings,
    )
    run_main(flow)
    assert dead == [], f"the reference run rejected ticks: {dead[:3]}"
    return read_bars(database_url)


def read_bars(database_url: str) -> dict[tuple[str, str, Any], Row]:
    """Every final bar of the backlog (no sentinel in it), keyed by (ticker, timeframe, start)."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            f"SELECT {COLUMNS} FROM market_bars WHERE last_tick_time < %s ORDER BY 1, 2, 3",  # noqa: S608
            (_dt(SENTINEL_MS),),
        ).fetchall()
    return {(r[0], r[1], r[2]): tuple(r) for r in rows}


def _dt(ms: int) -> Any:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def count_bars(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) FROM market_bars WHERE last_tick_time < %s", (_dt(SENTINEL_MS),)).fetchone()
    return int(row[0]) if row else 0


def snapshot_epoch(recovery: Path) -> int:
    """The newest epoch the flow's recovery store has closed (0 before its first snapshot).

    Reads Bytewax 0.21's recovery tables (``fronts``) read-only: the test kills the flow only once a resume
    point exists, so the restart really resumes from a snapshot instead of from the beginning.
    """
    epoch = 0
    for part in recovery.glob("part-*.sqlite3"):
        with contextlib.closing(sqlite3.connect(f"file:{part}?mode=ro", uri=True, timeout=1)) as db:
            try:
                row = db.execute("SELECT max(worker_frontier) FROM fronts").fetchone()
            except sqlite3.OperationalError:  # locked by the writer: try again at the next poll
                continue
        epoch = max(epoch, int(row[0] or 0))
    return epoch


def start_flow(spawn: Callable[..., Child], args: list[str], env: dict[str, str], log: Path) -> Child:
    """``python -m bytewax.run flows.bars`` as a subprocess with the given CLI arguments and environment."""
    return spawn([sys.executable, "-m", "bytewax.run", "flows.bars", *args], env, log)


def flow_env(kafka: str, pg: str, redis_url: str, ticks_topic: str, bars_topic: str, dlq: str) -> dict[str, str]:
    """Production settings (live mode, default grace and batch size) pointed at this test's servers."""
    env = service_env(kafka, pg, redis_url, ticks=ticks_topic, bars=bars_topic, dead_letter=dlq)
    return {**env, "FLOW_METRICS_PORT": "0"}


def topic_values(bootstrap: str, topic: str, header: str | None = None) -> list[bytes]:
    """Every value of ``topic`` from the beginning up to its current end (or the value of ``header``)."""
    if header is None:
        return [m.value() or b"" for m in read_topic(bootstrap, topic)]
    return [dict(m.headers() or []).get(header, b"") for m in read_topic(bootstrap, topic)]


def topic_finals(bootstrap: str, topic: str) -> dict[tuple[str, str, int], list[bytes]]:
    """Final backlog bars on ``market-bars`` by (ticker, timeframe, start): every copy, in topic order."""
    finals: dict[tuple[str, str, int], list[bytes]] = {}
    for raw in topic_values(bootstrap, topic):
        bar = decode_bar(raw)
        if bar.final and bar.last_tick < SENTINEL_MS:
            finals.setdefault((bar.ticker, bar.timeframe, bar.start), []).append(raw)
    return finals


def check_topic_bars(bootstrap: str, topic: str, expected: dict[tuple[str, str, Any], Row], logs: list[Path]) -> int:
    """Every expected final bar reaches ``market-bars`` (the sink writes it after the database) and repeated
    finals of a window are byte-identical. Returns the number of repeated (replayed) final messages."""
    want = {(t, tf, int(start.timestamp() * 1000)) for t, tf, start in expected}
    finals: dict[tuple[str, str, int], list[bytes]] = {}

    def complete() -> bool:
        finals.clear()
        finals.update(topic_finals(bootstrap, topic))
        return set(finals) >= want

    wait_for(complete, 60, f"{len(want)} final bars on {topic!r}", logs)
    differing = {k: v for k, v in finals.items() if len(set(v)) > 1}
    assert not differing, f"different final bars for one window on {topic!r}: {list(differing.items())[:2]}"
    assert set(finals) == want, f"unexpected final bars on {topic!r}: {sorted(set(finals) - want)[:5]}"
    return sum(len(v) for v in finals.values()) - len(finals)


def test_kill_9_mid_backfill_and_restart_gives_the_bars_of_an_uninterrupted_run(
    kafka_bootstrap: str,
    make_topic: Callable[..., str],
    pg_url: str,
    reference_url: str,
    redis_url: str,
    tmp_path: Path,
    spawn: Callable[..., Child],
) -> None:
    ticks = make_ticks()
    expected = run_reference(ticks, reference_url)
    assert len(expected) > 2_000
    assert {k[1] for k in expected} == {"1m", "5m", "15m", "1h", "1d"}
    assert any(r[14] is not None for r in expected.values()), "backlog long enough for sma_200"

    topic, bars_topic, dlq = make_topic(partitions=3), make_topic(partitions=3), make_topic(partitions=1)
    # the backlog arrives in two parts, the second one while the flow is dead (as after a real crash); the
    # cut is just before a minute's end, so the downtime spans that window's end + grace (the live-mode trap)
    cut = next(i for i, t in enumerate(ticks) if t.timestamp >= CUT_MS)
    produce_ticks(kafka_bootstrap, topic, ticks[:cut])
    recovery = tmp_path / "recovery"
    init_recovery(recovery, 2)  # what `make up` does (python -m bytewax.recovery DIR 2)
    args = ["-r", str(recovery), "-s", "1", "-b", "0"]
    # the producer of this backlog pauses while the flow is down: in live mode a pause longer than grace +
    # FLOW_IDLE_CLOSE_MS that the flow spends caught up and idle would close the cut window (producer silence
    # counts as time, flows.logclock) -- as it would without any crash; this test is about the crash, so the
    # idle clock is kept out of it
    env = {
        **flow_env(kafka_bootstrap, pg_url, redis_url, topic, bars_topic, dlq),
        "FLOW_BATCH_SIZE": "2000",
        "FLOW_IDLE_CLOSE_MS": "3600000",
    }
    log = tmp_path / "flow.log"

    first = start_flow(spawn, args, env, log)
    try:
        wait_for(
            lambda: count_bars(pg_url) >= 200 and snapshot_epoch(recovery) >= 3,
            90, "bars in market_bars and a committed recovery snapshot", [log],
        )  # fmt: skip
        assert first.alive()
    finally:
        first.kill9()  # SIGKILL: no flush, no final snapshot
    at_kill = count_bars(pg_url)
    assert at_kill < len(expected), "killed before the backlog was consumed"

    produce_ticks(kafka_bootstrap, topic, ticks[cut:])
    second = start_flow(spawn, args, env, log)
    try:
        wait_for(
            lambda: count_bars(pg_url) >= len(expected), 120, f"{len(expected)} bars after restart", [log],
            lambda: f"{count_bars(pg_url)} bars, {len(read_topic(kafka_bootstrap, dlq))} dead letters",
        )  # fmt: skip
        got = read_bars(pg_url)
        replayed = check_topic_bars(kafka_bootstrap, bars_topic, expected, [log])
        assert second.alive(), log.read_text()[-3000:]
    finally:
        second.stop()

    # no tick was dead-lettered (as late because of the downtime, say)
    dead = topic_values(kafka_bootstrap, dlq, header="dlq.reason")
    assert dead == [], f"{len(dead)} ticks dead-lettered across the restart, e.g. {dead[:3]}"
    missing = sorted(set(expected) - set(got))
    assert not missing, f"lost bars: {missing[:5]}"
    wrong = [(expected[k], got[k]) for k in expected if got[k] != expected[k]]
    assert not wrong, f"{len(wrong)} bars differ from the uninterrupted run, e.g. {wrong[:2]}"
    assert len(got) == len(expected)
    print(f"bars at kill: {at_kill}/{len(expected)}; final messages replayed after restart: {replayed}")


def test_two_processes_give_exactly_the_bars_of_one(
    kafka_bootstrap: str,
    make_topic: Callable[..., str],
    pg_url: str,
    reference_url: str,
    redis_url: str,
    tmp_path: Path,
    spawn: Callable[..., Child],
) -> None:
    ticks = make_ticks(seed=11)
    expected = run_reference(ticks, reference_url)
    topic, bars_topic, dlq = make_topic(partitions=4), make_topic(partitions=3), make_topic(partitions=1)
    produce_ticks(kafka_bootstrap, topic, ticks)
    env = flow_env(kafka_bootstrap, pg_url, redis_url, topic, bars_topic, dlq)
    addresses = f"127.0.0.1:{free_port()};127.0.0.1:{free_port()}"
    logs = [tmp_path / "flow-0.log", tmp_path / "flow-1.log"]
    procs = [start_flow(spawn, ["-i", str(i), "-a", addresses], env, logs[i]) for i in range(2)]
    try:
        _wait_two(pg_url, expected, procs, logs)
        got = read_bars(pg_url)
        check_topic_bars(kafka_bootstrap, bars_topic, expected, logs)
        assert all(p.alive() for p in procs), [log.read_text()[-2000:] for log in logs]
    finally:
        for p in procs:
            p.stop()
    assert got == expected


def _wait_two(pg_url: str, expected: dict[tuple[str, str, Any], Row], procs: list[Child], logs: list[Path]) -> None:
    """Wait for every expected bar from the two processes (fails with their exit codes and logs)."""
    wait_for(
        lambda: count_bars(pg_url) >= len(expected), 120, f"{len(expected)} bars from 2 processes", logs,
        lambda: f"{count_bars(pg_url)} bars, exit codes {[p.proc.poll() for p in procs]}",
    )  # fmt: skip
