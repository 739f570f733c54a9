"""Table ``anomalies``: what ``flows.anomalies`` detected, idempotent on (ticker, type, timeframe, time).

Time-partitioned like the other market tables so the flow's PostgreSQL sink base (which creates native
partitions ahead of writes) serves it unchanged: a TimescaleDB hypertable when the extension is installed
(migration 0002 creates it), else monthly native range partitions created on demand by ``md_ensure_partitions``.
"""

from typing import Any

from yoyo import step

__depends__ = {"0002_timeseries"}
__transactional__ = False

COLUMNS = """
    time        timestamptz      NOT NULL,
    ticker      text             NOT NULL,
    type        text             NOT NULL CHECK (type IN ('price_spike', 'volume_spike', 'rsi_overbought',
                                                          'rsi_oversold', 'high_latency')),
    timeframe   text             NOT NULL CHECK (timeframe IN ('1m', '5m', '15m', '1h', '1d')),
    severity    text             NOT NULL CHECK (severity IN ('low', 'medium', 'high', 'critical')),
    value       double precision NOT NULL,
    threshold   double precision NOT NULL,
    reference   double precision,
    message     text             NOT NULL,
    detected_at timestamptz      NOT NULL,
    created_at  timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (ticker, type, timeframe, time)
"""

INDEXES = (
    "CREATE INDEX IF NOT EXISTS anomalies_time_idx ON anomalies (time DESC)",
    "CREATE INDEX IF NOT EXISTS anomalies_ticker_time_idx ON anomalies (ticker, time DESC)",
)


def _has_timescale(conn: Any) -> bool:
    cur = conn.cursor()
    cur.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'")
    return cur.fetchone() is not None


def apply_step(conn: Any) -> None:
    cur = conn.cursor()
    if _has_timescale(conn):
        cur.execute(f"CREATE TABLE IF NOT EXISTS anomalies ({COLUMNS})")
        cur.execute(
            "SELECT create_hypertable('anomalies', by_range('time', INTERVAL '30 days'), if_not_exists => true)"
        )
    else:
        cur.execute(f"CREATE TABLE IF NOT EXISTS anomalies ({COLUMNS}) PARTITION BY RANGE (time)")
        cur.execute(
            "SELECT md_ensure_partitions('anomalies', now() - INTERVAL '2 months',"
            " now() + INTERVAL '2 months', INTERVAL '1 month')"
        )
    for sql in INDEXES:
        cur.execute(sql)
    conn.commit()


def rollback_step(conn: Any) -> None:
    cur = conn.cursor()
    cur.execute("DROP TABLE IF EXISTS anomalies CASCADE")
    conn.commit()


steps = [step(apply_step, rollback_step)]
