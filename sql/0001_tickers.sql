-- Reference data: the simulated universe (loaded from the simulator's preset by `make up`).
-- depends:
CREATE TABLE IF NOT EXISTS tickers (
    ticker        text PRIMARY KEY CHECK (ticker ~ '^[A-Z0-9][A-Z0-9._-]{0,31}$'),
    name          text NOT NULL,
    sector        text NOT NULL,
    initial_price numeric(14, 2) NOT NULL CHECK (initial_price > 0),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
