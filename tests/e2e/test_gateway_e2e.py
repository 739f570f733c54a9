"""End to end through the gateway: simulator -> Kafka -> bars flow -> PostgreSQL/Redis -> gateway REST and WebSocket.

Every piece runs as the stack runs it, as its own process (``python -m simulator run``,
``python -m bytewax.run flows.bars``, ``python -m api``) against the test's own Kafka topics, database and Redis.
A ``websockets`` client subscribes and receives live ticks; ``/api/v1/bars/{ticker}`` returns exactly the final
bars the flow wrote to ``market_bars``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import websockets

from stack.services import free_port
from tests.support import Child, seed_universe, service_env, wait_for

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
PRESET = "gbm"  # five independent tickers: cheap to simulate


async def _receive_ticks(url: str, ticker: str, want: int, timeout_s: float) -> list[dict[str, Any]]:
    """Subscribe to ``ticker`` and collect ``want`` tick messages (the protocol's other messages are checked)."""
    ticks: list[dict[str, Any]] = []
    async with websockets.connect(url) as ws:
        hello = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert hello["type"] == "connected"
        assert hello["clientId"]
        await ws.send(json.dumps({"type": "subscribe", "tickers": [ticker]}))
        async with asyncio.timeout(timeout_s):
            while len(ticks) < want:
                msg = json.loads(await ws.recv())
                if msg["type"] == "tick":
                    ticks.append(msg["data"])
                else:
                    assert msg["type"] in ("subscribed", "heartbeat"), msg
    return ticks


def test_simulated_ticks_reach_websocket_clients_and_flow_bars_reach_rest(
    kafka_bootstrap: str,
    make_topic: Callable[..., str],
    pg_url: str,
    redis_url: str,
    tmp_path: Path,
    spawn: Callable[..., Child],
) -> None:
    seed_universe(pg_url, PRESET)
    api_port = free_port()
    topics = {"ticks": make_topic(partitions=3), "bars": make_topic(partitions=3), "dead_letter": make_topic(1)}
    env = {
        **service_env(kafka_bootstrap, pg_url, redis_url, **topics),
        "SIM_PRESET": PRESET,
        "SIM_TICK_RATE": "20",
        "SIM_METRICS_PORT": "0",
        "FLOW_METRICS_PORT": str(free_port()),
        "FLOW_CONSUMER_GROUP": f"e2e-bars-{api_port}",
        "API_PORT": str(api_port),
        "API_BIND_HOST": "127.0.0.1",
        "API_RATE_LIMIT": "",
    }
    logs = {name: tmp_path / f"{name}.log" for name in ("api", "flow", "simulator")}
    base = f"http://127.0.0.1:{api_port}"
    py = sys.executable
    spawn([py, "-m", "api"], env, logs["api"])
    spawn([py, "-m", "bytewax.run", "flows.bars"], env, logs["flow"])
    wait_for(
        lambda: httpx.get(f"{base}/ready", timeout=2).status_code == 200, 90, "gateway ready", [logs["api"]],
        ignore=(httpx.HTTPError, OSError),
    )  # fmt: skip
    sim = [py, "-m", "simulator", "--session", "24/7", "--no-progress", "run", "--backfill", "0.1"]
    simulator = spawn(sim, env, logs["simulator"])
    # live ticks through the gateway's Kafka relay to a WebSocket client
    ticks = asyncio.run(_receive_ticks(f"ws://127.0.0.1:{api_port}/ws", "SYNTH", 20, 90))
    assert {t["ticker"] for t in ticks} == {"SYNTH"}
    for t in ticks:
        assert t["bid"] < t["ask"]
        assert t["price"] > 0
        assert isinstance(t["timestamp"], int)
    stamps = [t["timestamp"] for t in ticks]
    assert stamps == sorted(stamps), "one ticker's ticks arrive in order"
    now_ms = time.time() * 1000
    # relayed as produced: the backfill's history (0.1 h) first, then real time
    assert all(now_ms - 0.1 * 3_600_000 - 60_000 <= s <= now_ms + 5_000 for s in stamps)

    # final bars the flow wrote (the 6 minutes of backfill close quickly), then the same bars over REST
    def final_rows() -> int:
        with psycopg.connect(pg_url) as conn:
            row = conn.execute(
                "SELECT count(*) FROM market_bars WHERE ticker = 'SYNTH' AND timeframe = '1m'"
            ).fetchone()
        return int(row[0]) if row else 0

    wait_for(
        lambda: final_rows() >= 3, 180, "three final 1m bars in market_bars", list(logs.values()),
        status=lambda: f"{final_rows()} rows",
    )  # fmt: skip
    resp = httpx.get(f"{base}/api/v1/bars/SYNTH", params={"timeframe": "1m", "limit": 5000}, timeout=10)
    simulator.stop()  # its part is done; the gateway and the flow are stopped at teardown
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["success"] is True
    finals = [b for b in body["data"] if b["final"]]
    assert len(finals) >= 3
    assert [b["time"] for b in finals] == sorted(b["time"] for b in finals)
    # compare with the rows the flow wrote, up to the last final bar the API returned
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute(
            "SELECT to_char(time AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'),"
            " open, high, low, close, volume, vwap, trades FROM market_bars"
            " WHERE ticker = 'SYNTH' AND timeframe = '1m' AND time >= %s::timestamptz"
            " AND time <= %s::timestamptz ORDER BY time",
            (body["meta"]["start"], finals[-1]["time"]),
        ).fetchall()
    assert len(rows) == len(finals)
    for bar, (iso, o, h, lo, c, v, vwap, trades) in zip(finals, rows, strict=True):
        assert bar["time"] == iso
        assert (Decimal(bar["open"]), Decimal(bar["high"]), Decimal(bar["low"]), Decimal(bar["close"])) == (
            o,
            h,
            lo,
            c,
        )
        assert Decimal(bar["vwap"]) == vwap
        assert (bar["volume"], bar["trades"]) == (v, trades)
        assert Decimal(bar["low"]) <= Decimal(bar["open"]) <= Decimal(bar["high"])
