"""The guard against real Redis: key digests in Redis key names, throttled key guessing, a Redis outage on the
routes that read Redis first (/quote, /aggregated, /indicators, /bars)."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest
import redis

from stack.services import free_port
from tests.ticks import make_tick

from .conftest import LiveApi, Seeder, make_bar

pytestmark = pytest.mark.integration

KEYS = ["k-one-secret-value", "k-two-secret-value"]


def test_keys_never_reach_redis_and_requests_without_a_valid_key_are_limited(
    seed: Seeder, start_api: Callable[..., LiveApi], redis_url: str
) -> None:
    seed.universe()
    api = start_api(keys=KEYS, rate_limit="3/minute")
    with httpx.Client(base_url=api.base_url, timeout=10) as client:
        with_key = [client.get("/api/v1/tickers", headers={"X-API-Key": KEYS[0]}).status_code for _ in range(4)]
        bearer = client.get("/api/v1/tickers", headers={"Authorization": f"Bearer {KEYS[1]}"}).status_code
        guesses = [client.get("/api/v1/tickers", headers={"X-API-Key": f"guess-{i}"}).status_code for i in range(4)]
    assert with_key == [200, 200, 200, 429]
    assert bearer == 200
    names = [k.decode() for k in redis.Redis.from_url(redis_url).keys("*")]
    assert names  # the limiter did write its counters
    assert not [n for n in names if any(key in n for key in KEYS)]
    assert guesses == [401, 401, 401, 429]  # limited by client IP before the 401


def test_redis_down_and_nothing_archived_is_a_503(seed: Seeder, start_api: Callable[..., LiveApi]) -> None:
    seed.universe()
    seed.latest(make_tick("SYNTH", 1, int(time.time() * 1000), 150.25))  # the tick exists in Redis only
    api = start_api(redis_url=f"redis://127.0.0.1:{free_port()}/0", ready_timeout_s=0.5)
    resp = httpx.get(api.base_url + "/api/v1/quote/SYNTH", timeout=10)
    assert resp.status_code == 503
    assert resp.json()["error"]["code"] == "unavailable"


def test_redis_down_every_cached_route_answers_from_the_database_or_503_never_404(
    seed: Seeder, start_api: Callable[..., LiveApi]
) -> None:
    seed.universe()
    minute = int(time.time()) // 60 * 60_000 - 300_000
    seed.bars([make_bar("TECH", "1m", minute, 60_000, 10.0, 10.5, 9.5, 10.25)])  # TECH: in the database
    api = start_api(redis_url=f"redis://127.0.0.1:{free_port()}/0", ready_timeout_s=0.5)

    def get(path: str) -> httpx.Response:
        return httpx.get(api.base_url + "/api/v1" + path, timeout=10)

    # SYNTH has nothing in the database: with Redis down that is "try again", not "there is none"
    for path in ("/aggregated/SYNTH?window=1min", "/indicators/SYNTH?timeframe=1m"):
        resp = get(path)
        assert resp.status_code == 503, path
        assert resp.json()["error"]["code"] == "unavailable", path
    aggregated, bars = get("/aggregated/TECH?window=1min"), get("/bars/TECH?timeframe=1m")
    assert aggregated.status_code == 200
    assert aggregated.json()["data"]["close"] == "10.25"
    assert bars.status_code == 200  # the final bars from the database, without the live bar
    assert [b["close"] for b in bars.json()["data"]] == ["10.25"]
