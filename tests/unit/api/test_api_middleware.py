"""GatewayMiddleware (request ids, auth, rate limit, fast routes, metric labels) and the bounded ticker set.

The app is the real :func:`api.main.create_app` driven in-process through ``httpx.ASGITransport`` (no lifespan,
no network): the state holds fakes for the database and Redis.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from pydantic import SecretStr

from api.cache import MarketCache, TickerDirectory
from api.errors import ApiError
from api.main import create_app
from api.settings import ApiSettings
from api.store import unavailable
from contracts import redis_keys
from contracts.tick import MAX_TICKER_CHARS, encode_tick
from tests.ticks import make_tick

TICK = make_tick("SYNTH", 9, 1_759_415_401_123, 150.25, volume=500, bid_size=100, ask_size=200)


class FakeStore:
    """The ticker list and a counter of the queries it answered."""

    def __init__(self, names: set[str], delay_s: float = 0.0) -> None:
        self.names = set(names)
        self.delay_s = delay_s
        self.queries = 0

    async def ticker_names(self) -> set[str]:
        self.queries += 1
        await asyncio.sleep(self.delay_s)
        return set(self.names)

    async def latest_tick(self, ticker: str) -> None:
        return None


class FakeRedis:
    def __init__(self, values: dict[str, bytes]) -> None:
        self.values = values

    async def mget(self, keys: list[str]) -> list[bytes | None]:
        return [self.values.get(k) for k in keys]


class FakeLimiter:
    """Allows ``budget`` requests, then answers 429 like :class:`api.ratelimit.RateLimiter`."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.identities: list[str] = []

    async def check(self, identity: str, kind: str = "http") -> None:
        self.identities.append(identity)
        self.budget -= 1
        if self.budget < 0:
            raise ApiError(429, "rate_limited", "rate limit exceeded", headers={"Retry-After": "7"})


@dataclass
class FakeState:
    settings: ApiSettings
    tickers: TickerDirectory
    cache: MarketCache
    store: FakeStore
    limiter: FakeLimiter | None = None
    started_monotonic: float = 0.0


def client_for(
    limiter: FakeLimiter | None = None, root_path: str = "", **overrides: Any
) -> tuple[httpx.AsyncClient, FakeState]:
    settings = ApiSettings(relay_enabled=False, access_log=False, **overrides)
    app = create_app(settings)
    store = FakeStore({"SYNTH", "TECH"})
    tickers = TickerDirectory(store, ttl_s=3600, miss_refresh_s=3600)
    tickers._known = frozenset(store.names)  # as after the start-up load
    tickers._loaded_at = time.monotonic()
    tickers._current = True
    state = FakeState(
        settings, tickers, MarketCache(FakeRedis({redis_keys.latest_price("SYNTH"): encode_tick(TICK)})), store, limiter
    )  # type: ignore[arg-type]
    app.state.md = state
    transport = httpx.ASGITransport(app=app, client=("10.1.2.3", 5555), root_path=root_path)
    return httpx.AsyncClient(transport=transport, base_url="http://test"), state


def count(route: str, status: int) -> float:
    value = REGISTRY.get_sample_value("api_requests_total", {"method": "GET", "route": route, "status": str(status)})
    return value or 0.0


QUOTE_JSON = {
    "time": "2025-10-02T14:30:01.123Z",
    "ticker": "SYNTH",
    "price": "150.25",
    "volume": 500,
    "bid": "150.24",
    "ask": "150.26",
    "bid_size": 100,
    "ask_size": 200,
    "seq": 9,
}


