"""``python -m simulator run`` resumes where the ticks topic ends, against a real broker.

* The tail scan finds each ticker's last tick reading backwards in chunks, skips (and counts) undecodable
  messages, and stops at its cap.
* Run, SIGTERM, run again, SIGKILL (a crash: no flush), run again: per ticker the topic holds ``seq`` 0..n-1
  exactly once, timestamps strictly increase, and each resumed price continues the last one.
* ``SIM_RESUME=false`` keeps the old behaviour: a second run starts a new history at seq 0.
"""

from __future__ import annotations

import math
import re
import sys
import uuid
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition

from common.clock import now_ms, to_ms
from contracts.tick import Tick, decode_tick, encode_tick
from simulator.session import YEAR_SECONDS_CALENDAR
from simulator.settings import SimulatorSettings
from simulator.topic_tail import scan_tail
from simulator.universe import load_universe
from tests.support import Child, produce, read_topic, service_env, wait_for
from tests.ticks import make_tick

pytestmark = pytest.mark.integration

SETTINGS = SimulatorSettings(tick_rate=10, preset="default")
#: set in the child's environment (service_env drops the shell's SIM_*), so test and child agree
SIM_ENV = {"SIM_METRICS_PORT": "0", "SIM_TICK_RATE": str(SETTINGS.tick_rate), "SIM_PRESET": SETTINGS.preset}
UNIVERSE = load_universe(SETTINGS.preset)
TICKERS = set(UNIVERSE.symbols)
#: history of the first run: 3 minutes (the run starts at the first 100 ms step at/after now - 3 min)
BACKFILL_HOURS = 0.05
TICKS_PER_S = len(UNIVERSE) * SETTINGS.tick_rate
STARTED = re.compile(r"producing \d+ tickers at .* from (\S+) \(real time\)")


def _tick(ticker: str, seq: int) -> Tick:
    return make_tick(ticker, seq, 1_790_000_000_000 + seq, 100.0, volume=1, bid_size=100, ask_size=100)


def _count(bootstrap: str, topic: str) -> int:
    """Messages in ``topic`` (sum of the high watermarks); waits out a new topic's leader election."""
    return wait_for(lambda: (_watermark_sum(bootstrap, topic),), 60, f"offsets of {topic!r}", ignore=(KafkaException,))[
        0
    ]


def _watermark_sum(bootstrap: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"test-count-{uuid.uuid4().hex[:8]}"})
    try:
        parts = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        return sum(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1] for p in parts)
    finally:
        consumer.close()


def _ticks(bootstrap: str, topic: str) -> dict[str, list[Tick]]:
    """Every tick of the topic per ticker, in seq order."""
    per: dict[str, list[Tick]] = defaultdict(list)
    for msg in read_topic(bootstrap, topic):
        tick = decode_tick(msg.value() or b"")
        assert msg.key() == tick.ticker.encode()
        per[tick.ticker].append(tick)
    return {k: sorted(v, key=lambda t: t.seq) for k, v in per.items()}


# --------------------------------------------------------------------------- the scan


def test_scan_finds_the_last_tick_of_each_ticker(kafka_bootstrap: str, make_topic: Callable[..., str]) -> None:
    topic = make_topic(partitions=3)
    produce(kafka_bootstrap, topic, ((t, encode_tick(_tick(t, s))) for s in range(300) for t in ("A", "B", "C")))
    produce(kafka_bootstrap, topic, [("A", b"garbage"), ("B", b'{"version":1}'), ("Z", encode_tick(_tick("Z", 9)))])
    scan = scan_tail(kafka_bootstrap, topic, ["A", "B", "C"], chunk=50, max_messages=100_000)
    assert {s: t.seq for s, t in scan.last.last.items()} == {"A": 299, "B": 299, "C": 299}
    assert scan.last.undecodable == 2
    assert scan.last.foreign == 1
    assert not scan.capped
    assert scan.partitions == 3
    assert scan.last.scanned < 400  # stopped after the first chunks, far from the start


def test_scan_stops_at_its_cap(kafka_bootstrap: str, make_topic: Callable[..., str]) -> None:
    topic = make_topic(partitions=1)
    produce(kafka_bootstrap, topic, [("OLD", encode_tick(_tick("OLD", 0)))])
    produce(kafka_bootstrap, topic, (("A", encode_tick(_tick("A", s))) for s in range(2_000)))
    capped = scan_tail(kafka_bootstrap, topic, ["A", "OLD"], chunk=300, max_messages=1_000)
    assert capped.capped
    assert capped.last.missing == ["OLD"]
    assert capped.last.scanned == 1_000
    whole = scan_tail(kafka_bootstrap, topic, ["A", "OLD"], chunk=300, max_messages=10_000)
    assert not whole.capped
    assert whole.last.scanned == 2_001  # down to the partition start
    assert whole.last.last["OLD"].seq == 0


