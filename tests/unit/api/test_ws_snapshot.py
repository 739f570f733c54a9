"""The subscribe snapshot never repeats or precedes a live tick (a race found by the WebSocket ordering test)."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

import pytest

from api.hub import Client, Hub
from api.ws import ProtocolError, _handle, _send_snapshot
from contracts import redis_keys
from tests.ticks import tick_bytes


def _tick(volume: int) -> bytes:
    return tick_bytes("SYNTH", volume, 1_700_000_000_000 + volume, 10.0, volume=volume, bid_size=1, ask_size=1)


class SlowRedis:
    """Answers MGET from a dict once ``release`` is set (the moment a live tick can slip in)."""

    def __init__(self, values: dict[str, bytes]) -> None:
        self.values = values
        self.release = asyncio.Event()
        self.asked = asyncio.Event()

    async def mget(self, keys: list[str]) -> list[bytes | None]:
        self.asked.set()
        await self.release.wait()
        return [self.values.get(k) for k in keys]


def _hub() -> Hub:
    return Hub(queue_bound=100, lag_grace_s=60, max_dropped=100, max_clients=5, max_subscriptions=5,
               heartbeat_s=60, batch_interval_s=0.025)  # fmt: skip


def _volumes(client: Client) -> list[int]:
    return [json.loads(f)["data"]["volume"] for f in client.queue if '"type":"tick"' in f]


async def _subscribe_while_a_tick_arrives(live_during_fetch: bool) -> list[int]:
    from api.relay import tick_event

    hub = _hub()
    redis = SlowRedis({redis_keys.latest_price("SYNTH"): _tick(1)})
    state: Any = SimpleNamespace(hub=hub, redis=redis)
    client = Client("c", lambda _t: asyncio.sleep(0), hub)  # never registered: frames stay in its queue
    hub.subscribe(client, ["t:SYNTH"])
    task = asyncio.create_task(_send_snapshot(client, ["SYNTH"], state))
    await redis.asked.wait()
    if live_during_fetch:
        hub.publish([tick_event(_tick(2))])
    redis.release.set()
    await task
    return _volumes(client)


async def test_a_tick_relayed_during_the_redis_fetch_is_delivered_once_and_the_older_value_dropped() -> None:
    assert await _subscribe_while_a_tick_arrives(live_during_fetch=True) == [2]


async def test_without_live_ticks_the_redis_value_is_the_snapshot() -> None:
    assert await _subscribe_while_a_tick_arrives(live_during_fetch=False) == [1]


async def test_a_cached_tick_is_sent_at_once_without_asking_redis() -> None:
    from api.relay import tick_event

    hub = _hub()
    hub.publish([tick_event(_tick(5))])
    redis = SlowRedis({})
    client = Client("c", lambda _t: asyncio.sleep(0), hub)
    hub.subscribe(client, ["t:SYNTH"])
    await _send_snapshot(client, ["SYNTH"], SimpleNamespace(hub=hub, redis=redis))  # type: ignore[arg-type]
    assert _volumes(client) == [5]
    assert not redis.asked.is_set()


class DictRedis:
    """MGET from a dict; records the keys asked for."""

    def __init__(self, values: dict[str, bytes]) -> None:
        self.values = values
        self.asked: list[str] = []

    async def mget(self, keys: list[str]) -> list[bytes | None]:
        self.asked.extend(keys)
        return [self.values.get(k) for k in keys]


def _state(hub: Hub, redis: DictRedis, known: set[str]) -> Any:
    return SimpleNamespace(hub=hub, redis=redis, tickers=SimpleNamespace(known=frozenset(known)))


def _frames(client: Client) -> list[dict[str, Any]]:
    out = [json.loads(f) for f in client.queue]
    client.queue.clear()
    return out


def _tick_seqs(frames: list[dict[str, Any]]) -> list[tuple[str, int]]:
    """(ticker, volume) of every tick, single or inside a batch frame."""
    events: list[dict[str, Any]] = []
    for f in frames:
        events.extend(f["events"] if f["type"] == "batch" else [f])
    return [(e["data"]["ticker"], e["data"]["volume"]) for e in events if e["type"] == "tick"]


def _named(ticker: str, volume: int) -> bytes:
    return tick_bytes(ticker, volume, 1_700_000_000_000 + volume, 10.0, volume=volume, bid_size=1, ask_size=1)


async def _send(client: Client, state: Any, **msg: Any) -> list[dict[str, Any]]:
    await _handle(json.dumps({"type": "subscribe", **msg}), client, state)
    return _frames(client)


async def test_subscribing_again_does_not_repeat_the_snapshot_also_when_the_mode_changes() -> None:
    from api.relay import tick_event

    hub = _hub()
    hub.publish([tick_event(_named("SYNTH", 599))])
    state = _state(hub, DictRedis({redis_keys.latest_price("TECH"): _named("TECH", 7)}), {"SYNTH", "TECH"})
    client = Client("c", lambda _t: asyncio.sleep(0), hub)
    assert _tick_seqs(await _send(client, state, tickers=["SYNTH"], batch=True)) == [("SYNTH", 599)]
    assert _tick_seqs(await _send(client, state, tickers=["SYNTH"])) == []
    assert _tick_seqs(await _send(client, state, tickers=["SYNTH"], batch=False)) == []
    # only the newly added ticker of a mixed request gets its snapshot
    assert _tick_seqs(await _send(client, state, tickers=["SYNTH", "TECH"])) == [("TECH", 7)]


async def test_a_ticker_already_covered_by_the_wildcard_gets_no_second_snapshot() -> None:
    from api.relay import tick_event

    hub = _hub()
    hub.publish([tick_event(_named("SYNTH", 1)), tick_event(_named("TECH", 2))])
    state = _state(hub, DictRedis({}), {"SYNTH", "TECH"})
    client = Client("c", lambda _t: asyncio.sleep(0), hub)
    assert _tick_seqs(await _send(client, state, tickers=["SYNTH"])) == [("SYNTH", 1)]
    assert _tick_seqs(await _send(client, state, tickers=["*"])) == [("TECH", 2)]  # SYNTH was already sent
    assert _tick_seqs(await _send(client, state, tickers=["TECH"])) == []


async def test_a_wildcard_snapshot_asks_redis_for_known_tickers_the_relay_has_not_seen() -> None:
    from api.relay import tick_event

    hub = _hub()
    hub.publish([tick_event(_named("SYNTH", 1))])
    redis = DictRedis({redis_keys.latest_price("TECH"): _named("TECH", 2)})
    state = _state(hub, redis, {"SYNTH", "TECH", "QUIET"})
    client = Client("c", lambda _t: asyncio.sleep(0), hub)
    assert sorted(_tick_seqs(await _send(client, state, tickers=["*"]))) == [("SYNTH", 1), ("TECH", 2)]
    assert sorted(redis.asked) == [redis_keys.latest_price("QUIET"), redis_keys.latest_price("TECH")]


async def test_a_batched_client_gets_its_snapshot_in_batch_frames() -> None:
    from api.relay import tick_event

    hub = _hub()
    hub.publish([tick_event(_named("SYNTH", 1)), tick_event(_named("TECH", 2))])
    state = _state(hub, DictRedis({redis_keys.latest_price("QUIET"): _named("QUIET", 3)}), {"SYNTH", "TECH", "QUIET"})
    client = Client("c", lambda _t: asyncio.sleep(0), hub)
    frames = await _send(client, state, tickers=["SYNTH", "TECH"], batch=True)
    assert [f["type"] for f in frames] == ["subscribed", "batch"]
    batch = frames[1]
    assert batch["count"] == 2
    assert isinstance(batch["timestamp"], int)
    assert [(e["type"], e["data"]["ticker"]) for e in batch["events"]] == [("tick", "SYNTH"), ("tick", "TECH")]
    frames = await _send(client, state, tickers=["QUIET"])  # still batched: the Redis value too
    assert [f["type"] for f in frames] == ["subscribed", "batch"]
    assert _tick_seqs(frames) == [("QUIET", 3)]
    assert frames[1]["count"] == 1


async def test_a_non_ascii_spelling_of_a_ticker_is_an_unknown_ticker_on_the_websocket() -> None:
    hub = _hub()
    state = _state(hub, DictRedis({}), {"SYNTH"})
    client = Client("c", lambda _t: asyncio.sleep(0), hub)
    with pytest.raises(ProtocolError) as err:
        await _handle(json.dumps({"type": "subscribe", "tickers": ["\u017fynth"]}), client, state)
    assert err.value.code == "unknown_ticker"
    assert client.keys == set()
    assert [f["type"] for f in await _send(client, state, tickers=[" synth "])] == ["subscribed"]
    assert client.keys == {"t:SYNTH"}


async def test_a_wildcard_snapshot_larger_than_the_send_queue_is_queued_whole() -> None:
    from api.relay import tick_event

    hub = Hub(queue_bound=16, lag_grace_s=60, max_dropped=100, max_clients=5, max_subscriptions=5,
              heartbeat_s=60, batch_interval_s=0.025)  # fmt: skip
    names = [f"S{i:03}" for i in range(300)]
    hub.publish([tick_event(_named(t, 1)) for t in names])
    client = Client("c", lambda _t: asyncio.sleep(0), hub)  # frames stay in its queue, as before its writer runs
    frames = await _send(client, _state(hub, DictRedis({}), set(names)), tickers=["*"])
    assert frames[0]["type"] == "subscribed"
    assert sorted(t for t, _ in _tick_seqs(frames)) == names, "every ticker's latest tick, none dropped"
    assert client.lagging_since is None
    assert client.dropped == 0
    # live ticks get the bound's room on top of the snapshot until the queue is written
    hub.publish([tick_event(_named("S000", 2))])
    assert _tick_seqs(_frames(client)) == [("S000", 2)]


async def test_only_an_ascii_star_is_the_wildcard() -> None:
    hub = _hub()
    state = _state(hub, DictRedis({}), {"SYNTH"})
    client = Client("c", lambda _t: asyncio.sleep(0), hub)
    with pytest.raises(ProtocolError) as err:
        await _handle(json.dumps({"type": "subscribe", "tickers": ["\u3000*\u00a0"]}), client, state)
    assert err.value.code == "unknown_ticker"
    assert client.keys == set()
    await _send(client, state, tickers=[" * "])
    assert client.keys == {"t:*"}


class Directory:
    """The gateway's ticker set: ``known`` now, and what a reload on a miss would find."""

    def __init__(self, known: set[str], after_reload: set[str]) -> None:
        self.known = frozenset(known)
        self.after_reload = frozenset(after_reload)
        self.reloads = 0

    async def refreshed_on_miss(self) -> frozenset[str]:
        self.reloads += 1
        self.known = self.after_reload
        return self.known