@pytest.mark.parametrize("fast", [True, False])
async def test_quote_is_the_same_with_and_without_the_fast_route(fast: bool) -> None:
    client, state = client_for(fast_routes=fast)
    async with client:
        resp = await client.get("/api/v1/quote/synth")
        latest = await client.get("/api/v1/latest/SYNTH")
        unknown = await client.get("/api/v1/quote/NOPE")
        longest = await client.get("/api/v1/quote/" + "A" * MAX_TICKER_CHARS)
        too_long = await client.get("/api/v1/quote/" + "A" * (MAX_TICKER_CHARS + 1))
    assert resp.status_code == 200
    assert resp.json() == {"success": True, "data": QUOTE_JSON}
    assert latest.json()["data"] == {**QUOTE_JSON, "symbol": "SYNTH"}
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "not_found"
    assert longest.status_code == 404  # the contract's longest ticker is a valid, unknown one
    assert too_long.status_code == 422
    assert too_long.json()["error"]["message"].startswith(
        f"ticker: String should have at most {MAX_TICKER_CHARS} characters"
    )
    assert resp.headers["x-request-id"]


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("spelling", ["\u017fynth", "SYNTH\u0131", "\u3000SYNTH", "\uff33YNTH"])
async def test_non_ascii_spellings_of_a_ticker_are_unknown(fast: bool, spelling: str) -> None:
    # U+017F long s and U+0131 dotless i upper-case to S and I; U+3000 is stripped as a space; U+FF33 is fullwidth S
    client, _ = client_for(fast_routes=fast)
    async with client:
        for path in ("/api/v1/quote/", "/api/v1/latest/"):
            resp = await client.get(path + spelling)
            assert resp.status_code == 404, (path, spelling)
            assert resp.json()["error"]["code"] == "not_found"
        assert (await client.get("/api/v1/quote/ synth ")).status_code == 200  # ASCII case and spaces still fold


async def test_metric_route_label_is_the_template_for_hits_misses_and_rejections() -> None:
    client, _ = client_for(keys=[SecretStr("k1")])
    template = "/api/v1/quote/{ticker}"
    before = (count(template, 200), count(template, 404), count(template, 401), count("/api/v1/bars/{ticker}", 401))
    async with client:
        assert (await client.get("/api/v1/quote/SYNTH", headers={"X-API-Key": "k1"})).status_code == 200
        assert (await client.get("/api/v1/quote/ZZZ", headers={"X-API-Key": "k1"})).status_code == 404
        assert (await client.get("/api/v1/quote/SYNTH")).status_code == 401
        assert (await client.get("/api/v1/bars/SYNTH")).status_code == 401
    after = (count(template, 200), count(template, 404), count(template, 401), count("/api/v1/bars/{ticker}", 401))
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 1, 1, 1]
    assert (
        REGISTRY.get_sample_value(
            "api_requests_total", {"method": "GET", "route": "/api/v1/quote/ZZZ", "status": "404"}
        )
        is None
    )


async def test_auth_accepts_header_bearer_and_query_and_leaves_service_routes_open() -> None:
    client, _ = client_for(keys=[SecretStr("k1"), SecretStr("k2")])
    async with client:
        missing = await client.get("/api/v1/quote/SYNTH")
        wrong = await client.get("/api/v1/quote/SYNTH", headers={"X-API-Key": "nope"})
        codes = [
            (await client.get("/api/v1/quote/SYNTH", headers={"X-API-Key": "k1"})).status_code,
            (await client.get("/api/v1/quote/SYNTH", headers={"Authorization": "Bearer k2"})).status_code,
            (await client.get("/api/v1/quote/SYNTH", params={"api_key": "k1"})).status_code,
            (await client.get("/api/v1/nothing", headers={"X-API-Key": "k1"})).status_code,
        ]
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert missing.json() == {
        "success": False,
        "error": {"code": "unauthorized", "message": missing.json()["error"]["message"]},
    }
    assert wrong.status_code == 401
    assert codes == [200, 200, 200, 404]


async def test_rate_limit_answers_429_with_retry_after_per_key_or_client_ip() -> None:
    limiter = FakeLimiter(budget=2)
    client, _ = client_for(limiter)
    async with client:
        codes = [(await client.get("/api/v1/quote/SYNTH")).status_code for _ in range(2)]
        refused = await client.get("/api/v1/quote/SYNTH")
    assert codes == [200, 200]
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "7"
    assert refused.json()["error"]["code"] == "rate_limited"
    assert limiter.identities == ["10.1.2.3"] * 3  # no keys configured: the client address


