"""The REST fast paths: coalesced Redis GETs, rate-limit token pre-fetch, hand-built JSON (no network)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
import pytest
from limits import parse
from redis.exceptions import ConnectionError as RedisConnectionError

from api import schemas
from api.cache import GetCoalescer
from api.convert import (
    quote_json_from_row,
    quote_json_from_tick,
)
from api.errors import ApiError
from api.ratelimit import RateLimiter
from api.store import TickRow
from common.clock import EPOCH, iso_from_ms, iso_ms
from tests.ticks import make_tick


class FakeRedis:
    """Records MGET calls; values from a dict; can fail."""

    def __init__(self, values: dict[str, bytes], fail: bool = False) -> None:
        self.values = values
        self.fail = fail
        self.calls: list[list[str]] = []

    async def mget(self, keys: list[str]) -> list[bytes | None]:
        self.calls.append(list(keys))
        await asyncio.sleep(0)
        if self.fail:
            msg = "redis down"
            raise RedisConnectionError(msg)
        return [self.values.get(k) for k in keys]


async def test_concurrent_gets_become_one_mget_with_each_caller_getting_its_value() -> None:
    fake = FakeRedis({"a": b"1", "b": b"2"})
    gets = GetCoalescer(fake)  # type: ignore[arg-type]
    got = await asyncio.gather(gets.get("a"), gets.get("b"), gets.get("a"), gets.get("missing"))
    assert got == [b"1", b"2", b"1", None]
    assert fake.calls == [["a", "b", "missing"]]  # one round trip, keys deduplicated
    assert await gets.get("b") == b"2"  # a later GET is a new batch
    assert len(fake.calls) == 2
    assert (gets.batches, gets.keys) == (2, 4)


async def test_a_failed_mget_reaches_every_caller_and_the_next_batch_works() -> None:
    fake = FakeRedis({"a": b"1"}, fail=True)
    gets = GetCoalescer(fake)  # type: ignore[arg-type]
    results = await asyncio.gather(gets.get("a"), gets.get("b"), return_exceptions=True)
    assert all(isinstance(r, RedisConnectionError) for r in results)
    fake.fail = False
    assert await gets.get("a") == b"1"


async def test_batches_are_capped() -> None:
    fake = FakeRedis({})
    gets = GetCoalescer(fake, max_batch=3)  # type: ignore[arg-type]
    await asyncio.gather(*(gets.get(f"k{i}") for i in range(7)))
    assert [len(c) for c in fake.calls] == [3, 3, 1]


class FakeStrategy:
    """A sliding window reduced to a counter: enough to check how many units the limiter takes."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.used = 0
        self.hits: list[int] = []

    async def hit(self, item: object, *identifiers: str, cost: int = 1) -> bool:
        self.hits.append(cost)
        if self.used + cost > self.budget:
            return False
        self.used += cost
        return True

    async def get_window_stats(self, item: object, *identifiers: str) -> object:
        class Stats:
            reset_time = datetime.now(UTC).timestamp() + 30

        return Stats()


def _limiter(limit: str, prefetch: int, budget: int) -> tuple[RateLimiter, FakeStrategy]:
    limiter = RateLimiter("redis://127.0.0.1:1/0", limit, "", prefetch=prefetch)
    strategy = FakeStrategy(budget)
    limiter.strategy = strategy  # type: ignore[assignment]
    return limiter, strategy


def test_chunk_is_at_most_a_64th_of_the_limit() -> None:
    limiter, _ = _limiter("1200/minute", 16, 0)
    assert limiter.chunk(parse("1200/minute")) == 16
    assert limiter.chunk(parse("640/minute")) == 10
    assert limiter.chunk(parse("60/minute")) == 1
    assert limiter.chunk(parse("5/second")) == 1


async def test_prefetched_tokens_save_round_trips_and_never_exceed_the_budget() -> None:
    limiter, strategy = _limiter("640/minute", 16, budget=25)
    refused: list[ApiError] = []
    for _ in range(40):
        try:
            await limiter.check("client")
        except ApiError as err:
            refused.append(err)
    assert len(refused) == 40 - 25
    assert {e.status for e in refused} == {429}
    assert all(int(e.headers["Retry-After"]) >= 1 for e in refused)
    # the edge of the budget is exact: chunks, then single units
    assert strategy.used == 25
    assert strategy.hits[:2] == [10, 10]  # 20 requests in two round trips
    assert 1 in strategy.hits


