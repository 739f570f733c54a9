"""WebSocket ``/ws``: the seed protocol (connected, subscribe/subscribed, tick, unsubscribe, ping/pong), extended.

Client -> server::

    {"type": "subscribe", "tickers": ["SYNTH", "TECH"]}                     # seed: ticks
    {"type": "subscribe", "tickers": ["*"], "channel": "bars", "timeframes": ["1m", "5m"]}
    {"type": "subscribe", "tickers": ["SYNTH"], "channel": "indicators", "timeframes": ["1m"]}
    {"type": "subscribe", "channel": "anomalies"}                           # all tickers' anomalies
    {"type": "subscribe", "tickers": ["*"], "batch": true}                   # batched frames
    {"type": "unsubscribe", "tickers": ["SYNTH"]}      {"type": "ping"}

``symbols`` is accepted for ``tickers`` (seed 002). Server -> client: ``connected``, ``subscribed``,
``unsubscribed``, ``tick``, ``bar``, ``indicators``, ``anomaly``, ``batch`` (``events``: the same messages in an array),
``pong``, ``heartbeat``, ``lagging``, ``error``. A bad message is answered with an ``error`` and the
connection stays open.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import orjson
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from redis.exceptions import RedisError

from api.auth import admit, credential_from
from api.batches import batch_frame
from api.cache import ticker_symbol
from api.deps import AppState
from api.hub import ANOMALIES, BARS, BATCH, CHANNEL_NAMES, INDICATORS, TICKS, Client, control, sub_key
from api.relay import tick_event
from api.ws_protocol import SEND_TEXTS
from common.errors import ContractError
from contracts import TIMEFRAMES, redis_keys

log = logging.getLogger("api.ws")
#: WebSocket close code by disconnect reason: 1013 try again later (too slow), 1011 internal error
_CLOSE_CODES = {"lagging": 1013, "error": 1011}
#: how long a close frame may wait behind a stalled peer's unread frames before the connection is aborted
_CLOSE_WAIT_S = 2.0
router = APIRouter(tags=["websocket"])

CHANNELS = {name: i for i, name in enumerate(CHANNEL_NAMES)}
MAX_TICKERS_PER_MESSAGE = 1000
_TICK_PREFIX = sub_key(TICKS, "")  # "t:": subscription keys of the ticks channel
_WILDCARD = "*"


class ProtocolError(ValueError):
    """A client message we answer with ``{"type":"error"}``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@router.websocket("/ws")
