"""The guard against real Redis: key digests in Redis key names, throttled key guessing, a Redis outage on /quote."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest
import redis

from stack.services import free_port
from tests.ticks import make_tick

from .conftest import LiveApi, Seeder

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
