"""End to end through real Kafka and PostgreSQL: an injected +8 % jump becomes exactly one alert, a price spike.

The RSI bounds are set out of reach here: on 1m bars the 14-bar RSI leaves 30..70 a few times an hour by itself
(and the jump pushes it past 70 too), so with them the stream raises other, genuine alerts; which anomalies
each simulator event adds with the default thresholds is ``tests/unit/test_anomaly_triggers.py``.

simulator backfill (``--inject TECH:jump:+8%@...``) -> ``market-ticks`` -> ``python -m bytewax.run flows.bars``
-> ``market-bars`` -> ``python -m bytewax.run flows.anomalies`` -> ``anomalies`` table, ``alerts`` topic, a webhook
POST to a local ``http.server``; the gateway then serves it on ``/api/v1/anomalies`` and relayed it on the
WebSocket channel ``anomalies``.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from websockets.sync.client import connect

from contracts.anomaly import decode_anomaly
from tests.support import ROOT, Child, read_topic, service_env, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

JUMP_AT = "2026-01-05T10:30:00+00:00"
START, END = "2026-01-05T10:00:00+00:00", "2026-01-05T10:45:00+00:00"


class _Hook(BaseHTTPRequestHandler):
    bodies: list[dict[str, Any]] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        length = int(self.headers.get("Content-Length", "0"))
        self.bodies.append(json.loads(self.rfile.read(length)))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence the access log
        return


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A real HTTP receiver on a free port: (URL, received JSON bodies)."""
    bodies: list[dict[str, Any]] = []
    handler = type("Hook", (_Hook,), {"bodies": bodies})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", bodies
    server.shutdown()
    server.server_close()


