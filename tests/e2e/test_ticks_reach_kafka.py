"""End to end: the simulator, started as `make up` starts it, publishes ticks that an independent Kafka client
(kcat, from Debian) reads back and that are valid against the published JSON Schema."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import jsonschema
import pytest

from stack.services import free_port
from tests.support import Child, service_env, wait_for

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
TICKERS = {"SYNTH", "TECH", "FINANCE", "ENERGY", "HEALTH"}


def _kcat_read(bootstrap: str, topic: str, timeout_s: float) -> list[str]:
    """Every line kcat reads from ``topic`` from the beginning until it reaches the end of all partitions
    (``-e``). While a producer is still writing, kcat may keep chasing the end: then what it read before
    ``timeout_s`` is returned."""
    cmd = ["kcat", "-b", bootstrap, "-t", topic, "-C", "-o", "beginning", "-e", "-q", "-f", "%k\t%s\n"]
    try:
        out = subprocess.run(cmd, capture_output=True, timeout=timeout_s, check=False).stdout
    except subprocess.TimeoutExpired as exc:
        out = exc.output or b""
    return [ln for ln in out.decode().splitlines() if ln.strip()]


def _enough(lines: list[str], want: int) -> bool:
    return len(lines) >= want and TICKERS <= {ln.split("\t", 1)[0] for ln in lines}


def test_simulator_ticks_are_read_back_by_kcat_and_match_the_schema(
    kafka_bootstrap: str, make_topic: Callable[..., str], tmp_path: Path, spawn: Callable[..., Child]
) -> None:
    assert shutil.which("kcat"), "kcat is installed by `python -m stack install`"
    topic = make_topic(partitions=6)
    env = {
        **service_env(kafka_bootstrap, ticks=topic),
        "SIM_METRICS_PORT": str(free_port()),
        "SIM_TICK_RATE": "20",
        # two minutes of history, then real time: the default two days (millions of ticks at full speed) made
        # how much kcat reads back, and this test validates line by line, depend on how soon the wait succeeds
        "SIM_BACKFILL": "PT2M",
    }
    sim = spawn([sys.executable, "-m", "simulator", "run"], env, tmp_path / "simulator.log")
    try:
        # the producer sends a batch per partition: one ticker's partition can be written before another's
        wait_for(
            lambda: _enough(_kcat_read(kafka_bootstrap, topic, timeout_s=10), 200),
            60,
            "200 ticks of every ticker in the topic",
            logs=[sim.log],
        )
    finally:
        code = sim.stop()
    assert code == 0, sim.tail()
    # the simulator has stopped and flushed: the topic no longer moves, so kcat -e reads all of it and ends
    lines = _kcat_read(kafka_bootstrap, topic, timeout_s=60)
    assert len(lines) >= 200, sim.tail()

    schema = json.loads((ROOT / "contracts" / "schemas" / "tick.v1.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    seqs: dict[str, list[int]] = defaultdict(list)
    for line in lines:
        key, value = line.split("\t", 1)
        tick = json.loads(value)
        validator.validate(tick)
        assert key == tick["ticker"], "the Kafka key is the ticker"
        assert tick["bid"] < tick["ask"]
        seqs[key].append(tick["seq"])
    assert TICKERS <= set(seqs)
    for ticker, got in seqs.items():
        # one partition per ticker: Kafka order is the simulator's order, with no gap or duplicate
        assert got == list(range(got[0], got[0] + len(got))), ticker
