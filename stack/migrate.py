"""Applies the numbered migrations in ``sql/`` with yoyo-migrations (under yoyo's lock, so concurrent
starts are safe) and reports which storage path is active: TimescaleDB or native partitioning."""

from __future__ import annotations

import logging

from stack.settings import REPO_ROOT

log = logging.getLogger(__name__)
MIGRATIONS_DIR = REPO_ROOT / "sql"


def _yoyo_url(database_url: str) -> str:
    """yoyo picks its psycopg 3 backend from the ``postgresql+psycopg`` scheme."""
    scheme, _, rest = database_url.partition("://")
    if scheme in ("postgresql", "postgres"):
        return f"postgresql+psycopg://{rest}"
    return database_url


def apply_migrations(database_url: str) -> list[str]:
    """Apply every pending migration; returns the ids applied (empty when up to date)."""
    from yoyo import get_backend, read_migrations

    backend = get_backend(_yoyo_url(database_url))
    migrations = read_migrations(str(MIGRATIONS_DIR))
    try:
        with backend.lock():
            pending = backend.to_apply(migrations)
            backend.apply_migrations(pending)
    finally:
        backend.connection.close()  # a template database must have no open sessions
    applied = [m.id for m in pending]
    if applied:
        log.info("applied migrations: %s", ", ".join(applied))
    return applied


def storage_flavour(database_url: str) -> str:
    """``"timescaledb"`` when the extension is installed in the database, else ``"native"``."""
    import psycopg

    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
    return "timescaledb" if row else "native"