def test_scan_of_a_missing_topic_is_empty(kafka_bootstrap: str) -> None:
    scan = scan_tail(kafka_bootstrap, f"nope-{uuid.uuid4().hex[:8]}", ["A"], chunk=10, max_messages=1_000)
    assert scan.last.last == {}
    assert not scan.capped


# --------------------------------------------------------------------------- restarts of `run`


def _run(spawn: Callable[..., Child], env: dict[str, str], log: Path, bootstrap: str, topic: str) -> Child:
    """Start ``run`` and return once it has produced 2 s of real time (its catch-up to the wall clock is done)."""
    argv = [sys.executable, "-m", "simulator", "--no-progress", "run", "--backfill", str(BACKFILL_HOURS)]
    before = _count(bootstrap, topic)
    child = spawn(argv, env, log)
    # logged right before the stream starts: the catch-up ends at the wall clock of that moment
    start = wait_for(lambda: STARTED.search(log.read_text()), 120, "the stream to start", logs=[log])
    seen_ms = now_ms()
    start_ms = to_ms(datetime.fromisoformat(start.group(1)))
    want = before + int(TICKS_PER_S * (seen_ms + 2_000 - start_ms) / 1000)
    wait_for(
        lambda: _count(bootstrap, topic) >= want,
        120,
        f"{want} ticks in {topic!r}",
        logs=[log],
        status=lambda: _count(bootstrap, topic),
    )
    return child


def test_run_resumes_after_sigterm_and_after_sigkill(
    kafka_bootstrap: str, make_topic: Callable[..., str], tmp_path: Path, spawn: Callable[..., Child]
) -> None:
    topic = make_topic(partitions=3)
    env = {**service_env(kafka_bootstrap, ticks=topic), **SIM_ENV}
    ends: list[dict[str, Tick]] = []

    sim = _run(spawn, env, tmp_path / "run1.log", kafka_bootstrap, topic)
    assert sim.stop() == 0, sim.tail()
    ends.append({k: v[-1] for k, v in _ticks(kafka_bootstrap, topic).items()})

    sim = _run(spawn, env, tmp_path / "run2.log", kafka_bootstrap, topic)
    sim.kill9()  # a crash: whatever librdkafka still held is lost, the next run must continue what arrived
    ends.append({k: v[-1] for k, v in _ticks(kafka_bootstrap, topic).items()})

    sim = _run(spawn, env, tmp_path / "run3.log", kafka_bootstrap, topic)
    assert sim.stop() == 0, sim.tail()

    for log in ("run2.log", "run3.log"):
        assert f"resuming {len(TICKERS)} tickers from the topic" in (tmp_path / log).read_text(), log
    ticks = _ticks(kafka_bootstrap, topic)
    assert set(ticks) == TICKERS
    dt_years = SETTINGS.tick_ms / 1000 / YEAR_SECONDS_CALENDAR
    for spec in UNIVERSE.tickers:
        got = ticks[spec.symbol]
        assert [t.seq for t in got] == list(range(len(got))), f"{spec.symbol}: seq gap or duplicate"
        assert all(a.timestamp < b.timestamp for a, b in zip(got, got[1:], strict=False)), spec.symbol
        for end in ends:
            last = end[spec.symbol]
            assert len(got) > last.seq + 1, f"{spec.symbol}: nothing produced after seq {last.seq}"
            resumed = got[last.seq + 1]
            # one 100 ms step from the last price: the vol in force after a restart is at most the configured
            # total vol (variance multiplier at its mean, calm regime), so 6 sd bound it with probability
            # 1 - 2e-9; prices are on the cent grid, so add one cent. (A jump in that step: probability ~1e-8.)
            bound = 6 * spec.volatility * math.sqrt(dt_years) + math.log1p(0.01 / last.price)
            assert abs(math.log(resumed.price / last.price)) <= bound, (spec.symbol, last, resumed)


def test_run_without_resume_starts_a_new_history(
    kafka_bootstrap: str, make_topic: Callable[..., str], tmp_path: Path, spawn: Callable[..., Child]
) -> None:
    topic = make_topic(partitions=3)
    env = {**service_env(kafka_bootstrap, ticks=topic), **SIM_ENV, "SIM_RESUME": "false"}
    sim = _run(spawn, env, tmp_path / "run1.log", kafka_bootstrap, topic)
    assert sim.stop() == 0, sim.tail()
    sim = _run(spawn, env, tmp_path / "run2.log", kafka_bootstrap, topic)
    assert sim.stop() == 0, sim.tail()
    assert "resuming" not in (tmp_path / "run2.log").read_text()
    for ticker, got in _ticks(kafka_bootstrap, topic).items():
        assert sum(t.seq == 0 for t in got) == 2, f"{ticker}: the second run should restart at seq 0"
