"""Gateway fixtures: seed PostgreSQL/Redis/Kafka with known data and run the app under a real uvicorn.

``start_api(**overrides)`` starts the gateway in a background thread on a free port against this test's own
database, Redis and topics (``pg_url``, ``redis_url``, ``make_topic`` from ``tests/conftest.py``) and stops it
at teardown. Seeding helpers write exactly what the flows would: rows, the contract's JSON bytes in Redis,
and messages on the topics.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
import redis
import uvicorn
from confluent_kafka import Producer

from api.__main__ import proxy_options
from api.main import create_app
from api.settings import ApiSettings
from api.ws_protocol import uvicorn_ws_options
from common.clock import from_ms
from contracts import redis_keys
from contracts.bar import Bar, Indicators, encode_bar
from contracts.tick import Tick, encode_tick
from stack.services import free_port

pytestmark = pytest.mark.integration

UNIVERSE = [
    ("SYNTH", "Synthetic Corp", "Technology", "150.00"),
    ("TECH", "Tech Innovations", "Technology", "320.00"),
    ("FINANCE", "Finance Holdings", "Finance", "85.00"),
]


def make_bar(
    ticker: str,
    timeframe: str,
    start_ms: int,
    length_ms: int,
    o: float,
    h: float,
    lo: float,
    c: float,
    final: bool = True,
    indicators: Indicators | None = None,
) -> Bar:
    """A valid bar covering ``[start, start + length)``."""
    return Bar(
        ticker=ticker,
        timeframe=timeframe,
        start=start_ms,
        end=start_ms + length_ms,
        open=o,
        high=h,
        low=lo,
        close=c,
        volume=1000,
        vwap=round((h + lo) / 2, 4),
        trades=10,
        first_tick=start_ms,
        last_tick=start_ms + length_ms - 1,
        final=final,
        indicators=indicators,
    )


@dataclass
class Seeder:
    """Writes known data where the flows would."""

    pg_url: str
    redis_url: str

    def universe(self, rows: list[tuple[str, str, str, str]] = UNIVERSE) -> None:
        with psycopg.connect(self.pg_url) as conn:
            conn.cursor().executemany(
                "INSERT INTO tickers (ticker, name, sector, initial_price) VALUES (%s, %s, %s, %s)", rows
            )

    def ticks(self, ticks: list[Tick]) -> None:
        with psycopg.connect(self.pg_url) as conn:
            lo, hi = min(t.timestamp for t in ticks), max(t.timestamp for t in ticks)
            conn.execute(
                "SELECT md_ensure_partitions('market_ticks', %s, %s, INTERVAL '1 day')",
                (from_ms(lo), from_ms(hi + 1)),
            )
            conn.cursor().executemany(
                "INSERT INTO market_ticks (time, ticker, seq, price, bid, ask, bid_size, ask_size, volume)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                [
                    (
                        from_ms(t.timestamp),
                        t.ticker,
                        t.seq,
                        t.price,
                        t.bid,
                        t.ask,
                        t.bid_size,
                        t.ask_size,
                        t.volume,
                    )
                    for t in ticks
                ],
            )

    def bars(self, bars: list[Bar]) -> None:
        with psycopg.connect(self.pg_url) as conn:
            lo, hi = min(b.start for b in bars), max(b.start for b in bars)
            conn.execute(
                "SELECT md_ensure_partitions('market_bars', %s, %s, INTERVAL '1 month')",
                (from_ms(lo), from_ms(hi + 1)),
            )
            conn.cursor().executemany(
                "INSERT INTO market_bars (time, ticker, timeframe, open, high, low, close, volume, vwap, trades,"
                " first_tick_time, last_tick_time, sma_20, rsi_14, macd)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                [
                    (
                        from_ms(b.start),
                        b.ticker,
                        b.timeframe,
                        b.open,
                        b.high,
                        b.low,
                        b.close,
                        b.volume,
                        b.vwap,
                        b.trades,
                        from_ms(b.first_tick),
                        from_ms(b.last_tick),
                        b.indicators.sma_20 if b.indicators else None,
                        b.indicators.rsi_14 if b.indicators else None,
                        b.indicators.macd if b.indicators else None,
                    )
                    for b in bars
                ],
            )

    def redis_set(self, key: str, value: bytes) -> None:
        client = redis.Redis.from_url(self.redis_url)
        client.set(key, value)
        client.close()

    def latest(self, tick: Tick) -> None:
        self.redis_set(redis_keys.latest_price(tick.ticker), encode_tick(tick))

    def live_bar(self, bar: Bar) -> None:
        self.redis_set(redis_keys.live_bar(bar.ticker, bar.timeframe), encode_bar(bar))

    def final_bar(self, bar: Bar) -> None:
        self.redis_set(redis_keys.final_bar(bar.ticker, bar.timeframe), encode_bar(bar))
        client = redis.Redis.from_url(self.redis_url)
        client.hset(redis_keys.indicators(bar.ticker), bar.timeframe, encode_bar(bar))
        client.close()


@pytest.fixture
def seed(pg_url: str, redis_url: str) -> Seeder:
    """Seeding helpers bound to this test's database and Redis."""
    return Seeder(pg_url, redis_url)


@dataclass
class LiveApi:
    """A running gateway."""

    settings: ApiSettings
    server: uvicorn.Server
    thread: threading.Thread
    app: Any

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.settings.port}/ws"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(20)


@pytest.fixture
def api_settings(pg_url: str, redis_url: str, kafka_bootstrap: str, make_topic: Callable[..., str]) -> dict[str, Any]:
    """Settings overrides of a test gateway (its own topics; no rate limit unless a test asks)."""
    return {
        "database_url": pg_url,
        "redis_url": redis_url,
        "kafka_bootstrap_servers": kafka_bootstrap,
        "topic_ticks": make_topic(partitions=3, prefix="ticks"),
        "topic_bars": make_topic(partitions=3, prefix="bars"),
        "rate_limit": "",
        "rate_limit_ws_connect": "",
        "access_log": False,
        "log_level": "WARNING",
        "keys": [],
    }


@pytest.fixture
def start_api(api_settings: dict[str, Any]) -> Iterator[Callable[..., LiveApi]]:
    """Factory: ``start_api(**overrides) -> LiveApi`` (stopped after the test)."""
    running: list[LiveApi] = []

    def start(**overrides: Any) -> LiveApi:
        settings = ApiSettings(**{**api_settings, "port": free_port(), **overrides})
        app = create_app(settings)
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=settings.port,
            log_level="warning",
            lifespan="on",
            **uvicorn_ws_options(settings),
            **proxy_options(settings),  # as python -m api: X-Forwarded-For believed per API_FORWARDED_ALLOW_IPS
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("gateway did not start")
            time.sleep(0.02)
        live = LiveApi(settings, server, thread, app)
        relay = app.state.md.relay
        if relay is not None and not relay.assigned.wait(30):
            raise RuntimeError(f"relay never assigned partitions: {relay.last_error}")
        running.append(live)
        return live

    yield start
    for live in running:
        live.stop()


@pytest.fixture
def producer(kafka_bootstrap: str) -> Iterator[Producer]:
    """A Kafka producer (flushed at teardown)."""
    p = Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 1})
    yield p
    p.flush(10)