def test_injected_jump_gives_exactly_one_price_spike_everywhere(
    tmp_path: Path,
    kafka_bootstrap: str,
    make_topic: Callable[..., str],
    pg_url: str,
    redis_url: str,
    seed: Any,
    start_api: Callable[..., Any],
    webhook: tuple[str, list[dict[str, Any]]],
    spawn: Callable[..., Child],
) -> None:
    hook_url, posts = webhook
    exits = contextlib.ExitStack()
    seed.universe([("SYNTH", "S", "Technology", "150.00"), ("TECH", "T", "Technology", "320.00"),
                   ("FINANCE", "F", "Finance", "85.00"), ("ENERGY", "E", "Energy", "75.00"),
                   ("HEALTH", "H", "Healthcare", "120.00")])  # fmt: skip
    ticks, bars, dead, alerts = (make_topic(partitions=3, prefix=p) for p in ("ticks", "bars", "dlq", "alerts"))
    api = start_api(topic_bars=bars, topic_ticks=ticks, topic_alerts=alerts)
    frames: list[str] = []
    ws = exits.enter_context(connect(api.ws_url))
    ws.send(json.dumps({"type": "subscribe", "channel": "anomalies"}))

    def read() -> None:
        try:
            for frame in ws:
                frames.append(str(frame))
        except Exception:  # closed at the end of the test
            return

    threading.Thread(target=read, daemon=True).start()

    # the shell's own settings are dropped (service_env); the ones this test relies on are pinned here
    common = service_env(kafka_bootstrap, pg_url, redis_url, ticks=ticks, bars=bars, dead_letter=dead, alerts=alerts)
    logs = [tmp_path / n for n in ("bars.log", "anomalies.log")]
    sim = subprocess.run(
        [sys.executable, "-m", "simulator", "--no-progress", "--inject", f"TECH:jump:+8%@{JUMP_AT}",
         "backfill", "--start", START, "--end", END],
        cwd=ROOT, env={**common, "SIM_PRESET": "default", "SIM_TICK_RATE": "2", "SIM_METRICS_PORT": "0"},
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert sim.returncode == 0, sim.stderr[-3000:]
    procs = [
        spawn([sys.executable, "-m", "bytewax.run", "flows.bars"],
              {**common, "FLOW_MODE": "backfill", "FLOW_METRICS_PORT": "0", "FLOW_LIVE_ENABLED": "false"}, logs[0]),
        spawn([sys.executable, "-m", "bytewax.run", "flows.anomalies"],
              {**common, "ANOMALY_METRICS_PORT": "0", "ANOMALY_WEBHOOK_URL": hook_url,
               "ANOMALY_RSI_OVERBOUGHT": "99.99", "ANOMALY_RSI_OVERSOLD": "0.01"}, logs[1]),
    ]  # fmt: skip
    try:

        def last_bar_in() -> bool:
            with psycopg.connect(pg_url) as conn:
                row = conn.execute(
                    "SELECT count(*) FROM market_bars WHERE timeframe = '1m' AND time >= '2026-01-05T10:43:00Z'"
                ).fetchone()
            return bool(row and row[0] >= 5)

        wait_for(last_bar_in, 240, "the bars flow to store the last 1m bars", logs)

        def spike_stored() -> bool:
            with psycopg.connect(pg_url) as conn:
                row = conn.execute("SELECT count(*) FROM anomalies WHERE type = 'price_spike'").fetchone()
            return bool(row and row[0] >= 1)

        wait_for(spike_stored, 120, "the price spike in the anomalies table", logs)
        wait_for(lambda: any("price_spike" in p["text"] for p in posts), 60, "the webhook POST", logs)
        time.sleep(5)  # anything that would be a second alert has had time to arrive
    finally:
        for p in procs:
            p.stop()

    with psycopg.connect(pg_url) as conn:
        spikes = conn.execute(
            "SELECT ticker, timeframe, time, severity, value, threshold FROM anomalies WHERE type = 'price_spike'"
        ).fetchall()
        everything = conn.execute("SELECT ticker, type FROM anomalies").fetchall()
    assert everything == [("TECH", "price_spike")]  # one injected spike, one alert: nothing else, no repeat
    assert len(spikes) == 1, spikes
    ticker, timeframe, at, severity, value, threshold = spikes[0]
    assert (ticker, timeframe, at.isoformat(), severity, threshold) == ("TECH", "1m", JUMP_AT, "high", 5.0)
    assert 6.0 < value < 10.0

    on_topic = [decode_anomaly(m.value() or b"") for m in read_topic(kafka_bootstrap, alerts)]
    assert [(a.ticker, a.type, a.timeframe) for a in on_topic] == [("TECH", "price_spike", "1m")]
    assert len(posts) == 1, posts
    spike_posts = [p for p in posts if "price_spike" in p["text"]]
    assert len(spike_posts) == 1
    assert "TECH" in spike_posts[0]["text"]
    assert spike_posts[0]["blocks"]

    rest = httpx.get(
        f"{api.base_url}/api/v1/anomalies", params={"ticker": "tech", "since": START, "until": END, "severity": "high"}
    )
    assert rest.status_code == 200, rest.text
    body = rest.json()
    got = [(a["ticker"], a["type"], a["time"]) for a in body["data"] if a["type"] == "price_spike"]
    assert got == [("TECH", "price_spike", "2026-01-05T10:30:00.000Z")]
    assert body["meta"]["min_severity"] == "high"
    assert all(a["severity"] in ("high", "critical") for a in body["data"])

    wait_for(lambda: any('"price_spike"' in f for f in frames), 30, "the WebSocket anomaly frame", logs)
    exits.close()
    ws_spikes = [json.loads(f) for f in frames if '"type":"anomaly"' in f and '"price_spike"' in f]
    assert len(ws_spikes) == 1
    assert ws_spikes[0]["data"]["ticker"] == "TECH"

    bad = httpx.get(f"{api.base_url}/api/v1/anomalies", params={"since": "2020-01-01T00:00:00Z", "limit": 5})
    assert bad.status_code == 422
    assert "since" in bad.json()["error"]["message"]
