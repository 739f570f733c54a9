"""The gateway application: :func:`create_app` (factory + lifespan) and the module-level ``app``.

Run with ``uvicorn api.main:app`` or ``python -m api`` (workers, port and WebSocket options from settings).
The lifespan opens the PostgreSQL pool, the Redis client, the Kafka admin client and the relay thread, and
closes them in reverse order; a dependency that is down at start-up does not stop the process (``/ready``
reports it and the clients reconnect).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as aioredis
from confluent_kafka.admin import AdminClient
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from psycopg_pool import AsyncConnectionPool

from api import metrics, ws
from api.cache import MarketCache, TickerDirectory
from api.deps import API_PREFIX, AppState
from api.errors import install_error_handlers
from api.fastpath import fast_routes
from api.hub import Hub
from api.middleware import GatewayMiddleware
from api.observability import configure_logging
from api.ratelimit import RateLimiter
from api.relay import KafkaRelay
from api.routes import ROUTERS, system
from api.schemas import ErrorResponse
from api.settings import ApiSettings
from api.store import Store
from common.collector import tune_collector

log = logging.getLogger("api")


def build_hub(settings: ApiSettings) -> Hub:
    """The fan-out hub configured from settings."""
    return Hub(
        queue_bound=settings.ws_send_queue,
        lag_grace_s=settings.ws_lag_grace_s,
        max_dropped=settings.ws_max_dropped,
        max_clients=settings.ws_max_clients,
        max_subscriptions=settings.ws_max_subscriptions,
        heartbeat_s=settings.ws_heartbeat_s,
        batch_interval_s=settings.ws_batch_interval_ms / 1000.0,
    )


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Open every client, start the relay; close everything on shutdown."""
    settings: ApiSettings = app.state.settings
    configure_logging(settings.log_level)
    pool = AsyncConnectionPool(
        settings.database_url.get_secret_value(),
        min_size=settings.db_pool_min,
        max_size=settings.db_pool_max,
        kwargs={"autocommit": True, "options": f"-c statement_timeout={settings.db_statement_timeout_ms}"},
        open=False,
        timeout=settings.ready_timeout_s * 2,
    )
    await pool.open(wait=False)
    redis_client = aioredis.Redis.from_url(
        settings.redis_url, socket_timeout=settings.ready_timeout_s, socket_connect_timeout=settings.ready_timeout_s
    )
    store = Store(pool)
    hub = build_hub(settings)
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers, "client.id": "md-api-admin"})
    limiter = (
        RateLimiter(
            settings.redis_url,
            settings.rate_limit,
            settings.rate_limit_ws_connect,
            settings.rate_limit_prefetch,
            timeout_s=settings.ready_timeout_s,
        )
        if settings.rate_limit or settings.rate_limit_ws_connect
        else None
    )
    relay = KafkaRelay(settings, hub, asyncio.get_running_loop()) if settings.relay_enabled else None
    state = AppState(
        settings=settings,
        pool=pool,
        redis=redis_client,
        store=store,
        cache=MarketCache(redis_client),
        tickers=TickerDirectory(store, settings.ticker_cache_s, settings.ticker_miss_refresh_s),
        hub=hub,
        relay=relay,
        admin=admin,
        limiter=limiter,
        started_monotonic=time.monotonic(),
    )
    app.state.md = state
    try:
        await state.tickers.refresh()
    except Exception as err:  # database down at start-up: /ready says so, look-ups retry
        log.warning("ticker list unavailable at start-up: %r", err)
    hub.start()
    if relay is not None:
        relay.start()
    metrics.mark_worker_started(settings.prometheus_multiproc_dir)
    # long-lived objects out of the collector's way, short-lived ones left to die young (common.collector)
    tune_collector(settings.gc_threshold)
    log.info("gateway started", extra={"port": settings.port, "auth": settings.auth_enabled})
    try:
        yield
    finally:
        if relay is not None:
            await asyncio.to_thread(relay.stop)
        await hub.stop()
        metrics.mark_worker_stopped(settings.prometheus_multiproc_dir)
        state.kafka_probe = None  # a failed probe's traceback holds the admin client too
        state.admin = None  # drop the last reference so librdkafka destroys the handle now
        del admin
        await redis_client.aclose()  # type: ignore[attr-defined]  # types-redis predates redis 5
        await pool.close()
        log.info("gateway stopped")


def create_app(settings: ApiSettings | None = None) -> FastAPI:
    """A gateway application configured by ``settings`` (read from the environment by default)."""
    settings = settings or ApiSettings()
    app = FastAPI(
        title=settings.title,
        version=settings.version,
        description="REST and WebSocket access to the synthetic market: ticks, bars, statistics, indicators.",
        lifespan=lifespan,
        # FastAPI's native OpenTelemetry off: metrics are Prometheus (GatewayMiddleware); its per-request
        # provider checks were ~3 % of a /quote in the profile
        telemetry={"tracing": False, "metrics": False, "logs": False},
        responses={
            422: {"model": ErrorResponse, "description": "a parameter is invalid (the message names it)"},
            503: {"model": ErrorResponse, "description": "a dependency is unavailable"},
        },
    )
    app.state.settings = settings
    install_error_handlers(app)
    app.include_router(system.router)
    guarded = guarded_responses(settings)
    for router in ROUTERS:
        # auth and rate limit: GatewayMiddleware, for every /api/v1 path; documented here, on these routes only
        app.include_router(router, responses=guarded)
    app.include_router(ws.router)
    app.include_router(metrics.router)
    app.add_middleware(
        GatewayMiddleware,
        fast_routes=fast_routes() if settings.fast_routes else None,
        access_log_enabled=settings.access_log,
    )
    if settings.cors_origins:  # outside the gateway middleware: its 401/429 answers get CORS headers too
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET"],
            allow_headers=["X-API-Key", "Authorization", "X-Request-ID"],
            expose_headers=["Retry-After", "X-Request-ID", "WWW-Authenticate"],
        )
    if settings.auth_enabled:
        document_security(app)
    return app


#: the answers of GatewayMiddleware's guard, which only ``/api/v1`` paths pass through
GUARDED_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "missing or invalid API key"},
    429: {"model": ErrorResponse, "description": "rate limited (see Retry-After)"},
}


def guarded_responses(settings: ApiSettings) -> dict[int | str, dict[str, Any]]:
    """The guard's answers this gateway can give: 401 only with ``API_KEYS`` set, 429 only with ``API_RATE_LIMIT``
    set (a client generated from the document should not handle answers that never come)."""
    can = {401: settings.auth_enabled, 429: bool(settings.rate_limit)}
    return {status: response for status, response in GUARDED_RESPONSES.items() if can[int(status)]}


#: the three ways to present a key (:func:`api.auth.credential_from`), named as FastAPI's security classes
SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    "APIKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    "HTTPBearer": {"type": "http", "scheme": "bearer"},
    "APIKeyQuery": {"type": "apiKey", "in": "query", "name": "api_key"},
}


def document_security(app: FastAPI) -> None:
    """Declare the API-key schemes in OpenAPI and require one of them on every ``/api/v1`` operation.

    Documentation only: the check stays in :class:`api.middleware.GatewayMiddleware` (FastAPI security
    dependencies would add dependency solving to every request).
    """
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()  # caches it in app.openapi_schema; completed in place below
        schema.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
        requirement: list[dict[str, list[str]]] = [{name: []} for name in SECURITY_SCHEMES]  # any one of them
        for path, operations in schema.get("paths", {}).items():
            if path.startswith(API_PREFIX + "/"):
                for operation in operations.values():
                    operation["security"] = requirement
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


app = create_app()
