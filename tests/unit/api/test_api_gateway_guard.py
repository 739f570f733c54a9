"""Audit fixes of the gateway's guard and error paths: root path, unauthenticated rate limit, 500s with request
ids and CORS, exposed CORS headers, key digests as limiter identities, raw ticker length on the fast routes,
OpenAPI security, and a Redis outage on ``/quote``.

Same in-process harness as ``test_api_middleware`` (the real app over ``httpx.ASGITransport``, fakes for the
database and Redis).
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from pydantic import SecretStr
from redis.exceptions import ConnectionError as RedisConnectionError

from api import auth
from api.cache import MarketCache
from api.main import create_app
from api.middleware import GatewayMiddleware
from api.settings import ApiSettings
from contracts.tick import MAX_TICKER_CHARS
from tests.unit.api.test_api_middleware import FakeLimiter, client_for, count

ORIGIN = "https://app.example"


async def test_with_a_root_path_api_keys_and_rate_limits_still_apply() -> None:
    # uvicorn --root-path /md: scope["path"] is "/md/api/v1/...", the routes match it without the root path
    limiter = FakeLimiter(budget=3)
    client, _ = client_for(limiter, root_path="/md", keys=[SecretStr("k1")])
    before = count("/api/v1/quote/{ticker}", 401)
    async with client:
        missing = [
            (await client.get("/md/api/v1/tickers")).status_code,
            (await client.get("/md/api/v1/quote/SYNTH")).status_code,
        ]
        ok = await client.get("/md/api/v1/quote/SYNTH", headers={"X-API-Key": "k1"})
        limited = await client.get("/md/api/v1/quote/SYNTH", headers={"X-API-Key": "k1"})
        health = await client.get("/md/health")
    assert missing == [401, 401]
    assert ok.status_code == 200
    assert ok.json()["data"]["ticker"] == "SYNTH"
    assert limited.status_code == 429
    assert health.status_code == 200
    assert count("/api/v1/quote/{ticker}", 401) - before == 1  # the template, not the prefixed path


async def test_requests_without_a_valid_key_are_rate_limited_by_client_ip() -> None:
    limiter = FakeLimiter(budget=2)
    client, _ = client_for(limiter, keys=[SecretStr("k1")])
    async with client:
        codes = [
            (await client.get("/api/v1/quote/SYNTH")).status_code,
            (await client.get("/api/v1/quote/SYNTH", headers={"X-API-Key": "guess"})).status_code,
        ]
        refused = await client.get("/api/v1/quote/SYNTH", headers={"X-API-Key": "guess2"})
    assert codes == [401, 401]
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "7"
    assert limiter.identities == ["10.1.2.3"] * 3


async def test_the_limiter_never_sees_a_key_only_its_digest() -> None:
    limiter = FakeLimiter(budget=10)
    client, _ = client_for(limiter, keys=[SecretStr("k1-secret"), SecretStr("k2-secret")])
    async with client:
        await client.get("/api/v1/quote/SYNTH", headers={"X-API-Key": "k1-secret"})
        await client.get("/api/v1/quote/SYNTH", headers={"Authorization": "Bearer k2-secret"})
        await client.get("/api/v1/quote/SYNTH", params={"api_key": "k1-secret"})
    assert not any("secret" in identity for identity in limiter.identities)
    digest = auth.key_identity  # type: ignore[attr-defined,unused-ignore]  # absent before the fix
    assert limiter.identities == [digest("k1-secret"), digest("k2-secret"), digest("k1-secret")]
    assert digest("k1-secret").startswith("k:")
    assert len(digest("k1-secret")) == 18


def _failing_store_client(**overrides: Any) -> Any:
    client, state = client_for(fast_routes=False, **overrides)

    async def boom(ticker: str) -> None:
        raise RuntimeError("simulated bug")

    state.store.latest_tick = boom  # type: ignore[method-assign]  # TECH is known and not in Redis: the store is asked
    return client


async def test_an_unhandled_error_is_a_500_envelope_with_the_request_id_and_logged_with_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = _failing_store_client()
    with caplog.at_level(logging.ERROR, logger="api.middleware"):
        async with client:
            resp = await client.get("/api/v1/quote/TECH", headers={"X-Request-ID": "rid-500"})
    assert resp.status_code == 500
    assert resp.headers["x-request-id"] == "rid-500"
    assert resp.json() == {
        "success": False,
        "error": {"code": "internal_error", "message": "internal error; see the gateway log for this request id"},
    }
    records = [r for r in caplog.records if r.name == "api.middleware" and r.exc_info]
    assert len(records) == 1
    assert records[0].request_id == "rid-500"  # type: ignore[attr-defined]


async def test_a_500_carries_the_cors_headers() -> None:
    client = _failing_store_client(cors_origins=[ORIGIN])
    async with client:
        resp = await client.get("/api/v1/quote/TECH", headers={"Origin": ORIGIN})
    assert resp.status_code == 500
    assert resp.headers["access-control-allow-origin"] == ORIGIN
    assert resp.headers["x-request-id"]


async def test_an_error_after_the_response_started_is_logged_once_and_not_re_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Re-raised, Starlette's handler and uvicorn logged it again (three tracebacks for one error); the server
    closes a connection whose response the app left incomplete, so the client still learns of it."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise RuntimeError("mid-stream")

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    scope = {"type": "http", "method": "GET", "path": "/stream", "headers": [], "app": object()}
    with caplog.at_level(logging.ERROR):
        await GatewayMiddleware(app)(scope, receive, send)
    assert [m["type"] for m in sent] == ["http.response.start"]  # no second start, no body: incomplete
    logged = [r for r in caplog.records if r.exc_info]
    assert [r.name for r in logged] == ["api.middleware"]
    assert "mid-stream" in str(logged[0].exc_info[1])  # type: ignore[index]


async def test_cors_exposes_retry_after_and_the_request_id() -> None:
    limiter = FakeLimiter(budget=0)
    client, _ = client_for(limiter, cors_origins=[ORIGIN])
    async with client:
        resp = await client.get("/api/v1/quote/SYNTH", headers={"Origin": ORIGIN})
    assert resp.status_code == 429
    exposed = {h.strip().lower() for h in resp.headers["access-control-expose-headers"].split(",")}
    assert {"retry-after", "x-request-id", "www-authenticate"} <= exposed


@pytest.mark.parametrize("fast", [True, False])
async def test_a_blank_padded_ticker_longer_than_the_limit_is_a_422_on_both_routes(fast: bool) -> None:
    padded = " " * (MAX_TICKER_CHARS - 2) + "SYNTH"
    client, _ = client_for(fast_routes=fast)
    async with client:
        quote = await client.get("/api/v1/quote/" + padded)
        latest = await client.get("/api/v1/latest/" + padded)
        fits = await client.get("/api/v1/quote/" + " " * (MAX_TICKER_CHARS - 5) + "SYNTH")
    assert quote.status_code == 422
    assert quote.json()["error"]["message"].startswith(f"ticker: String should have at most {MAX_TICKER_CHARS}")
    assert latest.status_code == 422
    assert latest.json()["error"]["message"].startswith(f"symbol: String should have at most {MAX_TICKER_CHARS}")
    assert fits.status_code == 200


class DownRedis:
    async def mget(self, keys: list[str]) -> list[bytes | None]:
        raise RedisConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused.")


@pytest.mark.parametrize("fast", [True, False])
async def test_redis_down_and_nothing_archived_is_a_503_not_a_404(fast: bool) -> None:
    client, state = client_for(fast_routes=fast)
    async with client:
        missing = await client.get("/api/v1/quote/TECH")  # Redis up, no tick anywhere: still a 404
        state.cache = MarketCache(DownRedis())  # type: ignore[arg-type]
        quote = await client.get("/api/v1/quote/SYNTH")
        latest = await client.get("/api/v1/latest/SYNTH")
    assert missing.status_code == 404
    for resp in (quote, latest):
        assert resp.status_code == 503
        assert resp.json()["error"]["code"] == "unavailable"


def _operation(spec: dict[str, Any], path: str) -> dict[str, Any]:
    op: dict[str, Any] = spec["paths"][path]["get"]
    return op


def test_openapi_declares_the_key_schemes_and_401_429_only_on_api_routes() -> None:
    spec = create_app(ApiSettings(relay_enabled=False, keys=[SecretStr("k1")])).openapi()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["APIKeyHeader"] == {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    assert schemes["HTTPBearer"] == {"type": "http", "scheme": "bearer"}
    assert schemes["APIKeyQuery"] == {"type": "apiKey", "in": "query", "name": "api_key"}
    for path in ("/api/v1/quote/{ticker}", "/api/v1/tickers", "/api/v1/bars/{ticker}"):
        op = _operation(spec, path)
        assert {"401", "429"} <= set(op["responses"]), path
        assert op["security"] == [{"APIKeyHeader": []}, {"HTTPBearer": []}, {"APIKeyQuery": []}]
    for path in ("/health", "/ready", "/"):
        op = _operation(spec, path)
        assert not {"401", "429"} & set(op["responses"]), path
        assert "security" not in op
    assert "security" not in spec


def test_openapi_without_keys_has_no_security_and_no_401_but_still_documents_the_rate_limit() -> None:
    spec = create_app(ApiSettings(relay_enabled=False)).openapi()
    assert "securitySchemes" not in spec.get("components", {})
    assert "security" not in _operation(spec, "/api/v1/quote/{ticker}")
    assert "429" in _operation(spec, "/api/v1/quote/{ticker}")["responses"]
    assert "401" not in _operation(spec, "/api/v1/quote/{ticker}")["responses"]
    assert "429" not in _operation(spec, "/health")["responses"]


def test_openapi_without_a_rate_limit_documents_no_429() -> None:
    spec = create_app(ApiSettings(relay_enabled=False, keys=[SecretStr("k1")], rate_limit="")).openapi()
    for path in ("/api/v1/quote/{ticker}", "/api/v1/bars/{ticker}"):
        responses = set(_operation(spec, path)["responses"])
        assert "401" in responses, path
        assert "429" not in responses, path


@pytest.mark.parametrize("key", ["café", "ключ", "tab\tkey", " padded", "padded ", "nul\x00key"])
def test_a_key_no_client_could_present_alike_everywhere_is_refused_at_start_up(key: str) -> None:
    """Headers arrive as bytes (decoded as Latin-1) and ``?api_key=`` percent-decoded as UTF-8: ``ключ`` matched
    only in the query, ``café`` only as Latin-1 header bytes; control characters and outer blanks cannot be sent
    in a header. Such a key is a settings error (never echoed), not a key that silently never matches."""
    with pytest.raises(ValueError, match=r"keys: API key #2 must be printable ASCII") as err:
        ApiSettings(keys=[SecretStr("good-key"), SecretStr(key)])
    assert key.strip() not in str(err.value)
    assert ApiSettings(keys=[SecretStr("with inner blank"), SecretStr("~!#$%&'*+-.^_`|")]).auth_enabled


@pytest.mark.parametrize(
    "presented",
    [
        {"headers": [(b"x-api-key", "ключ".encode())]},
        {"headers": [(b"x-api-key", "café".encode("latin-1"))]},
        {"headers": [(b"x-api-key", b"\xff\xfe\x80")]},
        {"headers": [(b"authorization", "Bearer ключ".encode())]},
        {"headers": [(b"authorization", "Bearer\xa0k1".encode("latin-1"))]},
        {"headers": [(b"authorization", b"Bearer k1\xa0")]},  # the key plus a Latin-1 no-break space
        {"headers": [(b"authorization", b"Bearer \x85k1")]},  # ... or a next-line byte, both str.strip()ped
        {"params": {"api_key": "ключ"}},
        {"params": {"api_key": "k1\u00a0"}},
    ],
)
async def test_a_non_ascii_presented_key_is_a_401_never_a_500(presented: dict[str, Any]) -> None:
    """A presented key with non-ASCII characters (as UTF-8 or Latin-1 header bytes, percent-encoded in the query,
    around a bearer token) is an invalid key like any other: 401, limited by client IP, never a 500."""
    limiter = FakeLimiter(budget=100)
    client, _ = client_for(limiter, keys=[SecretStr("k1")])
    async with client:
        resp = await client.get("/api/v1/quote/SYNTH", **presented)
        raw = await client.get("/api/v1/quote/SYNTH?api_key=%FF%D0%BA%ED%A0%80")  # invalid UTF-8, a surrogate
        blanks = await client.get("/api/v1/quote/SYNTH", headers=[(b"authorization", b"Bearer \tk1 ")])
    assert (resp.status_code, resp.json()["error"]["code"]) == (401, "unauthorized")
    assert raw.status_code == 401
    assert blanks.status_code == 200  # HTTP's own blanks around the token are still dropped
    assert limiter.identities[:2] == ["10.1.2.3", "10.1.2.3"]  # limited by client IP, as any invalid key


@pytest.mark.parametrize(
    ("path", "parameter"),
    [
        ("/api/v1/bars/NOPE?timeframe=7m", "timeframe"),
        ("/api/v1/bars/NOPE?limit=0", "limit"),
        ("/api/v1/bars/NOPE?limit=5001", "limit"),  # above the maximum of settings, checked in the handler
        ("/api/v1/bars/NOPE?cursor=garbage", "cursor"),
        ("/api/v1/bars/NOPE?start=2025-01-02T00:00:00Z&end=2025-01-01T00:00:00Z", "start"),
        ("/api/v1/history/NOPE?limit=abc", "limit"),
        ("/api/v1/history/NOPE?cursor=garbage", "cursor"),
        ("/api/v1/ticks/NOPE?limit=10001", "limit"),
        ("/api/v1/stats/NOPE?period=9y", "period"),
        ("/api/v1/indicators/NOPE?timeframe=7m", "timeframe"),
        ("/api/v1/aggregated/NOPE?window=7m", "window"),
        ("/api/v1/anomalies?ticker=NOPE&since=2025-02-01T00:00:00Z&until=2025-01-01T00:00:00Z", "since"),
    ],
)
async def test_a_bad_parameter_is_a_422_before_the_404_of_an_unknown_ticker(path: str, parameter: str) -> None:
    """FastAPI validates the request before the handler runs; the ticker look-up (a dependency before) now runs in
    the handler after every parameter check, so the 422 naming the parameter comes whatever the ticker."""
    client, _ = client_for()
    async with client:
        resp = await client.get(path)
        unknown = await client.get(path.split("?")[0] + ("?ticker=NOPE" if "anomalies" in path else ""))
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["message"].startswith(f"{parameter}:")
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "not_found")  # valid parameters