async def test_a_ticker_added_since_the_set_was_loaded_is_found_by_a_reload_on_the_miss() -> None:
    hub = _hub()
    tickers = Directory({"SYNTH"}, {"SYNTH", "NEWCO"})
    state = SimpleNamespace(hub=hub, redis=DictRedis({}), tickers=tickers)
    client = Client("c", lambda _t: asyncio.sleep(0), hub)
    await _send(client, state, tickers=["SYNTH"])
    assert tickers.reloads == 0, "no reload while every ticker is known"
    await _send(client, state, tickers=["newco"])
    assert tickers.reloads == 1
    assert client.keys == {"t:SYNTH", "t:NEWCO"}
    with pytest.raises(ProtocolError) as err:
        await _handle(json.dumps({"type": "subscribe", "tickers": ["NOPE"]}), client, state)
    assert err.value.code == "unknown_ticker"


async def test_a_ticker_no_longer_known_can_still_be_unsubscribed() -> None:
    hub = _hub()
    tickers = Directory(set(), {"SYNTH"})  # the set has not loaded yet: any well-formed ticker is accepted
    state = SimpleNamespace(hub=hub, redis=DictRedis({}), tickers=tickers)
    client = Client("c", lambda _t: asyncio.sleep(0), hub)
    await _send(client, state, tickers=["FOO"])
    assert client.keys == {"t:FOO"}
    tickers.known = frozenset({"SYNTH"})  # loaded since: FOO does not exist
    await _handle(json.dumps({"type": "unsubscribe", "tickers": ["foo"]}), client, state)
    assert [f["type"] for f in _frames(client)] == ["unsubscribed"]
    assert client.keys == set()
    with pytest.raises(ProtocolError) as err:  # malformed is still an error
        await _handle(json.dumps({"type": "unsubscribe", "tickers": ["bad ticker!"]}), client, state)
    assert err.value.code == "unknown_ticker"
