"""FastAPI dependencies as ``Annotated`` aliases: settings, clients opened in the lifespan, validated inputs.

Routes declare what they need (``store: StoreDep``, ``ticker: TickerPath``) and never reach into app state.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Path, Request

from api.cache import MarketCache, TickerDirectory
from api.errors import invalid
from api.settings import ApiSettings
from api.store import Store
from common.clock import EPOCH, as_utc
from contracts.tick import MAX_TICKER_CHARS

if TYPE_CHECKING:
    import asyncio

    import redis.asyncio as aioredis
    from confluent_kafka.admin import AdminClient
    from psycopg_pool import AsyncConnectionPool

    from api.hub import Hub
    from api.ratelimit import RateLimiter
    from api.relay import KafkaRelay


#: every market-data route lives under this prefix
API_PREFIX = "/api/v1"


@dataclass
class AppState:
    """Everything the lifespan opens, held on ``app.state.md``."""

    settings: ApiSettings
    pool: AsyncConnectionPool
    redis: aioredis.Redis[bytes]
    store: Store
    cache: MarketCache
    tickers: TickerDirectory
    hub: Hub
    relay: KafkaRelay | None
    admin: AdminClient | None
    limiter: RateLimiter | None
    started_monotonic: float = 0.0
    #: the Kafka readiness probe (a blocking metadata call in a thread) while it runs: /ready checks share it
    kafka_probe: asyncio.Future[None] | None = None


def state_of(request: Request) -> AppState:
    """The state the lifespan built (plain function for code that already holds the request)."""
    state: AppState = request.app.state.md
    return state


# Dependencies are ``async def`` on purpose: FastAPI runs a plain ``def`` dependency in the thread pool, and
# those hops (four per request) were a quarter of the CPU of a ``/quote`` in the profile.
async def get_state(request: Request) -> AppState:
    """The state the lifespan built."""
    return state_of(request)


StateDep = Annotated[AppState, Depends(get_state)]


async def get_settings(state: StateDep) -> ApiSettings:
    """Gateway settings."""
    return state.settings


async def get_store(state: StateDep) -> Store:
    """PostgreSQL queries."""
    return state.store


async def get_cache(state: StateDep) -> MarketCache:
    """Redis reads."""
    return state.cache


SettingsDep = Annotated[ApiSettings, Depends(get_settings)]
StoreDep = Annotated[Store, Depends(get_store)]
CacheDep = Annotated[MarketCache, Depends(get_cache)]


async def get_tickers(state: StateDep) -> TickerDirectory:
    """The known-ticker set."""
    return state.tickers


TickersDep = Annotated[TickerDirectory, Depends(get_tickers)]


#: a ticker in the path: at most the contract's length (longer ones are a 422, shorter unknown ones a 404)
TickerInPath = Annotated[str, Path(description="ticker symbol", max_length=MAX_TICKER_CHARS, examples=["SYNTH"])]

# Routes WITH query parameters take ``TickerInPath`` and look the ticker up (``await tickers.require(ticker)``)
# after every check of their parameters. FastAPI runs a dependency before it validates the route's own query
# parameters, so a 404 raised in ``TickerPath`` answered ``/bars/NOPE?timeframe=7m`` with 404 instead of the 422
# that request validation gives first everywhere else. ``TickerPath``/``SymbolPath`` are for routes without any.


async def known_ticker(state: StateDep, ticker: TickerInPath) -> str:
    """The path's ticker, upper-cased; 404 when it is not in the universe (routes without query parameters)."""
    return await state.tickers.require(ticker)


async def known_symbol(state: StateDep, symbol: TickerInPath) -> str:
    """Seed-002 spelling of :func:`known_ticker`."""
    return await state.tickers.require(symbol)


TickerPath = Annotated[str, Depends(known_ticker)]
SymbolPath = Annotated[str, Depends(known_symbol)]

# ---- time ranges -----------------------------------------------------------------------------------------------

#: the latest time any input may name
MAX_TIME = datetime(9000, 1, 1, tzinfo=UTC)


def _aware(value: datetime, name: str) -> datetime:
    """UTC-aware copy; naive input is taken as UTC; out-of-range years are a 422 naming ``name``."""
    try:
        aware = as_utc(value).astimezone(UTC)
    except (OverflowError, ValueError) as err:
        raise invalid(name, f"{value.isoformat()!r} is out of range") from err
    if not EPOCH <= aware <= MAX_TIME:
        raise invalid(name, "must be between 1970 and 9000")
    return aware


@dataclass(frozen=True, slots=True)
class TimeRange:
    """A validated ``[start, end]``."""

    start: datetime
    end: datetime


def time_range(
    start: datetime | None,
    end: datetime | None,
    default_span: timedelta,
    max_span: timedelta,
    start_name: str = "start",
    end_name: str = "end",
) -> TimeRange:
    """Defaults (``end`` = now, ``start`` = end - default span) and the 422 checks: order and width.

    ``start_name``/``end_name`` are the query parameters the 422 names (``since``/``until`` on ``/anomalies``).
    """
    now = datetime.now(UTC)
    end_v = _aware(end, end_name) if end is not None else now
    if start is not None:
        start_v = _aware(start, start_name)
    else:
        try:
            start_v = end_v - default_span
        except OverflowError as err:  # pragma: no cover - end is bounded above year 1970
            raise invalid(parameter=end_name, message="out of range") from err
    if start_v > end_v:
        raise invalid(
            parameter=start_name,
            message=f"{start_name} {start_v.isoformat()} is after {end_name} {end_v.isoformat()}",
            code="invalid_range",
        )
    if end_v - start_v > max_span:
        raise invalid(
            parameter=start_name,
            message=f"range of {end_v - start_v} exceeds the maximum of {max_span}; narrow {start_name}/{end_name}",
            code="range_too_large",
        )
    return TimeRange(start_v, end_v)


def epoch_us(value: datetime) -> int:
    """Epoch microseconds of an aware datetime."""
    return (value - EPOCH) // timedelta(microseconds=1)


def bounded_limit(value: int | None, default: int, maximum: int) -> int:
    """``limit`` with its default; 422 naming it above the maximum (the maximum is a setting)."""
    if value is None:
        return default
    if value > maximum:
        raise invalid(parameter="limit", message=f"must be at most {maximum}, got {value}")
    return value