async def test_request_id_is_kept_from_the_client_or_made_unique() -> None:
    client, _ = client_for()
    async with client:
        given = await client.get("/health", headers={"X-Request-ID": "abc-123"})
        first = await client.get("/api/v1/quote/SYNTH")
        second = await client.get("/api/v1/quote/SYNTH")
    assert given.headers["x-request-id"] == "abc-123"
    assert first.headers["x-request-id"] != second.headers["x-request-id"]


async def test_unknown_tickers_reload_the_set_at_most_once_per_interval() -> None:
    store = FakeStore({"SYNTH"})
    tickers = TickerDirectory(store, ttl_s=3600, miss_refresh_s=3600)
    await tickers.refresh()
    assert store.queries == 1
    assert await tickers.require("synth") == "SYNTH"
    for name in ("NOPE", "NADA", "ZIP"):
        with pytest.raises(ApiError) as err:
            await tickers.require(name)
        assert err.value.status == 404
    assert store.queries == 1  # within the interval misses are answered from the set


async def test_a_ticker_added_later_is_found_on_a_miss_and_concurrent_misses_share_one_query() -> None:
    store = FakeStore({"SYNTH"}, delay_s=0.01)
    tickers = TickerDirectory(store, ttl_s=3600, miss_refresh_s=0.0)
    await tickers.refresh()
    store.names.add("NEWCO")
    got = await asyncio.gather(*(tickers.require("newco") for _ in range(20)))
    assert got == ["NEWCO"] * 20
    assert store.queries == 2  # the start-up load and one shared reload
    assert tickers.canonical("newco") == "NEWCO"


class FlakyStore(FakeStore):
    """A database that is down (503 from the store) until ``up`` is set."""

    def __init__(self, names: set[str]) -> None:
        super().__init__(names)
        self.up = False

    async def ticker_names(self) -> set[str]:
        self.queries += 1
        if not self.up:
            raise unavailable("database", OSError("connection refused"))
        return set(self.names)


async def statuses(tickers: TickerDirectory, name: str, times: int) -> list[int]:
    out = []
    for _ in range(times):
        try:
            await tickers.require(name)
            out.append(200)
        except ApiError as err:
            out.append(err.status)
    return out


async def test_a_database_down_at_start_up_is_a_503_not_a_404_until_the_set_loads() -> None:
    store = FlakyStore({"SYNTH"})
    tickers = TickerDirectory(store, ttl_s=3600, miss_refresh_s=3600)
    with pytest.raises(ApiError):
        await tickers.refresh()  # the start-up load fails
    assert await statuses(tickers, "SYNTH", 3) == [503, 503, 503]
    assert store.queries == 1  # within miss_refresh_s: 503 without a query
    store.up = True
    tickers.miss_refresh_s = 0.0
    assert await statuses(tickers, "SYNTH", 1) == [200]
    assert await statuses(tickers, "NOPE", 1) == [404]


async def test_a_failed_reload_makes_misses_503_and_known_tickers_stay_200() -> None:
    store = FlakyStore({"SYNTH"})
    store.up = True
    tickers = TickerDirectory(store, ttl_s=3600, miss_refresh_s=3600)
    await tickers.refresh()
    store.up = False
    tickers.miss_refresh_s = 0.0
    assert await statuses(tickers, "NEWCO", 1) == [503]  # the reload fails: 503 from the store
    tickers.miss_refresh_s = 3600
    assert await statuses(tickers, "NEWCO", 2) == [503, 503]  # and the set stays suspect until a reload works
    assert await statuses(tickers, "SYNTH", 1) == [200]


@pytest.mark.parametrize("reader", ["canonical", "known"])
async def test_a_stale_set_reloads_in_the_background_on_the_fast_path_and_ws_reads(reader: str) -> None:
    store = FakeStore({"SYNTH"})
    tickers = TickerDirectory(store, ttl_s=3600, miss_refresh_s=3600)
    await tickers.refresh()
    store.names.add("NEWCO")

    def has_newco() -> bool:
        return tickers.canonical("newco") == "NEWCO" if reader == "canonical" else "NEWCO" in tickers.known

    assert not has_newco()  # fresh set: no reload, no query
    assert store.queries == 1
    tickers._loaded_at -= 7200  # noqa: SLF001 - two TTLs ago, without waiting on the clock
    has_newco()  # stale: starts one background reload, answers from the current set
    for _ in range(5):
        await asyncio.sleep(0)
    assert store.queries == 2
    assert has_newco()


