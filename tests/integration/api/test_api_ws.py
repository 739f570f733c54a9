"""WebSocket protocol against a live gateway with a real ``websockets`` client and real Kafka."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from prometheus_client import REGISTRY
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from api import ws as api_ws
from contracts.bar import Indicators, encode_bar
from contracts.tick import encode_tick
from tests.ticks import make_tick

from .conftest import LiveApi, Seeder, make_bar

pytestmark = pytest.mark.integration


async def recv(ws: ClientConnection, wait_s: float = 10.0) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), wait_s))


async def recv_type(ws: ClientConnection, kind: str, wait_s: float = 10.0) -> dict[str, Any]:
    """Next message of ``kind``, skipping heartbeats and other types."""
    deadline = time.monotonic() + wait_s
    while True:
        msg = await recv(ws, max(0.01, deadline - time.monotonic()))
        if msg["type"] == kind:
            return msg


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@pytest.fixture
def api(seed: Seeder, start_api: Callable[..., LiveApi]) -> LiveApi:
    seed.universe()
    return start_api()


async def test_seed_protocol_subscribe_snapshot_ticks_unsubscribe_ping(
    api: LiveApi, seed: Seeder, producer: Producer
) -> None:
    seed.latest(make_tick("SYNTH", 1, now_ms() - 1000, 150.25, volume=12000))
    async with connect(api.ws_url) as ws:
        hello = await recv(ws)
        assert hello["type"] == "connected"
        assert hello["clientId"]
        assert isinstance(hello["timestamp"], int)
        await ws.send(json.dumps({"type": "subscribe", "tickers": ["SYNTH", "TECH"]}))
        sub = await recv(ws)
        assert sub["type"] == "subscribed"
        assert sub["tickers"] == ["SYNTH", "TECH"]
        snap = await recv(ws)  # the cached latest tick at once
        assert snap == {
            "type": "tick",
            "data": {
                "ticker": "SYNTH",
                "price": 150.25,
                "volume": 12000,
                "bid": 150.24,
                "ask": 150.26,
                "timestamp": snap["data"]["timestamp"],
            },
        }
        ts = now_ms()
        tick = make_tick("TECH", 2, ts, 321.5, volume=700)
        producer.produce(api.settings.topic_ticks, key=b"TECH", value=encode_tick(tick))
        producer.produce(api.settings.topic_ticks, key=b"FINANCE", value=encode_tick(make_tick("FINANCE", 3, ts, 85)))
        assert producer.flush(5) == 0, "ticks not delivered to Kafka"
        got = await recv_type(ws, "tick")
        assert got["data"] == {
            "ticker": "TECH",
            "price": 321.5,
            "volume": 700,
            "bid": 321.49,
            "ask": 321.51,
            "timestamp": ts,
        }
        await ws.send(json.dumps({"type": "ping"}))
        assert (await recv_type(ws, "pong"))["timestamp"] >= ts
        await ws.send(json.dumps({"type": "unsubscribe", "tickers": ["TECH"]}))
        assert (await recv_type(ws, "unsubscribed"))["tickers"] == ["TECH"]
        producer.produce(api.settings.topic_ticks, key=b"TECH", value=encode_tick(make_tick("TECH", 4, ts + 1, 322)))
        producer.produce(api.settings.topic_ticks, key=b"SYNTH", value=encode_tick(make_tick("SYNTH", 5, ts + 2, 151)))
        assert producer.flush(5) == 0, "ticks not delivered to Kafka"
        nxt = await recv_type(ws, "tick")
        assert nxt["data"]["ticker"] == "SYNTH"  # TECH was unsubscribed, FINANCE never subscribed


async def test_malformed_messages_get_errors_and_the_connection_stays_open(api: LiveApi) -> None:
    async with connect(api.ws_url) as ws:
        await recv(ws)
        cases = [
            ("{not json", "invalid_json"),
            ("[1, 2]", "invalid_message"),
            (json.dumps({"type": "dance"}), "unknown_type"),
            (json.dumps({"type": "subscribe"}), "invalid_message"),
            (json.dumps({"type": "subscribe", "tickers": "SYNTH"}), "invalid_message"),
            (json.dumps({"type": "subscribe", "tickers": ["NOPE", "SYNTH"]}), "unknown_ticker"),
            (json.dumps({"type": "subscribe", "tickers": ["SYNTH"], "channel": "news"}), "invalid_channel"),
            (
                json.dumps({"type": "subscribe", "tickers": ["SYNTH"], "channel": "bars", "timeframes": ["7m"]}),
                "invalid_timeframe",
            ),
            (json.dumps({"type": "subscribe", "tickers": ["SYNTH"], "batch": "yes"}), "invalid_message"),
        ]
        for raw, code in cases:
            await ws.send(raw)
            err = await recv_type(ws, "error")
            assert err["code"] == code, (raw, err)
        await ws.send(b'{"type": "ping"}')  # binary frames are accepted too
        assert (await recv_type(ws, "pong"))["type"] == "pong"
        limit = api.settings.ws_max_message_bytes
        # over the limit in bytes (not in characters: "é" is two bytes of UTF-8), text or binary: an error frame,
        # not a closed connection
        for raw in ("x" * (limit + 1), "é" * (limit // 2 + 1), b"y" * (limit + 1)):
            await ws.send(raw)
            err = await recv_type(ws, "error")
            assert err["code"] == "too_large"
        await ws.send(json.dumps({"type": "ping"}))
        assert (await recv_type(ws, "pong"))["type"] == "pong"


async def test_fields_of_the_wrong_json_type_get_errors_and_the_connection_stays_open(api: LiveApi) -> None:
    """A list or object where a string belongs (unhashable) once killed the reader: a plain close, no error."""
    async with connect(api.ws_url) as ws:
        await recv(ws)
        cases = [
            ({"type": "subscribe", "tickers": ["SYNTH"], "channel": [1]}, "invalid_channel"),
            ({"type": "subscribe", "tickers": ["SYNTH"], "channel": {}}, "invalid_channel"),
            ({"type": "unsubscribe", "tickers": ["SYNTH"], "channel": ["bars"]}, "invalid_channel"),
            ({"type": "subscribe", "channel": None}, "invalid_channel"),
            ({"type": ["subscribe"]}, "unknown_type"),
            ({"type": {"ping": 1}}, "unknown_type"),
            ({"type": "subscribe", "tickers": [["SYNTH"]]}, "invalid_message"),
            ({"type": "subscribe", "tickers": [{"SYNTH": 1}]}, "invalid_message"),
            ({"type": "subscribe", "tickers": {"SYNTH": 1}}, "invalid_message"),
            ({"type": "subscribe", "symbols": [7]}, "invalid_message"),
            (
                {"type": "subscribe", "tickers": ["SYNTH"], "channel": "bars", "timeframes": [["1m"]]},
                "invalid_timeframe",
            ),
            (
                {"type": "subscribe", "tickers": ["SYNTH"], "channel": "bars", "timeframes": {"1m": 1}},
                "invalid_timeframe",
            ),
            ({"type": "subscribe", "tickers": ["SYNTH"], "channel": "bars", "timeframes": "1m"}, "invalid_timeframe"),
            ({"type": "subscribe", "tickers": ["SYNTH"], "batch": [True]}, "invalid_message"),
            ({"type": "subscribe", "tickers": ["SYNTH"], "batch": {}}, "invalid_message"),
            # nested ~1,000 deep (orjson parses up to 1,024): str() of it once overflowed the recursion limit in
            # the error message and closed the connection with 1011
            ('{"type": ' + _nested(1000) + "}", "unknown_type"),
            ('{"type": "subscribe", "tickers": ["SYNTH"], "channel": ' + _nested(1000) + "}", "invalid_channel"),
        ]
        for msg, code in cases:
            await ws.send(msg if isinstance(msg, str) else json.dumps(msg))
            err = await recv_type(ws, "error")
            assert err["code"] == code, (msg, err)
            await ws.send(json.dumps({"type": "ping"}))
            assert (await recv_type(ws, "pong"))["type"] == "pong", msg
        await ws.send(json.dumps({"type": "subscribe", "tickers": ["SYNTH"], "mode": ["batch"]}))
        assert (await recv_type(ws, "subscribed"))["batch"] is False, "an odd 'mode' is ignored, as before"


def _nested(depth: int) -> str:
    """A JSON array nested ``depth`` deep (as text: Python's json refuses to encode that deep)."""
    return "[" * depth + "]" * depth


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def test_a_reader_that_fails_anyway_is_logged_with_its_exception(
    api: LiveApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*_args: object) -> None:
        raise RuntimeError("reader bug")

    monkeypatch.setattr(api_ws, "_handle", broken)
    handler = _Records()
    logger = logging.getLogger("api.ws")
    logger.addHandler(handler)
    try:
        async with connect(api.ws_url) as ws:
            await recv(ws)
            await ws.send(json.dumps({"type": "ping"}))
            with pytest.raises(ConnectionClosed) as closed:  # logged before the server closes
                await recv_type(ws, "pong")
            assert closed.value.rcvd is not None, "closed with a close frame, not a dropped socket"
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1011, "error")
    finally:
        logger.removeHandler(handler)
    assert [r.levelno for r in handler.records] == [logging.ERROR]
    exc_info = handler.records[0].exc_info
    assert exc_info is not None
    assert isinstance(exc_info[1], RuntimeError)
    assert str(exc_info[1]) == "reader bug"


