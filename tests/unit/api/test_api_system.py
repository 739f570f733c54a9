"""Service endpoints: ready-check messages and the endpoint list (no network)."""

from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace
from typing import Any

from api.errors import ApiError
from api.routes.system import _kafka, _timed
from api.settings import ApiSettings


def _state(admin: Any = None, ready_timeout_s: float = 1.0) -> Any:
    settings = ApiSettings(relay_enabled=False, ready_timeout_s=ready_timeout_s)
    return SimpleNamespace(settings=settings, admin=admin, kafka_probe=None)


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


async def test_concurrent_ready_checks_share_one_kafka_probe_thread_while_kafka_hangs() -> None:
    """The Kafka check is a blocking metadata call in a thread that outlives the check's timeout: one thread per
    /ready held the event loop's default executor (min(32, CPUs + 4) threads) while Kafka hung, so other work
    handed to it waited. Concurrent checks now wait on the one probe in flight; the next probe starts after it."""
    settings = ApiSettings(relay_enabled=False)
    release = threading.Event()
    lock = threading.Lock()
    calls = 0

    class HangingAdmin:
        def list_topics(self, timeout: float) -> Any:
            nonlocal calls
            with lock:
                calls += 1
            release.wait(10)  # a broker that does not answer (librdkafka's own timeout ignored here)
            return SimpleNamespace(topics={settings.topic_ticks: object(), settings.topic_bars: object()})

    state = _state(HangingAdmin(), ready_timeout_s=0.2)
    try:
        results = await asyncio.gather(*(_kafka(state) for _ in range(40)))
        assert results == ["down: timed out"] * 40
        assert calls == 1
        assert await asyncio.wait_for(asyncio.to_thread(lambda: "free"), 2.0) == "free"  # threads left for others
        assert await _kafka(state) == "down: timed out"  # still the same probe
        assert calls == 1
    finally:
        release.set()
    await asyncio.wait_for(asyncio.shield(state.kafka_probe), 2.0)  # the hung probe ends
    assert await _kafka(state) == "ok"  # a new probe, once the last one is over
    assert calls == 2
