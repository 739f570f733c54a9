"""REST routers, one module per resource; :data:`ROUTERS` lists those mounted under ``/api/v1``."""

from __future__ import annotations

from fastapi import APIRouter

from api.routes import anomalies, bars, history, indicators, quotes, stats, tickers

ROUTERS: tuple[APIRouter, ...] = (
    tickers.router,
    quotes.router,
    history.router,
    bars.router,
    stats.router,
    indicators.router,
    anomalies.router,
)
