"""Service endpoints outside ``/api/v1``: ``/`` (API info), ``/health`` (liveness), ``/ready`` (readiness)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request, Response

from api import schemas
from api.deps import API_PREFIX, AppState, StateDep

router = APIRouter(tags=["service"])

#: the WebSocket protocol and service endpoints; the REST part is built from the app's routes (:func:`rest_endpoints`)
ENDPOINTS: dict[str, dict[str, str]] = {
    "websocket": {
        "url": "/ws",
        "subscribe": '{"type":"subscribe","tickers":["SYNTH"]}',
        "channels": (
            'ticks (default), bars, indicators ("timeframes": ["1m", ...]), anomalies; tickers may be ["*"];'
            ' "batch": true for batched frames'
        ),
        "unsubscribe": '{"type":"unsubscribe","tickers":["SYNTH"]}',
        "ping": '{"type":"ping"}',
    },
    "service": {"health": "GET /health", "ready": "GET /ready", "metrics": "GET /metrics", "docs": "GET /docs"},
}


def rest_endpoints(openapi: dict[str, Any]) -> dict[str, str]:
    """``{"history": "GET /api/v1/history/{ticker}?start&end&limit&cursor", ...}`` of the ``/api/v1`` paths.

    Built from the OpenAPI document (FastAPI's included routers do not expose their routes), so the list
    cannot fall behind the routes.
    """
    found: dict[str, str] = {}
    for path, operations in openapi.get("paths", {}).items():
        if not path.startswith(API_PREFIX + "/"):
            continue
        name = path[len(API_PREFIX) + 1 :].split("/")[0]
        for method, operation in operations.items():
            query = "&".join(_query(p) for p in operation.get("parameters", []) if p.get("in") == "query")
            found[name] = f"{method.upper()} {path}" + (f"?{query}" if query else "")
    return found


def _query(parameter: dict[str, Any]) -> str:
    """``timeframe=1m|5m|15m|1h|1d`` for an enumerated parameter, else just its name."""
    values = parameter.get("schema", {}).get("enum")
    return f"{parameter['name']}={'|'.join(map(str, values))}" if values else parameter["name"]


@router.get("/")
async def api_info(state: StateDep, request: Request) -> schemas.ApiInfo:
    """API name, version and endpoint list."""
    return schemas.ApiInfo(
        name=state.settings.title,
        version=state.settings.version,
        description="Real-time synthetic stock market data: REST history and live WebSocket streams",
        endpoints={"rest": rest_endpoints(request.app.openapi()), **ENDPOINTS},
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
    """The Kafka check: the topics exist, per a metadata request in a thread (confluent-kafka blocks).

    One probe per process at a time: the thread outlives a check that timed out (the call returns after its own
    timeout, later still if the broker hangs), so a thread per ``/ready`` let concurrent checks against a hung
    broker take every thread of the loop's default executor. A check while a probe runs waits for that one
    (``shield``: its timeout never cancels the shared probe); a probe that ended is never reused.
    """
    if state.admin is None:
        return "down: no client"
    probe = state.kafka_probe
    if probe is None or probe.done():
        admin = state.admin
        topics = [state.settings.topic_ticks, state.settings.topic_bars]

        def list_topics() -> None:
            meta = admin.list_topics(timeout=state.settings.ready_timeout_s)
            missing = [t for t in topics if t not in meta.topics]
            if missing:
                msg = f"topics missing: {', '.join(missing)}"
                raise LookupError(msg)

        probe = state.kafka_probe = asyncio.ensure_future(asyncio.to_thread(list_topics))
        probe.add_done_callback(_retrieve)
    return await _timed(state, asyncio.shield(probe))


def _retrieve(probe: asyncio.Future[None]) -> None:
    """Mark a probe's error as seen: every check waiting on it may have timed out (no "never retrieved" log)."""
    if not probe.cancelled():
        probe.exception()


async def _redis(state: AppState) -> str:
    return await _timed(state, state.redis.ping())


async def _database(state: AppState) -> str:
    return await _timed(state, state.store.ping())