async def test_admit_is_the_one_key_and_rate_limit_check_of_rest_and_ws() -> None:
    from api.auth import admit, key_identity

    with_keys = ApiSettings(relay_enabled=False, keys=[SecretStr("k1")])
    limiter = FakeLimiter(budget=2)
    refused = await admit(with_keys, limiter, "wrong", "10.0.0.1", "ws")
    assert refused is not None
    assert refused.status == 401  # counted against its client IP, then refused
    assert await admit(with_keys, limiter, "k1", "10.0.0.1", "ws") is None
    limited = await admit(with_keys, limiter, "k1", "10.0.0.1", "ws")
    assert limited is not None
    assert limited.status == 429
    open_settings = ApiSettings(relay_enabled=False)
    assert await admit(open_settings, None, None, "10.0.0.2", "http") is None
    await admit(open_settings, limiter, "anything", "10.0.0.2", "ws")
    # per key digest with a valid key, per client IP without one or with auth off
    assert limiter.identities == ["10.0.0.1", key_identity("k1"), key_identity("k1"), "10.0.0.2"]


def test_iso_timestamps_always_have_four_digit_years() -> None:
    from datetime import UTC, datetime

    from common.clock import iso_ms

    assert iso_ms(datetime(167, 5, 10, 19, 28, 1, 123456, tzinfo=UTC)) == "0167-05-10T19:28:01.123Z"
    assert iso_ms(datetime(2025, 10, 2, 14, 30, 1, 5000, tzinfo=UTC)) == "2025-10-02T14:30:01.005Z"


async def test_anomalies_with_an_out_of_range_until_is_a_422_not_a_500() -> None:
    client, _ = client_for()
    async with client:
        resp = await client.get("/api/v1/anomalies", params={"until": "0001-01-01T00:00:00"})
    assert resp.status_code == 422
    assert resp.json()["error"]["message"].startswith("until:")


def route_labels() -> set[str]:
    return {
        sample.labels["route"]
        for metric in REGISTRY.collect()
        if metric.name == "api_requests"
        for sample in metric.samples
    }


async def test_answers_without_a_route_share_one_label_whatever_their_status() -> None:
    client, _ = client_for()
    tokens = [f"zq{i}x{time.monotonic_ns()}" for i in range(5)]
    before = count("<unmatched>", 307)
    async with client:
        for token in tokens:
            # redirect_slashes: a 307 to the path without the slash, answered by no route
            resp = await client.get(f"/api/v1/bars/{token}/", follow_redirects=False)
            assert resp.status_code == 307
        assert (await client.get("/openapi.json")).status_code == 200
        assert (await client.get("/docs")).status_code == 200
        assert (await client.get("/docs/")).status_code == 307  # FastAPI's pages too: only the exact paths
    assert count("<unmatched>", 307) - before == len(tokens) + 1
    labels = route_labels()
    assert not [label for label in labels if any(token in label for token in tokens)]
    assert {"/openapi.json", "/docs"} <= labels  # framework routes keep their own path
    assert "/docs/" not in labels


async def test_a_websocket_miss_reloads_the_set_at_most_once_per_interval_and_survives_a_failed_reload() -> None:
    store = FlakyStore({"SYNTH"})
    store.up = True
    tickers = TickerDirectory(store, ttl_s=3600, miss_refresh_s=0.0)
    await tickers.refresh()
    store.names.add("NEWCO")
    assert "NEWCO" in await tickers.refreshed_on_miss()
    assert store.queries == 2
    tickers.miss_refresh_s = 3600
    store.names.add("LATER")
    assert "LATER" not in await tickers.refreshed_on_miss(), "within miss_refresh_s: the cached set, no query"
    assert store.queries == 2
    tickers.miss_refresh_s = 0.0
    store.up = False
    assert await tickers.refreshed_on_miss() == frozenset({"SYNTH", "NEWCO"}), "a failed reload: the cached set"
    assert store.queries == 3
