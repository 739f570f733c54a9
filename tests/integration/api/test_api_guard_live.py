"""The guard against real Redis: key digests in Redis key names, throttled key guessing, a Redis outage on the
routes that read Redis first (/quote, /aggregated, /indicators, /bars)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable

import httpx
import pytest
import redis
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

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


def _raw_status(api: LiveApi, request: bytes) -> bytes:
    """The status line of the answer to ``request``, sent as these exact bytes (no client re-encoding)."""
    with socket.create_connection(("127.0.0.1", api.settings.port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while b"\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    return answer.split(b"\r\n", 1)[0]


def test_non_ascii_keys_are_401_over_http_and_1008_over_websocket_never_a_500(
    seed: Seeder, start_api: Callable[..., LiveApi]
) -> None:
    """Non-ASCII bytes in X-API-Key, Authorization and the raw query string through the real HTTP parser."""
    seed.universe()
    api = start_api(keys=KEYS)
    for header in (
        "X-API-Key: ключ".encode(),
        b"X-API-Key: caf\xe9",
        "Authorization: Bearer ключ".encode(),
        b"Authorization: Bearer " + KEYS[0].encode() + b"\xa0",
    ):
        request = b"GET /api/v1/tickers HTTP/1.1\r\nHost: t\r\n" + header + b"\r\nConnection: close\r\n\r\n"
        assert _raw_status(api, request) == b"HTTP/1.1 401 Unauthorized", header
    for query in ("api_key=ключ".encode(), b"api_key=%FF%ED%A0%80", "api_key=k\u00e9y".encode("latin-1")):
        request = b"GET /api/v1/tickers?" + query + b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        assert _raw_status(api, request) in (b"HTTP/1.1 401 Unauthorized", b"HTTP/1.1 400 Bad Request"), query
    good = f"GET /api/v1/tickers HTTP/1.1\r\nHost: t\r\nX-API-Key: {KEYS[0]}\r\nConnection: close\r\n\r\n"
    assert _raw_status(api, good.encode()) == b"HTTP/1.1 200 OK"

    async def websocket() -> int | None:
        # "ключ" percent-encoded: the websockets client sends ASCII header values only
        async with connect(api.ws_url + "?api_key=%D0%BA%D0%BB%D1%8E%D1%87") as ws:
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
        return closed.value.rcvd.code if closed.value.rcvd is not None else None

    assert asyncio.run(websocket()) == 1008


def test_x_forwarded_for_is_believed_only_from_the_configured_proxies(
    seed: Seeder, start_api: Callable[..., LiveApi]
) -> None:
    """The client address is the rate-limit identity of requests without a valid key. By default (uvicorn's)
    a loopback peer is a trusted proxy: its X-Forwarded-For picks the identity, so each forwarded address has its
    own budget. With ``API_FORWARDED_ALLOW_IPS`` empty nobody is trusted and the header changes nothing."""
    seed.universe()

    def codes(api: LiveApi, forwarded: list[str]) -> list[int]:
        with httpx.Client(base_url=api.base_url, timeout=10) as client:
            return [client.get("/api/v1/tickers", headers={"X-Forwarded-For": f}).status_code for f in forwarded]

    proxied = start_api(rate_limit="2/minute")
    assert proxied.settings.forwarded_allow_ips == ["127.0.0.1", "::1"]
    assert codes(proxied, ["203.0.113.1"] * 3) == [200, 200, 429]  # limited per forwarded client
    assert codes(proxied, [f"203.0.113.{i}" for i in range(2, 6)]) == [200] * 4  # a new budget per address

    direct = start_api(rate_limit="2/minute", forwarded_allow_ips=[])
    assert codes(direct, [f"198.51.100.{i}" for i in range(1, 5)]) == [200, 200, 429, 429]  # the peer's budget
