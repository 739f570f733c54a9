"""Time-series tables ``market_ticks`` and ``market_bars``: TimescaleDB when available, else native partitions.

With the ``timescaledb`` extension: hypertables, compression and retention policies, and a continuous
aggregate ``market_ticks_1m``. Without it: tables range-partitioned by time (daily for ticks, monthly for bars)
with ``md_ensure_partitions``/``md_drop_partitions_before`` for creation ahead and retention, and a plain view
``market_ticks_1m`` with the same columns. Both paths expose the same table shapes to the application.
"""

from typing import Any

from yoyo import step

__depends__ = {"0001_tickers"}
__transactional__ = False  # continuous aggregates cannot be created inside a transaction

TICKS_COLUMNS = """
    time       timestamptz    NOT NULL,
    ticker     text           NOT NULL,
    seq        bigint         NOT NULL CHECK (seq >= 0),
    price      numeric(14, 2) NOT NULL CHECK (price > 0),
    bid        numeric(14, 2) NOT NULL,
    ask        numeric(14, 2) NOT NULL,
    bid_size   integer        NOT NULL CHECK (bid_size >= 0),
    ask_size   integer        NOT NULL CHECK (ask_size >= 0),
    volume     bigint         NOT NULL CHECK (volume >= 0),
    CHECK (bid < ask),
    PRIMARY KEY (ticker, time, seq)
"""

BARS_COLUMNS = """
    time            timestamptz    NOT NULL,
    ticker          text           NOT NULL,
    timeframe       text           NOT NULL CHECK (timeframe IN ('1m', '5m', '15m', '1h', '1d')),
    open            numeric(14, 2) NOT NULL,
    high            numeric(14, 2) NOT NULL,
    low             numeric(14, 2) NOT NULL,
    close           numeric(14, 2) NOT NULL,
    volume          bigint         NOT NULL CHECK (volume >= 0),
    vwap            numeric(20, 6) NOT NULL,
    trades          integer        NOT NULL CHECK (trades >= 1),
    first_tick_time timestamptz    NOT NULL,
    last_tick_time  timestamptz    NOT NULL,
    sma_20          double precision,
    sma_50          double precision,
    sma_200         double precision,
    ema_12          double precision,
    ema_26          double precision,
    rsi_14          double precision,
    macd            double precision,
    macd_signal     double precision,
    macd_hist       double precision,
    bb_upper        double precision,
    bb_middle       double precision,
    bb_lower        double precision,
    updated_at      timestamptz    NOT NULL DEFAULT now(),
    CHECK (low <= open AND low <= close AND high >= open AND high >= close),
    PRIMARY KEY (ticker, timeframe, time)
"""

NATIVE_FUNCTIONS = """
CREATE OR REPLACE FUNCTION md_ensure_partitions(parent text, from_ts timestamptz, to_ts timestamptz,
                                                step interval)
RETURNS integer LANGUAGE plpgsql AS $$
-- Create the range partitions of `parent` (named parent_pYYYYMMDD) covering [from_ts, to_ts) in UTC steps.
DECLARE
    lo timestamptz;
    hi timestamptz;
    made integer := 0;
    part text;
BEGIN
    IF step = interval '1 month' THEN
        lo := date_trunc('month', from_ts AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    ELSE
        lo := date_trunc('day', from_ts AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    END IF;
    WHILE lo < to_ts LOOP
        hi := ((lo AT TIME ZONE 'UTC') + step) AT TIME ZONE 'UTC';
        part := format('%s_p%s', parent, to_char(lo AT TIME ZONE 'UTC', 'YYYYMMDD'));
        IF to_regclass(part) IS NULL THEN
            EXECUTE format('CREATE TABLE IF NOT EXISTS %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                           part, parent, lo, hi);
            made := made + 1;
        END IF;
        lo := hi;
    END LOOP;
    RETURN made;
END $$;

CREATE OR REPLACE FUNCTION md_drop_partitions_before(parent text, cutoff timestamptz)
RETURNS integer LANGUAGE plpgsql AS $$
-- Retention without TimescaleDB: drop every partition of `parent` whose upper bound is <= cutoff.
DECLARE
    r record;
    dropped integer := 0;
BEGIN
    FOR r IN
        SELECT c.relname,
               (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \\(''([^'']+)''\\)'))[1]::timestamptz AS upper
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = parent::regclass
    LOOP
        IF r.upper IS NOT NULL AND r.upper <= cutoff THEN
            EXECUTE format('DROP TABLE %I', r.relname);
            dropped := dropped + 1;
        END IF;
    END LOOP;
    RETURN dropped;
END $$;
"""

