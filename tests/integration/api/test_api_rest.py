"""REST routes against real PostgreSQL/Redis/Kafka with known data: shapes, values, errors, paging."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from common.clock import to_ms
from contracts.bar import Indicators
from tests.ticks import make_tick

from .conftest import LiveApi, Seeder, make_bar

pytestmark = pytest.mark.integration


def get(api: LiveApi, path: str, **kw: Any) -> httpx.Response:
    return httpx.get(api.base_url + path, timeout=10, **kw)


def assert_error(resp: httpx.Response, status: int, code: str, mentions: str | None = None) -> None:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["success"] is False
    assert body["error"]["code"] == code
    if mentions is not None:
        assert mentions in body["error"]["message"]


@pytest.fixture
def api(seed: Seeder, start_api: Callable[..., LiveApi]) -> LiveApi:
    seed.universe()
    return start_api()


def test_tickers_and_symbols(api: LiveApi) -> None:
    body = get(api, "/api/v1/tickers").json()
    assert body["success"] is True
    first = body["data"][1]
    assert first["ticker"] == "SYNTH"
    assert first["initial_price"] == "150.00"
    assert first["name"] == "Synthetic Corp"
    assert first["sector"] == "Technology"
    assert first["created_at"].endswith("Z")
    assert get(api, "/api/v1/symbols").json()["data"] == ["FINANCE", "SYNTH", "TECH"]


def test_quote_from_redis_then_database(api: LiveApi, seed: Seeder) -> None:
    t0 = datetime(2025, 10, 2, 14, 30, 1, 123000, tzinfo=UTC)
    seed.ticks([make_tick("TECH", 7, to_ms(t0), 321.5)])
    body = get(api, "/api/v1/quote/TECH").json()  # no Redis value: database fallback
    assert body["data"] == {
        "time": "2025-10-02T14:30:01.123Z",
        "ticker": "TECH",
        "price": "321.50",
        "volume": 100,
        "bid": "321.49",
        "ask": "321.51",
        "bid_size": 300,
        "ask_size": 500,
        "seq": 7,
    }
    seed.latest(make_tick("TECH", 8, to_ms(t0) + 5, 322.0, volume=12500))
    data = get(api, "/api/v1/quote/tech").json()["data"]  # lower case accepted
    assert (data["price"], data["volume"], data["seq"], data["time"]) == (
        "322.00",
        12500,
        8,
        "2025-10-02T14:30:01.128Z",
    )
    latest = get(api, "/api/v1/latest/TECH").json()["data"]
    assert latest["symbol"] == "TECH"
    assert latest["price"] == "322.00"


def test_quote_errors(api: LiveApi) -> None:
    assert_error(get(api, "/api/v1/quote/NOPE"), 404, "not_found", "NOPE")
    assert_error(get(api, "/api/v1/quote/bad%20ticker!"), 404, "not_found")
    assert_error(get(api, "/api/v1/quote/SYNTH"), 404, "not_found", "no tick")  # known, never traded


def test_history_range_order_and_cursor_pages(api: LiveApi, seed: Seeder) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    base = now - timedelta(minutes=30)
    ticks = [make_tick("SYNTH", i, to_ms(base) + i * 1000 // 2, 150 + (i % 7) * 0.01) for i in range(25)]
    old = make_tick("SYNTH", 99, to_ms(now - timedelta(hours=2)), 149.0)
    seed.ticks([*ticks, old])
    body = get(api, "/api/v1/history/SYNTH").json()  # default: last hour
    assert [d["seq"] for d in body["data"]] == list(range(25))
    assert body["meta"]["count"] == 25
    assert body["meta"]["next_cursor"] is None
    assert body["meta"]["prev_cursor"] is None
    # with start: oldest first, paged forward (newest-first paging is in test_api_paging.py)
    seen: list[int] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 10, "start": base.isoformat()}
        if cursor:
            params["cursor"] = cursor
        page = get(api, "/api/v1/history/SYNTH", params=params).json()
        seen += [d["seq"] for d in page["data"]]
        cursor = page["meta"]["next_cursor"]
        pages += 1
        if cursor is None:
            break
    assert seen == list(range(25))
    assert pages == 3
    # explicit range includes the old tick only
    start = (now - timedelta(hours=3)).isoformat()
    end = (now - timedelta(hours=1)).isoformat()
    body = get(api, "/api/v1/history/SYNTH", params={"start": start, "end": end}).json()
    assert [d["seq"] for d in body["data"]] == [99]
    recent = get(api, "/api/v1/ticks/SYNTH", params={"limit": 3}).json()["data"]
    assert [d["seq"] for d in recent] == [22, 23, 24]


@pytest.mark.parametrize(
    ("params", "code", "mention"),
    [
        ({"limit": 10001}, "invalid_parameter", "limit"),
        ({"limit": 0}, "invalid_parameter", "limit"),
        ({"limit": "many"}, "invalid_parameter", "limit"),
        ({"start": "yesterday"}, "invalid_parameter", "start"),
        ({"end": "2025-13-45T00:00:00Z"}, "invalid_parameter", "end"),
        ({"start": "2025-10-02T15:00:00Z", "end": "2025-10-02T14:00:00Z"}, "invalid_range", "start"),
        ({"start": "2020-01-01T00:00:00Z", "end": "2025-01-01T00:00:00Z"}, "range_too_large", "range"),
        ({"cursor": "garbage!"}, "invalid_parameter", "cursor"),
    ],
)
def test_history_bad_input_is_422_naming_the_parameter(
    api: LiveApi, params: dict[str, Any], code: str, mention: str
) -> None:
    assert_error(get(api, "/api/v1/history/SYNTH", params=params), 422, code, mention)


def test_bars_final_and_live(api: LiveApi, seed: Seeder) -> None:
    now = datetime.now(UTC)
    minute = to_ms(now) // 60_000 * 60_000
    finals = [make_bar("SYNTH", "1m", minute - (5 - i) * 60_000, 60_000, 150, 151, 149, 150.5) for i in range(5)]
    seed.bars(finals)
    live = make_bar("SYNTH", "1m", minute, 60_000, 150.5, 152.25, 150.0, 152.0, final=False)
    seed.live_bar(live)
    body = get(api, "/api/v1/bars/SYNTH", params={"timeframe": "1m"}).json()
    assert body["meta"]["count"] == 6
    assert body["meta"]["live_included"] is True
    assert [b["final"] for b in body["data"]] == [True] * 5 + [False]
    first = body["data"][0]
    assert {k: first[k] for k in ("ticker", "timeframe", "open", "high", "low", "close", "volume")} == {
        "ticker": "SYNTH",
        "timeframe": "1m",
        "open": "150.00",
        "high": "151.00",
        "low": "149.00",
        "close": "150.50",
        "volume": 1000,
    }
    assert body["data"][-1]["high"] == "152.25"
    times = [b["time"] for b in body["data"]]
    assert times == sorted(times)
    # a range ending in the past excludes the live bar
    end = (now - timedelta(minutes=3)).isoformat()
    past = get(api, "/api/v1/bars/SYNTH", params={"end": end}).json()
    assert past["meta"]["live_included"] is False
    assert all(b["final"] for b in past["data"])
    # paging from start: 5 per page walks the finals, then the live bar
    first = (now - timedelta(minutes=10)).isoformat()
    page = get(api, "/api/v1/bars/SYNTH", params={"limit": 5, "start": first}).json()
    assert page["meta"]["count"] == 5
    assert page["meta"]["next_cursor"]
    assert page["meta"]["prev_cursor"] is None
    rest = get(
        api, "/api/v1/bars/SYNTH", params={"limit": 5, "start": first, "cursor": page["meta"]["next_cursor"]}
    ).json()
    assert [b["final"] for b in rest["data"]] == [False]
    # without start: the newest 5, the live bar counting as one
    newest = get(api, "/api/v1/bars/SYNTH", params={"limit": 5}).json()
    assert [b["final"] for b in newest["data"]] == [True] * 4 + [False]
    assert newest["data"][0]["time"] == times[1]
    assert newest["meta"]["next_cursor"] is None
    older = get(api, "/api/v1/bars/SYNTH", params={"limit": 5, "cursor": newest["meta"]["prev_cursor"]}).json()
    assert [b["time"] for b in older["data"]] == times[:1]
    assert older["meta"]["prev_cursor"] is None


def test_bars_errors(api: LiveApi) -> None:
    assert_error(get(api, "/api/v1/bars/SYNTH", params={"timeframe": "2m"}), 422, "invalid_parameter", "timeframe")
    assert_error(get(api, "/api/v1/bars/SYNTH", params={"limit": 5001}), 422, "invalid_parameter", "limit")
    assert_error(
        get(api, "/api/v1/bars/SYNTH", params={"timeframe": "1m", "start": "1990-01-01T00:00:00Z"}),
        422,
        "range_too_large",
    )
    assert_error(get(api, "/api/v1/bars/ZZZ"), 404, "not_found")


def test_stats_from_ticks(api: LiveApi, seed: Seeder) -> None:
    now = datetime.now(UTC)
    prices = [150.00, 151.00, 149.00, 152.00]
    seed.ticks([make_tick("SYNTH", i, to_ms(now) - 60_000 + i * 1000, p, volume=100) for i, p in enumerate(prices)])
    data = get(api, "/api/v1/stats/SYNTH", params={"period": "1h"}).json()["data"]
    assert data["tick_count"] == 4
    assert data["total_volume"] == 400
    assert (data["open"], data["close"], data["low"], data["high"]) == ("150.00", "152.00", "149.00", "152.00")
    assert data["avg_price"] == "150.50"
    assert data["change"] == 2.0
    assert data["change_pct"] == 1.33
    assert data["volatility"] == "1.29"  # sample standard deviation of the four prices
    assert data["period"] == "1h"
    empty = get(api, "/api/v1/stats/TECH", params={"period": "7d"}).json()["data"]
    assert empty["tick_count"] == 0
    assert empty["open"] is None
    assert empty["change"] is None
    assert_error(get(api, "/api/v1/stats/SYNTH", params={"period": "2y"}), 422, "invalid_parameter", "period")


def test_indicators_and_aggregated(api: LiveApi, seed: Seeder) -> None:
    assert_error(get(api, "/api/v1/indicators/SYNTH"), 404, "not_found")
    start = to_ms(datetime.now(UTC)) // 60_000 * 60_000 - 60_000
    in_db = make_bar(
        "SYNTH",
        "5m",
        start // 300_000 * 300_000,
        300_000,
        150,
        151,
        149,
        150.25,
        indicators=Indicators(sma_20=150.1, rsi_14=55.5, macd=0.25),
    )
    seed.bars([in_db])
    data = get(api, "/api/v1/indicators/SYNTH", params={"timeframe": "5m"}).json()["data"]
    assert (data["sma_20"], data["rsi_14"], data["macd"], data["sma_200"]) == (150.1, 55.5, 0.25, None)
    assert data["close"] == "150.25"
    cached = make_bar("SYNTH", "1m", start, 60_000, 150, 151, 149, 150.75, indicators=Indicators(sma_20=149.9))
    seed.final_bar(cached)
    data = get(api, "/api/v1/indicators/SYNTH").json()["data"]
    assert data["timeframe"] == "1m"
    assert data["sma_20"] == 149.9
    assert data["close"] == "150.75"
    agg = get(api, "/api/v1/aggregated/SYNTH", params={"window": "1min"}).json()["data"]
    assert agg["close"] == "150.75"
    assert agg["window"] == "1min"
    assert agg["symbol"] == "SYNTH"
    agg5 = get(api, "/api/v1/aggregated/SYNTH", params={"window": "5min"}).json()["data"]
    assert agg5["close"] == "150.25"
    assert_error(get(api, "/api/v1/aggregated/SYNTH", params={"window": "2min"}), 422, "invalid_parameter", "window")
    assert_error(get(api, "/api/v1/indicators/SYNTH", params={"timeframe": "x"}), 422, "invalid_parameter")


def test_service_endpoints(api: LiveApi) -> None:
    health = get(api, "/health").json()
    assert health["status"] == "healthy"
    assert health["uptime"] >= 0
    info = get(api, "/").json()
    assert info["name"]
    assert "quote" in info["endpoints"]["rest"]
    ready = get(api, "/ready")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"kafka": "ok", "redis": "ok", "database": "ok"}
    assert get(api, "/docs").status_code == 200
    assert_error(get(api, "/api/v1/nothing-here"), 404, "not_found")
    get(api, "/api/v1/quote/SYNTH")
    text = get(api, "/metrics").text
    assert 'route="/api/v1/quote/{ticker}"' in text
    assert "api_request_duration_seconds_bucket" in text
    assert "x-request-id" in get(api, "/health").headers


def test_ready_names_the_dependency_that_is_down(seed: Seeder, start_api: Callable[..., LiveApi]) -> None:
    from stack.services import free_port

    dead = f"redis://127.0.0.1:{free_port()}/0"
    api = start_api(redis_url=dead, ready_timeout_s=1.0)
    resp = get(api, "/ready")
    assert resp.status_code == 503
    body = resp.json()
    assert body["success"] is False
    assert body["checks"]["redis"].startswith("down")
    assert body["checks"]["database"] == "ok"
    assert "redis" in body["error"]["message"]


def test_api_keys(seed: Seeder, start_api: Callable[..., LiveApi]) -> None:
    seed.universe()
    api = start_api(keys=["k-one", "k-two"])
    assert_error(get(api, "/api/v1/tickers"), 401, "unauthorized")
    assert_error(get(api, "/api/v1/tickers", headers={"X-API-Key": "wrong"}), 401, "unauthorized")
    assert get(api, "/api/v1/tickers", headers={"X-API-Key": "k-one"}).status_code == 200
    assert get(api, "/api/v1/tickers", headers={"Authorization": "Bearer k-two"}).status_code == 200
    assert get(api, "/api/v1/tickers", params={"api_key": "k-one"}).status_code == 200
    assert get(api, "/health").status_code == 200  # service endpoints stay open


def test_rate_limit_is_shared_and_answers_429(seed: Seeder, start_api: Callable[..., LiveApi]) -> None:
    seed.universe()
    a = start_api(rate_limit="5/minute")
    b = start_api(rate_limit="5/minute")  # a second process shares the budget through Redis
    codes = [get(a if i % 2 else b, "/api/v1/symbols").status_code for i in range(5)]
    assert codes == [200] * 5
    resp = get(a, "/api/v1/symbols")
    assert_error(resp, 429, "rate_limited")
    assert 1 <= int(resp.headers["Retry-After"]) <= 60


def test_prefetched_rate_limit_tokens_stay_within_the_shared_budget(
    seed: Seeder, start_api: Callable[..., LiveApi]
) -> None:
    seed.universe()
    # 640/hour: each gateway takes 10 units per Redis hit (1/64 of the limit) and spends them locally. An hour,
    # not a minute: the 700 requests take ~30 s here, and a sliding minute whose boundary falls among them
    # discounts the earlier window's hits by up to half (the limit is then rightly not reached)
    a = start_api(rate_limit="640/hour")
    b = start_api(rate_limit="640/hour")
    codes = [get(a if i % 3 else b, "/api/v1/symbols").status_code for i in range(700)]
    allowed = codes.count(200)
    assert set(codes) == {200, 429}
    assert allowed <= 640, "never more than the limit"
    assert allowed >= 640 - 2 * 9, "at most chunk - 1 units stranded per gateway"
    assert codes.index(429) >= 640 - 2 * 9