async def test_subscription_and_client_limits(seed: Seeder, start_api: Callable[..., LiveApi]) -> None:
    seed.universe()
    api = start_api(ws_max_subscriptions=2, ws_max_clients=1)
    async with connect(api.ws_url) as ws:
        await recv(ws)
        await ws.send(json.dumps({"type": "subscribe", "tickers": ["SYNTH", "TECH", "FINANCE"]}))
        assert (await recv_type(ws, "error"))["code"] == "subscription_limit"
        async with connect(api.ws_url) as second:
            err = await recv(second)
            assert err["code"] == "too_many_clients"
            with pytest.raises(ConnectionClosed):
                await recv(second)


async def test_bars_indicators_and_wildcard_channels(api: LiveApi, producer: Producer) -> None:
    async with connect(api.ws_url) as ws:
        await recv(ws)
        await ws.send(json.dumps({"type": "subscribe", "tickers": ["*"], "channel": "bars", "timeframes": ["1m"]}))
        assert (await recv_type(ws, "subscribed"))["channel"] == "bars"
        await ws.send(json.dumps({"type": "subscribe", "tickers": ["SYNTH"], "channel": "indicators"}))
        await recv_type(ws, "subscribed")
        start = now_ms() // 60_000 * 60_000 - 60_000
        live = make_bar("TECH", "1m", start + 60_000, 60_000, 320, 321, 319, 320.5, final=False)
        final = make_bar("SYNTH", "1m", start, 60_000, 150, 151, 149, 150.5, indicators=Indicators(sma_20=150.2))
        five = make_bar("SYNTH", "5m", start // 300_000 * 300_000, 300_000, 150, 151, 149, 150.5)
        for bar in (five, live, final):
            producer.produce(api.settings.topic_bars, key=bar.ticker.encode(), value=encode_bar(bar))
        assert producer.flush(5) == 0, "bars not delivered to Kafka"
        got: list[dict[str, Any]] = []
        while len(got) < 3:
            msg = await recv(ws)
            if msg["type"] in ("bar", "indicators"):
                got.append(msg)
        kinds = sorted((m["type"], m["data"]["ticker"], m["data"].get("final")) for m in got)
        assert kinds == [("bar", "SYNTH", True), ("bar", "TECH", False), ("indicators", "SYNTH", None)]
        ind = next(m for m in got if m["type"] == "indicators")["data"]
        assert ind["sma_20"] == 150.2
        assert ind["timeframe"] == "1m"
        assert ind["rsi_14"] is None


async def test_batched_mode_sends_arrays(api: LiveApi, producer: Producer) -> None:
    async with connect(api.ws_url) as ws:
        await recv(ws)
        await ws.send(json.dumps({"type": "subscribe", "tickers": ["*"], "batch": True}))
        assert (await recv_type(ws, "subscribed"))["batch"] is True
        ts = now_ms()
        for i in range(50):
            producer.produce(
                api.settings.topic_ticks, key=b"SYNTH", value=encode_tick(make_tick("SYNTH", i, ts, 150 + i * 0.01))
            )
        assert producer.flush(5) == 0, "ticks not delivered to Kafka"
        events: list[dict[str, Any]] = []
        frames = 0
        while len(events) < 50:
            msg = await recv_type(ws, "batch")
            frames += 1
            assert msg["count"] == len(msg["events"])
            events += msg["events"]
        assert frames < 50
        assert [e["data"]["price"] for e in events] == [round(150 + i * 0.01, 2) for i in range(50)]


def _tcp_send_buffer_max() -> int:
    """The largest a TCP socket's send buffer autotunes to (``tcp_wmem``'s third value), in bytes."""
    return int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])


