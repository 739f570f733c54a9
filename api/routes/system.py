"""Service endpoints outside ``/api/v1``: ``/`` (API info), ``/health`` (liveness), ``/ready`` (readiness)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

from fastapi import APIRouter, Response

from api import schemas
from api.deps import AppState, StateDep

router = APIRouter(tags=["service"])

ENDPOINTS: dict[str, dict[str, str]] = {
    "rest": {
        "tickers": "GET /api/v1/tickers",
        "quote": "GET /api/v1/quote/{ticker}",
        "history": "GET /api/v1/history/{ticker}?start&end&limit&cursor",
        "bars": "GET /api/v1/bars/{ticker}?timeframe=1m|5m|15m|1h|1d&start&end&limit&cursor",
        "stats": "GET /api/v1/stats/{ticker}?period=1h|1d|7d|30d",
        "indicators": "GET /api/v1/indicators/{ticker}?timeframe=",
        "latest": "GET /api/v1/latest/{symbol}",
        "ticks": "GET /api/v1/ticks/{symbol}?limit",
        "aggregated": "GET /api/v1/aggregated/{symbol}?window=1min|5min|15min",
        "symbols": "GET /api/v1/symbols",
    },
    "websocket": {
        "url": "/ws",
        "subscribe": '{"type":"subscribe","tickers":["SYNTH"]}',
        "channels": 'ticks (default), bars, indicators; tickers may be ["*"]; "batch": true for batched frames',
        "unsubscribe": '{"type":"unsubscribe","tickers":["SYNTH"]}',
        "ping": '{"type":"ping"}',
    },
    "service": {"health": "GET /health", "ready": "GET /ready", "metrics": "GET /metrics", "docs": "GET /docs"},
}


@router.get("/")
async def api_info(state: StateDep) -> schemas.ApiInfo:
    """API name, version and endpoint list."""
    return schemas.ApiInfo(
        name=state.settings.title,
        version=state.settings.version,
        description="Real-time synthetic stock market data: REST history and live WebSocket streams",
        endpoints=ENDPOINTS,
    )


@router.get("/health")
async def health(state: StateDep) -> schemas.Health:
    """Liveness: the process is up (no dependency is checked)."""
    return schemas.Health(timestamp=datetime.now(UTC), uptime=round(time.monotonic() - state.started_monotonic, 3))


@router.get("/ready", responses={503: {"model": schemas.Ready, "description": "a dependency is unreachable"}})
async def ready(state: StateDep, response: Response) -> schemas.Ready:
    """Readiness: Kafka, Redis and the database are reachable; 503 naming the ones that are not."""
    kafka, redis_ok, database = await asyncio.gather(_kafka(state), _redis(state), _database(state))
    checks = schemas.ReadyChecks(kafka=kafka, redis=redis_ok, database=database)
    down = [name for name, value in checks.model_dump().items() if value != "ok"]
    if not down:
        return schemas.Ready(success=True, status="ready", checks=checks)
    response.status_code = 503
    return schemas.Ready(
        success=False,
        status="not_ready",
        checks=checks,
        error=schemas.ErrorDetail(code="not_ready", message=f"unreachable: {', '.join(down)}"),
    )


async def _timed(state: AppState, coro: object) -> str:
    try:
        await asyncio.wait_for(coro, state.settings.ready_timeout_s)  # type: ignore[arg-type]
    except TimeoutError:
        return "down: timed out"
    except Exception as err:  # any failure means "not ready"; the reason is reported
        return f"down: {err}" if str(err) else f"down: {type(err).__name__}"
    return "ok"


async def _kafka(state: AppState) -> str:
    if state.admin is None:
        return "down: no client"
    admin = state.admin
    topics = [state.settings.topic_ticks, state.settings.topic_bars]

    def probe() -> None:
        meta = admin.list_topics(timeout=state.settings.ready_timeout_s)
        missing = [t for t in topics if t not in meta.topics]
        if missing:
            msg = f"topics missing: {', '.join(missing)}"
            raise LookupError(msg)

    return await _timed(state, asyncio.to_thread(probe))


async def _redis(state: AppState) -> str:
    return await _timed(state, state.redis.ping())


async def _database(state: AppState) -> str:
    return await _timed(state, state.store.ping())
