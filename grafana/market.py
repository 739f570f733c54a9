"""The market dashboard: candlesticks, volume and indicators from ``market_bars`` per ticker and timeframe.

SQL against PostgreSQL/TimescaleDB (sql/0002_timeseries.py); ``$ticker`` and ``$timeframe`` are dashboard
variables and ``$__timeFilter(time)`` is Grafana's time-range macro. tests/integration/test_dashboards.py runs
every query with these substituted against a real database filled by the simulator and the bars flow.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import candlestick, dashboard, table
from grafana_foundation_sdk.models import candlestick as candle_models
from grafana_foundation_sdk.models import dashboard as models

from contracts import TIMEFRAMES
from grafana.common import POSTGRES, Sql, timeseries_panel

UID = "md-market"
_FIRST_TIMEFRAME = next(iter(TIMEFRAMES))
_BARS = "FROM market_bars WHERE ticker = '$ticker' AND timeframe = '$timeframe' AND $__timeFilter(time)"


def _bars_query(columns: str) -> Sql:
    return Sql("A", f'SELECT time AS "time", {columns} {_BARS} ORDER BY time', "table")


def _variables() -> list[dashboard.QueryVariable | dashboard.CustomVariable]:
    ticker = (
        dashboard.QueryVariable("ticker")
        .label("Ticker")
        .datasource(POSTGRES)
        .query("SELECT ticker FROM tickers ORDER BY ticker")
        .refresh(models.VariableRefresh.ON_DASHBOARD_LOAD)
    )
    timeframe = (
        dashboard.CustomVariable("timeframe")
        .label("Timeframe")
        .values(",".join(TIMEFRAMES))
        .current(models.VariableOption(selected=True, text=_FIRST_TIMEFRAME, value=_FIRST_TIMEFRAME))
    )
    return [ticker, timeframe]


def build() -> models.Dashboard:
    """The dashboard model."""
    board = (
        dashboard.Dashboard("Market data")
        .uid(UID)
        .tags(["market-data", "bars"])
        .description("OHLCV bars and indicators from market_bars, per ticker and timeframe")
        .refresh("30s")
        .time("now-6h", "now")
        .timezone("utc")
    )
    for variable in _variables():
        board = board.with_variable(variable)
    board = (
        board.with_panel(
            candlestick.Panel()
            .title("$ticker $timeframe")
            .description("Final bars: open, high, low, close and volume")
            .datasource(POSTGRES)
            .with_target(_bars_query("open, high, low, close, volume"))
            .mode(candle_models.VizDisplayMode.CANDLES_VOLUME)
            .candle_style(candle_models.CandleStyle.CANDLES)
            .color_strategy(candle_models.ColorStrategy.OPEN_CLOSE)
            .height(12)
            .span(24)
        )
        .with_panel(
            timeseries_panel(
                "Moving averages and Bollinger bands", "currencyUSD", "Close, SMA, EMA, VWAP, BB", datasource=POSTGRES
            )
            .with_target(
                _bars_query("close, vwap, sma_20, sma_50, sma_200, ema_12, ema_26, bb_upper, bb_middle, bb_lower")
            )
            .span(24)
        )
        .with_panel(
            timeseries_panel(
                "RSI (14)", "none", "Relative strength index; 70 overbought, 30 oversold", datasource=POSTGRES
            )
            .with_target(_bars_query("rsi_14"))
            .min(0)
            .max(100)
        )
        .with_panel(
            timeseries_panel("MACD", "none", "MACD line, signal and histogram", datasource=POSTGRES).with_target(
                _bars_query("macd, macd_signal, macd_hist")
            )
        )
        .with_panel(
            timeseries_panel(
                "Trades per bar", "short", "Ticks aggregated into each bar", datasource=POSTGRES
            ).with_target(_bars_query("trades"))
        )
        .with_panel(
            table.Panel()
            .title("Latest bars of every ticker")
            .description("Newest final bar per ticker for the selected timeframe")
            .datasource(POSTGRES)
            .with_target(
                Sql(
                    "A",
                    "SELECT DISTINCT ON (ticker) ticker, time, open, high, low, close, volume, vwap, rsi_14"
                    " FROM market_bars WHERE timeframe = '$timeframe' AND $__timeFilter(time)"
                    " ORDER BY ticker, time DESC",
                    "table",
                )
            )
            .height(8)
            .span(12)
        )
    )
    return board.build()
