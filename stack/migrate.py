"""Applies the numbered migrations in ``sql/`` with yoyo-migrations (under yoyo's lock, so concurrent
starts are safe) and reports which storage path is active: TimescaleDB or native partitioning."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from stack.settings import REPO_ROOT

log = logging.getLogger(__name__)
MIGRATIONS_DIR = REPO_ROOT / "sql"
MIGRATION_TABLE = "_yoyo_migration"


def _yoyo_url(database_url: str) -> str:
    """yoyo picks its psycopg 3 backend from the ``postgresql+psycopg`` scheme."""
    scheme, _, rest = database_url.partition("://")
    if scheme in ("postgresql", "postgres"):
        return f"postgresql+psycopg://{rest}"
    return database_url


def _single_connection_backend(database_url: str) -> Any:
    """A yoyo psycopg backend that runs every migration on its own connection.

    yoyo normally opens a second connection per migration (``copy()``) while the first one holds the lock
    row. Servers that accept only one connection at a time (PGlite, used to test the TimescaleDB path)
    would make that second connect wait forever, so here ``copy()`` hands back the same backend. The lock
    row is committed before a migration starts, so sharing the connection changes no transaction.
    """
    from yoyo.backends.core.postgresql import PostgresqlPsycopgBackend
    from yoyo.connections import parse_uri

    class SingleConnectionBackend(PostgresqlPsycopgBackend):  # type: ignore[misc]  # yoyo is untyped
        def copy(self) -> contextlib.nullcontext[SingleConnectionBackend]:
            return contextlib.nullcontext(self)

    backend = SingleConnectionBackend(parse_uri(_yoyo_url(database_url)), MIGRATION_TABLE)
    backend.init_database()
    return backend


def apply_migrations(database_url: str, *, single_connection: bool = False) -> list[str]:
    """Apply every pending migration; returns the ids applied (empty when up to date).

    ``single_connection`` runs everything on one connection, for servers that accept only one at a time.
    """
    from yoyo import get_backend, read_migrations

    if single_connection:
        backend = _single_connection_backend(database_url)
    else:
        backend = get_backend(_yoyo_url(database_url), MIGRATION_TABLE)
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