@pytest.mark.parametrize("batch", [False, True], ids=["seed", "batched"])
async def test_stalled_client_is_told_and_dropped_without_hurting_others(
    seed: Seeder, start_api: Callable[..., LiveApi], producer: Producer, batch: bool
) -> None:
    seed.universe()
    # a queue deep enough for a healthy reader's bursts; the stalled one is caught by its blocked send
    # batched: a good reader parses frames of thousands of ticks, so it gets more grace on a loaded machine
    api = start_api(ws_send_queue=40_000, ws_lag_grace_s=3.0 if batch else 1.0)
    hub = api.app.state.md.hub
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fill the pipe quickly
    sock.connect(("127.0.0.1", api.settings.port))
    # batched frames pack the server's send buffer (autotuned up to tcp_wmem's maximum, 4 MiB by default) far
    # better than one small frame per tick: only well over that does the stalled socket push back (below it, it
    # is never "lagging"); a tick is ~100 bytes of a batch frame
    n = max(200_000, 3 * _tcp_send_buffer_max() // 100) if batch else 30_000
    lagging = REGISTRY.get_sample_value("api_ws_disconnects_total", {"reason": "lagging"}) or 0.0
    async with (  # no size limit on either: a stalled client closing itself over a large frame would prove nothing
        connect(api.ws_url, max_size=None) as good,
        connect(api.ws_url, sock=sock, max_queue=1, max_size=None) as stalled,
    ):
        await recv(good)
        await recv(stalled)
        for ws in (good, stalled):  # batched: the flush writes straight to the socket while it takes frames
            await ws.send(json.dumps({"type": "subscribe", "tickers": ["SYNTH"], "batch": batch}))
        await recv_type(good, "subscribed")
        await recv_type(stalled, "subscribed")

        async def read_good() -> int:  # read while the ticks are produced: a reader that keeps up
            seqs = 0
            while seqs < n:
                msg = await recv(good, 20)
                events = msg["events"] if msg["type"] == "batch" else [msg]
                seqs += sum(e["type"] == "tick" for e in events)
                assert msg["type"] != "lagging"
            return seqs

        def produce_all() -> int:  # in a thread: the loop stays free for the good client's reads
            ts = now_ms()
            for i in range(n):
                value = encode_tick(make_tick("SYNTH", i, ts, 150))
                while True:
                    try:
                        producer.produce(api.settings.topic_ticks, key=b"SYNTH", value=value)
                        break
                    except BufferError:  # the producer's queue is full: let it deliver first
                        producer.poll(0.01)
                if i % 5000 == 0:
                    producer.poll(0)
            return producer.flush(10)

        undelivered, received = await asyncio.gather(asyncio.to_thread(produce_all), read_good())
        assert undelivered == 0, "ticks not delivered to Kafka"
        assert received == n
        # the stalled client is disconnected by the hub (it never read)
        for _ in range(150):  # the sweep runs every second; the grace is 1 s (3 s batched)
            if len(hub.clients) <= 1:
                break
            await asyncio.sleep(0.1)  # noqa: ASYNC110 - polling another thread's state
        assert len(hub.clients) == 1
        dropped = REGISTRY.get_sample_value("api_ws_disconnects_total", {"reason": "lagging"})
        assert dropped == lagging + 1, "dropped by the hub as lagging, not closed for another reason"
        # ... and the server lets go of its socket: a close frame cannot pass the frames the peer never read, so
        # after a short wait the connection is aborted (once it lingered, holding its buffers, for as long as the
        # peer kept its window shut)
        connections = api.server.server_state.connections
        for _ in range(100):
            if len(connections) <= 1:
                break
            await asyncio.sleep(0.1)  # noqa: ASYNC110 - polling another thread's state
        assert len(connections) == 1, "the dropped client's connection is still open on the server"
        with pytest.raises(ConnectionClosed):  # noqa: PT012 - drain what was buffered, then the close
            while True:
                await recv(stalled, 20)
    assert hub.clients == {} or len(hub.clients) <= 1


@pytest.mark.parametrize(
    ("ws_protocol", "deflate"),
    [("frame-writer", False), ("frame-writer", True), ("websockets-sansio", False)],
    ids=["frame-writer", "frame-writer-deflate", "uvicorn-sansio"],
)
async def test_every_ws_implementation_delivers_the_same_frames_in_order(
    seed: Seeder, start_api: Callable[..., LiveApi], producer: Producer, ws_protocol: str, deflate: bool
) -> None:
    """The multi-frame write path (with and without compression) and uvicorn's own protocol deliver every tick,
    in order, one message each, and the same ticks in batched frames."""
    seed.universe()
    api = start_api(ws_protocol=ws_protocol, ws_per_message_deflate=deflate, ws_batch_interval_ms=200)
    n = 3000
    async with connect(api.ws_url, max_size=None) as single, connect(api.ws_url, max_size=None) as batched:
        for ws, batch in ((single, False), (batched, True)):
            await recv(ws)
            await ws.send(json.dumps({"type": "subscribe", "tickers": ["SYNTH"], "batch": batch}))
            await recv_type(ws, "subscribed")
        assert bool(single.protocol.extensions) is deflate, "permessage-deflate negotiated only when enabled"
        hub = api.app.state.md.hub
        fast = [c._send_many is not None for c in hub.clients.values()]  # noqa: SLF001 - which path is in use
        assert fast == [ws_protocol == "frame-writer"] * 2
        ts = now_ms()
        for i in range(n):
            tick = make_tick("SYNTH", i, ts + i, 100 + i * 0.01, volume=i + 1)
            producer.produce(api.settings.topic_ticks, key=b"SYNTH", value=encode_tick(tick))
        assert producer.flush(10) == 0, "ticks not delivered to Kafka"
        got: list[int] = []
        while len(got) < n:
            msg = await recv_type(single, "tick", 20)
            got.append(msg["data"]["volume"])
        assert got == list(range(1, n + 1))
        events: list[int] = []
        while len(events) < n:
            msg = await recv_type(batched, "batch", 20)
            assert msg["count"] == len(msg["events"])
            events += [e["data"]["volume"] for e in msg["events"]]
        assert events == list(range(1, n + 1))


async def test_refused_connections_are_closed_with_the_documented_code_and_reason(
    seed: Seeder, start_api: Callable[..., LiveApi]
) -> None:
    seed.universe()
    key = f"k-{time.time_ns()}"  # a fresh identity: the connect budget lives in the shared Redis
    api = start_api(keys=[key], rate_limit_ws_connect="2/minute")
    for suffix in ("", "?api_key=wrong"):
        async with connect(api.ws_url + suffix) as ws:  # the handshake succeeds (no bare HTTP 403) ...
            with pytest.raises(ConnectionClosed) as closed:
                await recv(ws)
        assert closed.value.rcvd is not None  # ... and the server closes with a code and a reason
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1008, "missing or invalid API key")
    for _ in range(2):
        async with connect(api.ws_url + f"?api_key={key}") as ws:  # a valid key has a budget of its own
            assert (await recv(ws))["type"] == "connected"
    # over the 2/minute connect budget: a valid key's, and the client IP's for attempts without a valid key
    for suffix in (f"?api_key={key}", "?api_key=guess"):
        async with connect(api.ws_url + suffix) as ws:
            with pytest.raises(ConnectionClosed) as closed:
                await recv(ws)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1013
        assert "rate limit" in closed.value.rcvd.reason
    assert "retry after" in closed.value.rcvd.reason