async def websocket_endpoint(ws: WebSocket) -> None:
    """Live ticks, bars and indicators over one WebSocket connection."""
    state: AppState = ws.app.state.md
    settings = state.settings
    credential = credential_from(ws.headers, ws.query_params)
    client_host = ws.client.host if ws.client else "unknown"
    refused = await admit(settings, state.limiter, credential, client_host, "ws")
    if refused is not None:
        # accepted, then closed with a WebSocket code and reason: a close before accept() reaches the client as a
        # bare HTTP 403, which browsers do not even expose. 1008 policy violation (key), 1013 try again later.
        await ws.accept()
        if refused.status == 401:
            await ws.close(code=1008, reason="missing or invalid API key")
        else:
            await ws.close(code=1013, reason=_close_reason(refused.message))
        return
    await ws.accept()
    hub = state.hub
    fast = (ws.scope.get("extensions") or {}).get(SEND_TEXTS, {})
    client = Client(uuid.uuid4().hex, ws.send_text, hub, fast.get("send"), fast.get("write"), fast.get("write_one"))
    if not hub.register(client):
        await ws.send_text(control("error", code="too_many_clients", message="server is at its client limit"))
        await ws.close(code=1013, reason="too many clients")
        return
    client.offer(control("connected", clientId=client.id))
    reader = asyncio.create_task(_read_loop(ws, client, state))
    gone = asyncio.create_task(client.gone.wait())
    try:
        await asyncio.wait({reader, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        reader.cancel()
        gone.cancel()
        failed = reader.done() and not reader.cancelled() and reader.exception() is not None
        if failed:
            # every malformed message is answered with an error frame: this is a bug, so say so loudly
            log.error("client %s reader failed; closing the connection", client.id, exc_info=reader.exception())
        hub.drop(client, "error" if failed else "closed")
        if client.close_reason not in ("closed", "send_failed"):
            code = _CLOSE_CODES.get(client.close_reason, 1001)  # 1001: going away (shutdown)
            try:
                await asyncio.wait_for(ws.close(code=code, reason=client.close_reason), _CLOSE_WAIT_S)
            except Exception:  # noqa: BLE001 - a peer that does not read cannot take its close frame either
                abort = fast.get("abort")
                if abort is not None:
                    abort()


def _close_reason(text: str) -> str:
    """``text`` cut to the 123 bytes of UTF-8 a close frame's reason may hold."""
    return text.encode()[:123].decode(errors="ignore")


async def _read_loop(ws: WebSocket, client: Client, state: AppState) -> None:
    max_bytes = state.settings.ws_max_message_bytes
    while True:
        try:
            message = await ws.receive()
        except (WebSocketDisconnect, RuntimeError):
            return
        if message["type"] == "websocket.disconnect":
            return
        raw: str | bytes | None = message.get("text")
        if raw is None:
            raw = message.get("bytes")
        if raw is None:
            continue
        if _size(raw, max_bytes) > max_bytes:
            client.offer(control("error", code="too_large", message=f"messages are limited to {max_bytes} bytes"))
            continue
        try:
            await _handle(raw, client, state)
        except ProtocolError as err:
            client.offer(control("error", code=err.code, message=err.message))


async def _handle(raw: str | bytes, client: Client, state: AppState) -> None:
    try:
        msg = orjson.loads(raw)
    except orjson.JSONDecodeError as err:
        raise ProtocolError(code="invalid_json", message=f"message is not valid JSON: {err}") from None
    if not isinstance(msg, dict):
        raise ProtocolError(code="invalid_message", message="a message must be a JSON object with a 'type'")
    kind = msg.get("type")
    if kind == "ping":
        client.offer(control("pong"))
    elif kind == "subscribe":
        await _subscribe(msg, client, state)
    elif kind == "unsubscribe":
        # only well-formed: a ticker subscribed while the set was unknown, or since removed, can still be left
        channel, tickers, timeframes = await _parse_targets(msg, state, known_only=False)
        state.hub.unsubscribe(client, _keys(channel, tickers, timeframes))
        client.offer(_ack("unsubscribed", channel, tickers, timeframes))
    else:
        raise ProtocolError(
            code="unknown_type", message=f"unknown message type {_shown(kind)}; use subscribe, unsubscribe or ping"
        )


def _size(raw: str | bytes, max_bytes: int) -> int:
    """The size of a client message in bytes (UTF-8 for text; encoded only when its length in characters
    could pass ``max_bytes``)."""
    if isinstance(raw, bytes) or len(raw) * 4 <= max_bytes:
        return len(raw)
    return len(raw.encode(errors="surrogatepass"))


def _shown(value: object) -> str:
    """A client-sent JSON value for an error message: a string cut to 40 characters, else its JSON type only
    (never ``str()`` of a nested value: a list nested a thousand deep overflows the recursion limit)."""
    if isinstance(value, str):
        return repr(value[:40])
    return {dict: "an object", list: "an array", bool: "a boolean", int: "a number", float: "a number"}.get(
        type(value), "null"
    )


async def _subscribe(msg: dict[str, Any], client: Client, state: AppState) -> None:
    channel, tickers, timeframes = await _parse_targets(msg, state)
    batch = msg.get("batch")
    if batch is not None and not isinstance(batch, bool):
        raise ProtocolError(code="invalid_message", message="'batch' must be true or false")
    if msg.get("mode") == "batch":
        batch = True
    before = {k for k in client.keys if k.startswith(_TICK_PREFIX)} if channel == TICKS else set()
    try:
        added = state.hub.subscribe(client, _keys(channel, tickers, timeframes), batch)
    except ValueError as err:
        raise ProtocolError(code="subscription_limit", message=str(err)) from None
    client.offer(_ack("subscribed", channel, tickers, timeframes, client.batch))
    if channel == TICKS:
        await _send_snapshot(client, _newly_covered(before, added, state), state)


def _newly_covered(before: set[str], added: list[str], state: AppState) -> list[str]:
    """The tickers whose ticks this subscribe starts delivering: only these get a snapshot.

    ``before``/``added``: the client's ticks-channel keys before the subscribe, and those it added. A ticker
    already subscribed, or already covered by ``*``, has had its snapshot and gets its live ticks: sending its
    latest tick again would deliver it twice (also when only the batch mode changes). A ``*`` added now covers
    every ticker except those subscribed one by one before.
    """
    if sub_key(TICKS, "*") in before:
        return []
    tickers = [k[len(_TICK_PREFIX) :] for k in added if k.startswith(_TICK_PREFIX)]
    if "*" in tickers:
        # every known ticker, not only those relayed since start-up: the rest fall through to Redis
        had = {k[len(_TICK_PREFIX) :] for k in before}
        return sorted((state.tickers.known | state.hub.tick_cache.keys()) - had)
    return tickers


def _ack(kind: str, channel: int, tickers: list[str], timeframes: list[str], batch: bool | None = None) -> str:
    fields: dict[str, object] = {"tickers": tickers, "channel": CHANNEL_NAMES[channel]}
    if channel in (BARS, INDICATORS):
        fields["timeframes"] = timeframes
    if batch is not None:
        fields["batch"] = batch
    return control(kind, **fields)


def _keys(channel: int, tickers: list[str], timeframes: list[str]) -> list[str]:
    if channel in (TICKS, ANOMALIES):
        return [sub_key(channel, t) for t in tickers]
    return [sub_key(channel, t, tf) for t in tickers for tf in timeframes]


async def _parse_targets(
    msg: dict[str, Any], state: AppState, *, known_only: bool = True
) -> tuple[int, list[str], list[str]]:
    """Channel, canonical tickers and timeframes of a (un)subscribe message; ProtocolError when malformed.

    ``known_only``: a ticker must be in the universe (a miss reloads the set first, at most once per
    ``miss_refresh_s``, as the REST paths do); while the set is unavailable every well-formed ticker passes.
    """
    channel_name = msg.get("channel", "ticks")
    if not isinstance(channel_name, str) or channel_name not in CHANNELS:  # a list or object is not hashable
        raise ProtocolError(
            code="invalid_channel", message=f"channel must be one of {list(CHANNELS)}, got {_shown(channel_name)}"
        )
    channel = CHANNELS[channel_name]
    tickers_raw = msg.get("tickers", msg.get("symbols", ["*"] if channel == ANOMALIES else None))
    if not isinstance(tickers_raw, list) or not tickers_raw or not all(isinstance(t, str) for t in tickers_raw):
        raise ProtocolError(code="invalid_message", message="'tickers' must be a non-empty list of ticker strings")
    if len(tickers_raw) > MAX_TICKERS_PER_MESSAGE:
        raise ProtocolError(code="invalid_message", message=f"at most {MAX_TICKERS_PER_MESSAGE} tickers per message")
    canonical = [_WILDCARD if _is_wildcard(t) else ticker_symbol(t) for t in tickers_raw]  # REST's normalisation
    known = state.tickers.known
    if known_only and known and any(c is not None and c != _WILDCARD and c not in known for c in canonical):
        known = await state.tickers.refreshed_on_miss()
    tickers: list[str] = []
    bad: list[str] = []
    for t, canon in zip(tickers_raw, canonical, strict=True):
        if canon is not None and (canon == _WILDCARD or not known_only or not known or canon in known):
            tickers.append(canon)
        else:
            bad.append(t[:40])
    if bad:
        raise ProtocolError(code="unknown_ticker", message=f"unknown tickers: {bad[:20]}")
    timeframes: list[str] = []
    if channel in (BARS, INDICATORS):
        tf_raw = msg.get("timeframes", ["1m"])
        if (
            not isinstance(tf_raw, list)
            or not tf_raw
            or not all(isinstance(x, str) and x in TIMEFRAMES for x in tf_raw)
        ):
            raise ProtocolError(
                code="invalid_timeframe", message=f"'timeframes' must be a non-empty list of {list(TIMEFRAMES)}"
            )
        timeframes = list(dict.fromkeys(tf_raw))
    return channel, list(dict.fromkeys(tickers)), timeframes


async def _send_snapshot(client: Client, tickers: list[str], state: AppState) -> None:
    """The latest tick of each of ``tickers`` (those a subscribe newly covers) at once: process cache, then Redis.

    The subscription is live before this runs, so a tick relayed while Redis is being asked has already been
    queued to the client (or, batched, buffered for its next frame, which leaves out the older ticks of a key
    added now: ``api/batches.py``): the cache is read before the await, and a Redis value is sent only for a ticker that
    has still not been relayed afterwards (else it would repeat, or precede, a live tick).
    """
    cache = state.hub.tick_cache
    missing: list[str] = []
    frames: list[str] = []
    for t in tickers:
        frame = cache.get(t)
        if frame is None:
            missing.append(t)
        else:
            frames.append(frame)
    _offer_ticks(client, frames)  # before the await: a live frame queued meanwhile must come after these
    if not missing:
        return
    try:
        values = await state.redis.mget([redis_keys.latest_price(t) for t in missing])
    except (RedisError, OSError) as err:
        log.warning("snapshot from redis failed: %r", err)
        return
    frames = []
    for t, raw in zip(missing, values, strict=True):
        if raw is None or t in cache:  # relayed meanwhile: the client has it live
            continue
        try:
            frames.append(tick_event(raw).frame)
        except ContractError:
            continue
    _offer_ticks(client, frames)


def _is_wildcard(raw: str) -> bool:
    """``"*"``, with ASCII blanks around it at most (a non-ASCII character never makes a ticker, nor ``*``)."""
    return raw.isascii() and raw.strip() == _WILDCARD


def _offer_ticks(client: Client, frames: list[str]) -> None:
    """Queue snapshot ticks as the client's mode wants them: single ``tick`` frames (beyond the queue bound, as
    one snapshot), or one ``batch`` frame."""
    if not frames:
        return
    if client.batch:
        counts = [0] * len(CHANNEL_NAMES)
        counts[TICKS] = len(frames)
        client.offer(batch_frame(frames), BATCH, counts)
    else:
        client.offer_snapshot(frames, TICKS)