async def test_identities_have_separate_tokens() -> None:
    limiter, strategy = _limiter("640/minute", 16, budget=1000)
    await limiter.check("a")
    await limiter.check("b")
    assert strategy.hits == [10, 10]
    for _ in range(9):
        await limiter.check("a")
    assert strategy.hits == [10, 10]


def test_iso_from_ms_matches_the_schema_format() -> None:
    for ms in (0, 1_705_314_645_123, 1_705_314_645_001, 4_102_444_799_999):
        assert iso_from_ms(ms) == iso_ms(EPOCH + timedelta(milliseconds=ms))


def _as_model_json(built: dict[str, Any]) -> dict[str, Any]:
    """``built`` validated as the response model and serialised again (the model's canonical JSON)."""
    return schemas.Quote.model_validate(built).model_dump(mode="json")


def test_hand_built_quote_json_is_the_models_json() -> None:
    tick = make_tick("SYNTH", 7, 1_705_314_645_123, 150.25, volume=1200, bid_size=300, ask_size=500)
    built = quote_json_from_tick(tick)
    assert built == {
        "time": "2024-01-15T10:30:45.123Z", "ticker": "SYNTH", "price": "150.25", "volume": 1200,
        "bid": "150.24", "ask": "150.26", "bid_size": 300, "ask_size": 500, "seq": 7,
    }  # fmt: skip
    assert list(built) == list(_as_model_json(built))  # same key order
    assert built == _as_model_json(built)


def test_hand_built_history_json_equals_the_models_json() -> None:
    rows = [
        TickRow(
            datetime(2025, 10, 2, 14, 30, 1, 123456, tzinfo=UTC),
            "SYNTH",
            9,
            Decimal("150.25"),
            Decimal("150.24"),
            Decimal("150.26"),
            100,
            200,
            500,
        ),
        TickRow(
            datetime(999, 1, 2, 3, 4, 5, tzinfo=UTC),
            "TECH",
            10,
            Decimal("0.10"),
            Decimal("1E+2"),
            Decimal("12345.678901"),
            0,
            1,
            0,
        ),
    ]
    data = [quote_json_from_row(r) for r in rows]
    assert data[1] == {
        "time": "0999-01-02T03:04:05.000Z", "ticker": "TECH", "price": "0.10", "volume": 0, "bid": "100",
        "ask": "12345.678901", "bid_size": 0, "ask_size": 1, "seq": 10,
    }  # fmt: skip
    for built in data:
        assert list(built) == list(_as_model_json(built))  # same key order
        assert built == _as_model_json(built)
    start, end = rows[1].time, rows[0].time
    meta = schemas.RangeMeta(ticker="SYNTH", start=start, end=end, count=2, next_cursor=None, prev_cursor=None)
    history = {"success": True, "data": data, "meta": meta.model_dump(mode="json")}
    model = schemas.PagedEnvelope[list[schemas.Quote], schemas.RangeMeta].model_validate(history)
    assert orjson.dumps(history) == orjson.dumps(model.model_dump(mode="json"))
    ticks = {"success": True, "data": data}
    assert orjson.dumps(ticks) == orjson.dumps(
        schemas.Envelope[list[schemas.Quote]].model_validate(ticks).model_dump(mode="json")
    )


class StalledStrategy:
    """A Redis that accepts the command and never answers (``CLIENT PAUSE``)."""

    def __init__(self) -> None:
        self.calls = 0

    async def hit(self, item: object, *identifiers: str, cost: int = 1) -> bool:
        self.calls += 1
        await asyncio.Event().wait()
        return True


async def test_a_stalled_redis_fails_open_within_the_timeout(caplog: pytest.LogCaptureFixture) -> None:
    limiter = RateLimiter("redis://127.0.0.1:1/0", "640/minute", "", prefetch=16, timeout_s=0.05)
    strategy = StalledStrategy()
    limiter.strategy = strategy  # type: ignore[assignment]
    started = time.monotonic()
    await asyncio.wait_for(limiter.check("client"), 2.0)  # allowed (no 429), and not after the 2 s guard
    assert time.monotonic() - started < 1.0
    assert strategy.calls == 1
    assert "rate limiter unavailable" in caplog.text


def test_the_limiter_redis_client_has_socket_timeouts() -> None:
    limiter = RateLimiter("redis://127.0.0.1:1/0", "640/minute", "", timeout_s=0.25)
    kwargs = limiter.storage.bridge.storage.connection_pool.connection_kwargs  # type: ignore[attr-defined]
    assert kwargs["socket_timeout"] == 0.25
    assert kwargs["socket_connect_timeout"] == 0.25
