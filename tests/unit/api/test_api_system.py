"""Service endpoints: ready-check messages and the endpoint list (no network)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from api.errors import ApiError
from api.routes.system import _kafka, _timed
from api.settings import ApiSettings


def _state(admin: Any = None) -> Any:
    return SimpleNamespace(settings=ApiSettings(relay_enabled=False, ready_timeout_s=1.0), admin=admin)


async def test_ready_checks_report_the_error_text_not_only_its_type() -> None:
    async def fails() -> None:
        raise ApiError(503, "unavailable", "database is unavailable, try again shortly")

    async def bare() -> None:
        raise RuntimeError

    assert await _timed(_state(), fails()) == "down: database is unavailable, try again shortly"
    assert await _timed(_state(), bare()) == "down: RuntimeError"


async def test_kafka_ready_check_names_the_missing_topics() -> None:
    settings = ApiSettings(relay_enabled=False)

    class Admin:
        def list_topics(self, timeout: float) -> Any:
            return SimpleNamespace(topics={settings.topic_ticks: object()})

    assert await _kafka(_state(Admin())) == f"down: topics missing: {settings.topic_bars}"


def test_rest_endpoint_list_is_built_from_the_routes() -> None:
    from api.main import create_app
    from api.routes.system import rest_endpoints

    rest = rest_endpoints(create_app(ApiSettings(relay_enabled=False)).openapi())
    assert rest["anomalies"].startswith("GET /api/v1/anomalies?")
    assert rest["aggregated"] == "GET /api/v1/aggregated/{symbol}?window=1min|5min|15min|1h|1d"
    assert rest["bars"] == "GET /api/v1/bars/{ticker}?timeframe=1m|5m|15m|1h|1d&start&end&limit&cursor"
    assert {"tickers", "quote", "latest", "history", "ticks", "stats", "indicators", "symbols"} <= rest.keys()