TICKS_1M_SELECT = """
SELECT {bucket} AS bucket, ticker,
       {first} AS open, max(price) AS high, min(price) AS low, {last} AS close,
       sum(volume) AS volume, count(*) AS trades
FROM market_ticks
GROUP BY 1, 2
"""


def _has_timescale(conn: Any) -> bool:
    cur = conn.cursor()
    cur.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'")
    return cur.fetchone() is not None


def apply_step(conn: Any) -> None:
    cur = conn.cursor()
    if _has_timescale(conn):
        cur.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        cur.execute(f"CREATE TABLE IF NOT EXISTS market_ticks ({TICKS_COLUMNS})")
        cur.execute(
            "SELECT create_hypertable('market_ticks', by_range('time', INTERVAL '1 day'), if_not_exists => true)"
        )
        cur.execute(f"CREATE TABLE IF NOT EXISTS market_bars ({BARS_COLUMNS})")
        cur.execute(
            "SELECT create_hypertable('market_bars', by_range('time', INTERVAL '7 days'), if_not_exists => true)"
        )
        cur.execute(
            "ALTER TABLE market_ticks SET (timescaledb.compress, timescaledb.compress_segmentby = 'ticker',"
            " timescaledb.compress_orderby = 'time, seq')"
        )
        cur.execute("SELECT add_compression_policy('market_ticks', INTERVAL '2 days', if_not_exists => true)")
        cur.execute("SELECT add_retention_policy('market_ticks', INTERVAL '30 days', if_not_exists => true)")
        cur.execute(
            "CREATE MATERIALIZED VIEW IF NOT EXISTS market_ticks_1m WITH (timescaledb.continuous) AS"
            + TICKS_1M_SELECT.format(
                bucket="time_bucket(INTERVAL '1 minute', time)",
                first="first(price, time)",
                last="last(price, time)",
            )
            + " WITH NO DATA"
        )
        cur.execute(
            "SELECT add_continuous_aggregate_policy('market_ticks_1m', start_offset => INTERVAL '1 day',"
            " end_offset => INTERVAL '1 minute', schedule_interval => INTERVAL '1 minute', if_not_exists => true)"
        )
    else:
        cur.execute(NATIVE_FUNCTIONS)
        cur.execute(f"CREATE TABLE IF NOT EXISTS market_ticks ({TICKS_COLUMNS}) PARTITION BY RANGE (time)")
        cur.execute(f"CREATE TABLE IF NOT EXISTS market_bars ({BARS_COLUMNS}) PARTITION BY RANGE (time)")
        cur.execute(
            "CREATE OR REPLACE VIEW market_ticks_1m AS"
            + TICKS_1M_SELECT.format(
                bucket="date_bin(INTERVAL '1 minute', time, TIMESTAMPTZ '1970-01-01 00:00:00+00')",
                first="(array_agg(price ORDER BY time, seq))[1]",
                last="(array_agg(price ORDER BY time DESC, seq DESC))[1]",
            )
        )
        # partitions for the recent past and the near future; the writers create more as needed
        cur.execute(
            "SELECT md_ensure_partitions('market_ticks', now() - INTERVAL '3 days',"
            " now() + INTERVAL '3 days', INTERVAL '1 day')"
        )
        cur.execute(
            "SELECT md_ensure_partitions('market_bars', now() - INTERVAL '2 months',"
            " now() + INTERVAL '2 months', INTERVAL '1 month')"
        )
    conn.commit()


def rollback_step(conn: Any) -> None:
    cur = conn.cursor()
    kind = "MATERIALIZED VIEW" if _has_timescale(conn) else "VIEW"
    cur.execute(f"DROP {kind} IF EXISTS market_ticks_1m CASCADE")
    cur.execute("DROP TABLE IF EXISTS market_bars CASCADE")
    cur.execute("DROP TABLE IF EXISTS market_ticks CASCADE")
    conn.commit()


steps = [step(apply_step, rollback_step)]
