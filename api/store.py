"""PostgreSQL access of the gateway: parameterised, bounded queries over ``tickers``, ``market_ticks`` and
``market_bars`` through one psycopg 3 async pool.

Every query names its ticker and a time range and carries a ``LIMIT``; the primary keys ``(ticker, time, seq)``
and ``(ticker, timeframe, time)`` make each one an index range scan. Connection problems become
:class:`~api.errors.ApiError` 503 so a database outage never looks like a bug (500).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from api import errors
from api.errors import ApiError
from contracts.bar import INDICATOR_NAMES

log = logging.getLogger("api.store")

TICK_COLUMNS = "time, ticker, seq, price, bid, ask, bid_size, ask_size, volume"
BAR_COLUMNS = "time, ticker, timeframe, open, high, low, close, volume, vwap, trades"
#: ``time`` (for cursors), then the REST fields as text: ISO time, open, high, low, close, volume, vwap, trades
BAR_TEXT_COLUMNS = (
    "time, to_char(time AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'),"
    " open::text, high::text, low::text, close::text, volume, vwap::text, trades"
)
#: a row of :data:`BAR_TEXT_COLUMNS`
BarText = tuple[datetime, str, str, str, str, str, int, str, int]
ANOMALY_COLUMNS = "time, ticker, type, timeframe, severity, value, threshold, reference, message, detected_at"
#: the names of :data:`ANOMALY_COLUMNS`, in order
ANOMALY_FIELDS: tuple[str, ...] = tuple(ANOMALY_COLUMNS.split(", "))
INDICATOR_COLUMNS = ", ".join(INDICATOR_NAMES)


@dataclass(frozen=True, slots=True)
class TickRow:
    """One ``market_ticks`` row."""

    time: datetime
    ticker: str
    seq: int
    price: Decimal
    bid: Decimal
    ask: Decimal
    bid_size: int
    ask_size: int
    volume: int


@dataclass(frozen=True, slots=True)
class BarRow:
    """One ``market_bars`` row (indicators only when asked for)."""

    time: datetime
    ticker: str
    timeframe: str
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: int
    vwap: Decimal
    trades: int
    indicators: dict[str, float | None] | None = None


@dataclass(frozen=True, slots=True)
class TickerRow:
    """One ``tickers`` row."""

    ticker: str
    name: str
    sector: str
    initial_price: Decimal
    created_at: datetime


@dataclass(frozen=True, slots=True)
class StatsRow:
    """Aggregates of a ticker over a period (prices None when nothing traded)."""

    tick_count: int
    low: Decimal | None
    high: Decimal | None
    open: Decimal | None
    close: Decimal | None
    avg_price: Decimal | None
    total_volume: int
    volatility: float | None


def unavailable(what: str, err: Exception) -> ApiError:
    """503 for a dependency that cannot be reached; the detail goes to the log, not the client."""
    log.warning("%s unavailable: %r", what, err)
    return errors.unavailable(what)


class Store:
    """Read-only queries of the gateway."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    @asynccontextmanager
    async def _cursor(self) -> AsyncIterator[psycopg.AsyncCursor[Any]]:
        try:
            async with self.pool.connection() as conn, conn.cursor() as cur:
                yield cur
        except psycopg.errors.QueryCanceled as err:  # first: it is a subclass of OperationalError
            raise ApiError(503, "timeout", "the query took too long; narrow the range") from err
        except (psycopg.OperationalError, PoolTimeout) as err:
            raise unavailable(what="database", err=err) from err

    async def ping(self) -> None:
        """Raise unless ``SELECT 1`` succeeds."""
        async with self._cursor() as cur:
            await cur.execute("SELECT 1")

    async def tickers(self) -> list[TickerRow]:
        """The whole universe, by ticker."""
        async with self._cursor() as cur:
            await cur.execute(
                "SELECT ticker, name, sector, initial_price, created_at FROM tickers ORDER BY ticker LIMIT 100000"
            )
            return [TickerRow(*row) for row in await cur.fetchall()]

    async def ticker_names(self) -> set[str]:
        """Just the ticker symbols."""
        async with self._cursor() as cur:
            await cur.execute("SELECT ticker FROM tickers LIMIT 100000")
            return {row[0] for row in await cur.fetchall()}

    async def latest_tick(self, ticker: str) -> TickRow | None:
        """The newest archived tick."""
        async with self._cursor() as cur:
            await cur.execute(
                f"SELECT {TICK_COLUMNS} FROM market_ticks WHERE ticker = %s ORDER BY time DESC, seq DESC LIMIT 1",  # noqa: S608 - constant column lists; values are bound parameters
                (ticker,),
            )
            row = await cur.fetchone()
            return TickRow(*row) if row else None

    async def ticks(
        self,
        ticker: str,
        start: datetime,
        end: datetime,
        position: tuple[datetime, int] | None,
        limit: int,
        *,
        newest: bool = False,
    ) -> list[TickRow]:
        """Ticks in ``[start, end]``, at most ``limit``: ascending and strictly after the ``position`` (time, seq),
        or with ``newest`` the newest ones strictly before it, NEWEST FIRST (a backward range scan of the primary
        key ``(ticker, time, seq)`` that stops after ``limit`` rows)."""
        op, order = ("<", "DESC") if newest else (">", "ASC")
        query = f"SELECT {TICK_COLUMNS} FROM market_ticks WHERE ticker = %s AND time >= %s AND time <= %s"  # noqa: S608 - constant column lists; values are bound parameters
        params: list[Any] = [ticker, start, end]
        if position is not None:
            query += f" AND (time, seq) {op} (%s, %s)"
            params += position
        query += f" ORDER BY time {order}, seq {order} LIMIT %s"
        params.append(limit)
        async with self._cursor() as cur:
            await cur.execute(query, params)
            return [TickRow(*row) for row in await cur.fetchall()]

    async def recent_ticks(self, ticker: str, limit: int) -> list[TickRow]:
        """The newest ``limit`` ticks, returned ascending."""
        async with self._cursor() as cur:
            await cur.execute(
                f"SELECT {TICK_COLUMNS} FROM market_ticks WHERE ticker = %s ORDER BY time DESC, seq DESC LIMIT %s",  # noqa: S608 - constant column lists; values are bound parameters
                (ticker, limit),
            )
            rows = [TickRow(*row) for row in await cur.fetchall()]
        rows.reverse()
        return rows

    async def bars(
        self,
        ticker: str,
        timeframe: str,
        start: datetime,
        end: datetime,
        position: datetime | None,
        limit: int,
        *,
        newest: bool = False,
    ) -> list[BarText]:
        """Final bars starting in ``[start, end]``, at most ``limit``: ascending after ``position``, or with
        ``newest`` the newest ones before it, NEWEST FIRST (a backward range scan of the primary key
        ``(ticker, timeframe, time)`` that stops after ``limit`` rows; the caller reverses the small list).

        PostgreSQL formats the numbers and the ISO time (``numeric::text`` is exactly what
        ``format(Decimal, "f")`` prints): no Decimal/datetime parsing per value, which was a third of a
        500-bar request.
        """
        lower_op, lower, upper_op, upper = ">=", start, "<=", end
        if newest and position is not None and position <= end:
            upper_op, upper = "<", position
        elif not newest and position is not None and position >= start:
            lower_op, lower = ">", position
        async with self._cursor() as cur:
            await cur.execute(
                f"SELECT {BAR_TEXT_COLUMNS} FROM market_bars WHERE ticker = %s AND timeframe = %s"  # noqa: S608 - constant column lists; values are bound parameters
                f" AND time {lower_op} %s AND time {upper_op} %s ORDER BY time {'DESC' if newest else 'ASC'} LIMIT %s",
                (ticker, timeframe, lower, upper, limit),
            )
            rows: list[BarText] = await cur.fetchall()
            return rows

    async def latest_bar(self, ticker: str, timeframe: str) -> BarRow | None:
        """The newest final bar with its indicators."""
        async with self._cursor() as cur:
            await cur.execute(
                f"SELECT {BAR_COLUMNS}, {INDICATOR_COLUMNS} FROM market_bars"  # noqa: S608 - constant column lists; values are bound parameters
                " WHERE ticker = %s AND timeframe = %s ORDER BY time DESC LIMIT 1",
                (ticker, timeframe),
            )
            row = await cur.fetchone()
        if row is None:
            return None
        t, tk, tf, o, h, lo, c, v, vw, n = row[:10]
        return BarRow(t, tk, tf, o, h, lo, c, v, vw, n, indicators=dict(zip(INDICATOR_NAMES, row[10:], strict=True)))

    async def anomalies(
        self,
        start: datetime,
        end: datetime,
        severities: list[str],
        ticker: str | None,
        anomaly_type: str | None,
        limit: int,
    ) -> list[dict[str, Any]]:
        """Anomalies with bar time in ``[start, end]`` and severity in ``severities`` (optionally of one ticker
        and one type), newest first, at most ``limit``; each row a dict keyed by :data:`ANOMALY_FIELDS`."""
        where = ["time >= %s", "time <= %s", "severity = ANY(%s)"]
        params: list[Any] = [start, end, severities]
        if ticker is not None:
            where.append("ticker = %s")
            params.append(ticker)
        if anomaly_type is not None:
            where.append("type = %s")
            params.append(anomaly_type)
        condition = " AND ".join(where)
        query = f"SELECT {ANOMALY_COLUMNS} FROM anomalies WHERE {condition} ORDER BY time DESC, ticker, type LIMIT %s"  # noqa: S608 - constant fragments; values are bound parameters
        params.append(limit)
        async with self._cursor() as cur:
            await cur.execute(query, params)
            rows = await cur.fetchall()
        return [dict(zip(ANOMALY_FIELDS, row, strict=True)) for row in rows]

    async def stats_from_ticks(self, ticker: str, start: datetime, end: datetime) -> StatsRow:
        """Exact statistics from the archived ticks (used for short periods)."""
        async with self._cursor() as cur:
            await cur.execute(
                "WITH r AS (SELECT time, seq, price, volume FROM market_ticks"
                "           WHERE ticker = %(t)s AND time >= %(s)s AND time <= %(e)s)"
                " SELECT count(*), min(price), max(price),"
                "   (SELECT price FROM r ORDER BY time, seq LIMIT 1),"
                "   (SELECT price FROM r ORDER BY time DESC, seq DESC LIMIT 1),"
                "   coalesce(sum(price * volume) / nullif(sum(volume), 0), avg(price)),"
                "   coalesce(sum(volume), 0), stddev_samp(price)::float8"
                " FROM r",
                {"t": ticker, "s": start, "e": end},
            )
            row = await cur.fetchone()
        assert row is not None  # an aggregate always returns one row
        return StatsRow(*row)

    async def stats_from_bars(self, ticker: str, start: datetime, end: datetime) -> StatsRow:
        """Statistics from final 1-minute bars (used for long periods: at most 43,200 rows for 30 days)."""
        async with self._cursor() as cur:
            await cur.execute(
                "WITH r AS (SELECT time, open, high, low, close, volume, vwap, trades FROM market_bars"
                "           WHERE ticker = %(t)s AND timeframe = '1m' AND time >= %(s)s AND time <= %(e)s)"
                " SELECT coalesce(sum(trades), 0), min(low), max(high),"
                "   (SELECT open FROM r ORDER BY time LIMIT 1),"
                "   (SELECT close FROM r ORDER BY time DESC LIMIT 1),"
                "   coalesce(sum(vwap * volume) / nullif(sum(volume), 0), avg(close)),"
                "   coalesce(sum(volume), 0), stddev_samp(close)::float8"
                " FROM r",
                {"t": ticker, "s": start, "e": end},
            )
            row = await cur.fetchone()
        assert row is not None
        return StatsRow(*row)
