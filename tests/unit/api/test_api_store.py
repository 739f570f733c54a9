"""How database failures map to API errors in :class:`api.store.Store` (a fake pool; no network)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
import pytest

from api.errors import ApiError
from api.store import Store


class FailingCursor:
    def __init__(self, error: Exception) -> None:
        self.error = error

    async def __aenter__(self) -> FailingCursor:
        return self

    async def __aexit__(self, *exc: object) -> bool:
        return False

    async def execute(self, *args: Any) -> None:
        raise self.error


class FailingPool:
    """Hands out a connection whose every statement raises ``error``."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Any]:
        error = self.error

        class Conn:
            def cursor(self) -> FailingCursor:
                return FailingCursor(error)

        yield Conn()


@pytest.mark.parametrize(
    ("error", "code", "message"),
    [
        (psycopg.errors.QueryCanceled("canceling statement due to statement timeout"), "timeout", "took too long"),
        (psycopg.OperationalError("connection refused"), "unavailable", "database is unavailable"),
    ],
)
async def test_a_statement_timeout_is_a_timeout_not_an_outage(error: Exception, code: str, message: str) -> None:
    assert isinstance(psycopg.errors.QueryCanceled("x"), psycopg.OperationalError)  # why the order matters
    with pytest.raises(ApiError) as err:
        await Store(FailingPool(error)).ping()  # type: ignore[arg-type]
    assert (err.value.status, err.value.code) == (503, code)
    assert message in err.value.message
