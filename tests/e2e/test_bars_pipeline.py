"""End to end: simulator backfill -> Kafka -> `flows.bars` (Bytewax) -> PostgreSQL, Redis, `market-bars`.

The simulator and the flow run as subprocesses, configured only through their environment, as ``make up``
runs them. The ticks are read back from Kafka and aggregated independently with pandas (not the flow's code);
the test checks that ``market_bars``, the Redis keys and the ``market-bars`` messages agree with each other and
with that computation.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pandas as pd
import psycopg
import pytest
import redis

from contracts import redis_keys
from contracts.bar import TIMEFRAMES, decode_bar
from stack.services import TICKS_TOPIC_CONFIG, free_port
from tests.support import Child, read_topic, service_env, wait_for

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
START, END = "2025-01-06T00:00:00+00:00", "2025-01-06T01:05:00+00:00"  # closes the 00:00 1h bar on event time
GRACE_MS = 2_000
Key = tuple[str, str, int]


def read_pairs(bootstrap: str, topic: str) -> list[tuple[bytes, bytes]]:
    """(key, value) of every message of ``topic`` up to its current end, partition by partition."""
    return [(m.key() or b"", m.value() or b"") for m in read_topic(bootstrap, topic)]


def expected_bars(ticks: pd.DataFrame) -> pd.DataFrame:
    """OHLCV, VWAP, trades and first/last tick time per (ticker, timeframe, start), with pandas.

    Open is the tick with the earliest event time (ties: the first to arrive), close the latest (ties: the
    last to arrive); VWAP is the volume-weighted price, or the close for a bar without volume.
    """
    ticks = ticks.sort_values(["ticker", "timestamp", "arrival"], kind="stable")
    frames = []
    for timeframe, length in TIMEFRAMES.items():
        df = ticks.assign(timeframe=timeframe, start=ticks["timestamp"] // length * length)
        df["pv"] = df["cents"] * df["volume"]
        g = df.groupby(["ticker", "timeframe", "start"], sort=True)
        bars = g.agg(
            open=("cents", "first"), high=("cents", "max"), low=("cents", "min"), close=("cents", "last"),
            volume=("volume", "sum"), pv=("pv", "sum"), trades=("cents", "size"),
            first_tick=("timestamp", "min"), last_tick=("timestamp", "max"),
        ).reset_index()  # fmt: skip
        bars["end"] = bars["start"] + length
        bars["vwap"] = np.where(bars["volume"] > 0, bars["pv"] / bars["volume"].clip(lower=1), bars["close"]) / 100
        frames.append(bars)
    return pd.concat(frames, ignore_index=True)


def db_bars(url: str) -> pd.DataFrame:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT ticker, timeframe, (extract(epoch FROM time) * 1000)::bigint, open, high, low, close, volume,"
            " vwap, trades, (extract(epoch FROM first_tick_time) * 1000)::bigint,"
            " (extract(epoch FROM last_tick_time) * 1000)::bigint, sma_20, sma_50, bb_upper, bb_middle, bb_lower"
            " FROM market_bars ORDER BY 1, 2, 3"
        ).fetchall()
    columns = ["ticker", "timeframe", "start", "open", "high", "low", "close", "volume", "vwap", "trades",
               "first_tick", "last_tick", "sma_20", "sma_50", "bb_upper", "bb_middle", "bb_lower"]  # fmt: skip
    return pd.DataFrame(rows, columns=columns)


def test_bars_flow_end_to_end(
    kafka_bootstrap: str,
    make_topic: Callable[..., str],
    pg_url: str,
    redis_url: str,
    tmp_path: Path,
    spawn: Callable[..., Child],
) -> None:
    ticks_topic = make_topic(partitions=3, config=TICKS_TOPIC_CONFIG)  # as `make up` creates it
    bars_topic, dlq = make_topic(partitions=3), make_topic(partitions=1)
    env = {
        **service_env(kafka_bootstrap, pg_url, redis_url, ticks=ticks_topic, bars=bars_topic, dead_letter=dlq),
        "SIM_METRICS_PORT": str(free_port()),
        "SIM_TICK_RATE": "2",
        "FLOW_METRICS_PORT": str(free_port()),
    }
    sim = subprocess.run(
        [sys.executable, "-m", "simulator", "--no-progress", "backfill", "--start", START, "--end", END],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert sim.returncode == 0, sim.stderr[-3000:]

    # the ticks as the flow will see them, aggregated independently
    records = []
    for arrival, (key, value) in enumerate(read_pairs(kafka_bootstrap, ticks_topic)):
        tick = json.loads(value)
        assert key.decode() == tick["ticker"]
        records.append((tick["ticker"], tick["timestamp"], round(tick["price"] * 100), tick["volume"], arrival))
    ticks = pd.DataFrame(records, columns=["ticker", "timestamp", "cents", "volume", "arrival"])
    assert ticks["ticker"].nunique() >= 5
    assert len(ticks) > 10_000
    expected = expected_bars(ticks).set_index(["ticker", "timeframe", "start"])
    watermark = ticks.groupby("ticker")["timestamp"].max()
    # windows the ticks themselves close (end + grace <= the ticker's newest event time): these must be final
    closed = expected[expected["end"] + GRACE_MS <= watermark.reindex(expected.index.get_level_values(0)).to_numpy()]
    assert set(closed.index.get_level_values("timeframe")) == {"1m", "5m", "15m", "1h"}

    log = tmp_path / "flow.log"
    flow = spawn([sys.executable, "-m", "bytewax.run", "flows.bars"], env, log)
    try:
        wait_for(
            lambda: set(closed.index) <= set(db_bars(pg_url).set_index(["ticker", "timeframe", "start"]).index),
            120, f"{len(closed)} closed bars in market_bars", [log], lambda: f"{len(db_bars(pg_url))} bars",
        )  # fmt: skip
        stored = db_bars(pg_url).set_index(["ticker", "timeframe", "start"])
        messages = _wait_for_topic_finals(kafka_bootstrap, bars_topic, set(stored.index), log)
        client = redis.Redis.from_url(redis_url)
        redis_state = _redis_snapshot(client, ticks["ticker"].unique().tolist())
        assert flow.alive(), flow.tail()
    finally:
        flow.stop()

    # 1. market_bars == the independent computation (every stored bar, and at least every closed window)
    assert len(stored) >= len(closed)
    exp = expected.loc[stored.index]
    for column in ("open", "high", "low", "close"):
        assert (stored[column] == exp[column].map(lambda c: Decimal(int(c)) / 100)).all(), column
    for column in ("volume", "trades", "first_tick", "last_tick"):
        assert (stored[column].to_numpy() == exp[column].to_numpy()).all(), column
    np.testing.assert_allclose(stored["vwap"].astype(float), exp["vwap"], rtol=0, atol=1e-6)
    _check_indicators(stored)

    # 2. market-bars: schema-valid, one content per final window, equal to the database
    schema = json.loads((ROOT / "contracts" / "schemas" / "bar.v1.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    finals: dict[Key, bytes] = {}
    for key, value in messages:
        validator.validate(json.loads(value))
        bar = decode_bar(value)
        assert key.decode() == bar.ticker
        if bar.final:
            k = (bar.ticker, bar.timeframe, bar.start)
            assert finals.setdefault(k, value) == value, f"two different final bars for {k}"
    assert set(finals) == set(stored.index)
    for k, value in finals.items():
        bar, row = decode_bar(value), stored.loc[k]
        assert (Decimal(f"{bar.open:.2f}"), Decimal(f"{bar.close:.2f}"), bar.volume, bar.trades) == (
            row["open"], row["close"], row["volume"], row["trades"],
        )  # fmt: skip
        assert bar.indicators is not None
        assert bar.indicators.sma_20 == row["sma_20"] or (bar.indicators.sma_20 is None and pd.isna(row["sma_20"]))

    # 3. Redis: the newest final bar per ticker/timeframe (key and indicators hash), the newest tick, live bars
    newest = stored.reset_index().sort_values("start").groupby(["ticker", "timeframe"]).last()
    for (ticker, timeframe), row in newest.iterrows():
        raw = redis_state["final"][ticker, timeframe]
        assert raw == finals[ticker, timeframe, row["start"]], (ticker, timeframe)
        assert redis_state["indicators"][ticker][timeframe.encode()] == raw
    last_ticks = ticks.sort_values("arrival").groupby("ticker").last()
    for ticker, tick in last_ticks.iterrows():
        latest = json.loads(redis_state["latest"][ticker])
        assert (latest["timestamp"], round(latest["price"] * 100)) == (tick["timestamp"], tick["cents"]), ticker
    for (ticker, timeframe), raw in redis_state["live"].items():
        live = decode_bar(raw)
        assert not live.final
        assert (live.ticker, live.timeframe) == (ticker, timeframe)
        if (ticker, timeframe) in newest.index:  # the open window is newer than the last final one
            assert live.start > newest.loc[(ticker, timeframe), "start"]
    assert redis_state["live"], "open windows have live bars in Redis"


def _wait_for_topic_finals(bootstrap: str, topic: str, want: set[Key], log: Path) -> list[tuple[bytes, bytes]]:
    """All messages of ``topic`` once every wanted final bar is on it (the sink writes Kafka after the database)."""
    messages: list[tuple[bytes, bytes]] = []

    def complete() -> bool:
        messages[:] = read_pairs(bootstrap, topic)
        got = {(b.ticker, b.timeframe, b.start) for b in map(decode_bar, (v for _, v in messages)) if b.final}
        return want <= got

    wait_for(complete, 60, f"{len(want)} final bars on {topic!r}", [log], lambda: f"{len(messages)} messages")
    return messages


def _redis_snapshot(client: redis.Redis, tickers: list[str]) -> dict[str, dict[Any, Any]]:
    state: dict[str, dict[Any, Any]] = {"final": {}, "live": {}, "indicators": {}, "latest": {}}
    for ticker in tickers:
        state["latest"][ticker] = client.get(redis_keys.latest_price(ticker))
        state["indicators"][ticker] = client.hgetall(redis_keys.indicators(ticker))
        for timeframe in TIMEFRAMES:
            state["final"][ticker, timeframe] = client.get(redis_keys.final_bar(ticker, timeframe))
            live = client.get(redis_keys.live_bar(ticker, timeframe))
            if live is not None:
                state["live"][ticker, timeframe] = live
    return state


def _check_indicators(stored: pd.DataFrame) -> None:
    """SMA(20), SMA(50) and Bollinger(20, 2) against pandas rolling windows over each series' closes.

    Bars are contiguous here (a 24/7 simulator at 2 ticks/s fills every minute), so a rolling window over the
    stored closes is the indicator's window."""
    for (_, _), series in stored.reset_index().groupby(["ticker", "timeframe"]):
        series = series.sort_values("start")
        close = series["close"].astype(float)
        for column, want in (
            ("sma_20", close.rolling(20).mean()),
            ("sma_50", close.rolling(50).mean()),
            ("bb_middle", close.rolling(20).mean()),
            ("bb_upper", close.rolling(20).mean() + 2 * close.rolling(20).std(ddof=0)),
            ("bb_lower", close.rolling(20).mean() - 2 * close.rolling(20).std(ddof=0)),
        ):
            got = series[column].astype(float).to_numpy()
            assert (np.isnan(got) == want.isna().to_numpy()).all(), column
            np.testing.assert_allclose(got, want.to_numpy(), rtol=0, atol=1e-9, err_msg=column)
