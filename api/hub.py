"""Fan-out of relayed events to WebSocket clients: subscriptions, bounded per-client queues, lagging and drops.

Design (why): the Kafka relay hands batches of *pre-serialised* frames to :meth:`Hub.publish` on the event loop;
each frame is built once per message and the same ``str`` object is queued for every subscriber, so the
per-delivery cost is a ``deque.append``. Every client has its own writer task draining its queue, so no client
ever waits for another (the seed awaited clients one after another); where the server offers it
(``api/ws_protocol.py``), a writer hands everything queued to the socket in one write. A queue that reaches its
bound marks the client *lagging*: its backlog is discarded, a ``{"type":"lagging"}`` notice goes first in
line, and a client still lagging after ``ws_lag_grace_s`` (or having lost ``ws_max_dropped`` frames) is
disconnected. Memory per client is therefore bounded by ``ws_send_queue`` frames.

Batched mode (opt-in on subscribe): instead of one frame per event, the hub buffers events for
``ws_batch_interval_ms`` and sends each batched client one ``{"type":"batch","events":[...]}`` frame; clients
with the same subscriptions share one serialised frame, which is what makes a million deliveries a second
possible in one process. ``api/batches.py`` spreads the clients over phases so a flush is never one burst.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Final

import orjson

from api.batches import Batcher
from api.metrics import (
    RELAY_CHANNELS,
    RELAY_MESSAGES,
    WS_CHANNELS,
    WS_CLIENTS,
    WS_DISCONNECTS,
    WS_DROPPED,
    WS_SENT,
    relay_latency,
)
from common.clock import now_ms

log = logging.getLogger("api.hub")

TICKS: Final = 0
BARS: Final = 1
INDICATORS: Final = 2
ANOMALIES: Final = 3
CHANNEL_NAMES: Final = RELAY_CHANNELS  # ticks, bars, indicators, anomalies: the slots below
BATCH: Final = len(CHANNEL_NAMES)  # metrics slot of batched frames
SLOTS: Final = BATCH + 1  # metrics slots: the channels, then batch frames
#: key prefixes: ``t:SYNTH``, ``b:SYNTH:1m``, ``i:SYNTH:1m``, ``a:SYNTH``; wildcards ``t:*``, ``b:*:1m``, ``a:*``
PREFIX: Final = ("t", "b", "i", "a")


def sub_key(channel: int, ticker: str, timeframe: str | None = None) -> str:
    """The subscription key of one channel/ticker(/timeframe); ``ticker`` may be ``*``."""
    if timeframe is None:
        return f"{PREFIX[channel]}:{ticker}"
    return f"{PREFIX[channel]}:{ticker}:{timeframe}"


@dataclass(frozen=True, slots=True)
class Event:
    """One relayed message, serialised once: ``frame`` is the complete per-message JSON text."""

    channel: int
    key: str
    wildcard: str
    ticker: str
    frame: str
    event_ms: int


def control(kind: str, **fields: object) -> str:
    """A small server message such as ``{"type":"pong","timestamp":...}``."""
    return orjson.dumps({"type": kind, **fields, "timestamp": now_ms()}).decode()


SendText = Callable[[str], Awaitable[None]]
#: sends several texts as separate frames in one socket write (``api.ws_protocol.SEND_TEXTS``)
SendTexts = Callable[[list[str]], Awaitable[None]]
#: the same without waiting: False (nothing written) when the connection cannot take them now
WriteTexts = Callable[[Sequence[str]], bool]
#: one text as one frame, without waiting: False (nothing written) when the connection cannot take it now
WriteText = Callable[[str], bool]


class Client:
    """One connection: its subscriptions, its bounded queue and its writer task.

    Metrics: the events of the frames in the queue are tallied per slot (channels, then batch frames) in
    :attr:`unsent` (batch frames: their shared per-channel counts, by reference, in :attr:`unsent_batches`) and
    moved to the hub as *sent* when the queue is written, or as *dropped* when it is discarded
    (overflow, a failed send, a lagging client dropped), so an event is counted once, under its own channel.
    Control frames (``pong``, ``subscribed``, ``heartbeat``, ...) are not events and are not counted.
    """

    def __init__(
        self,
        client_id: str,
        send: SendText,
        hub: Hub,
        send_many: SendTexts | None = None,
        write_now: WriteTexts | None = None,
        write_one: WriteText | None = None,
    ) -> None:
        self.id = client_id
        self._send = send
        self._send_many = send_many
        self.write_now = write_now
        self.write_one = write_one
        self.hub = hub
        self.keys: set[str] = set()
        self._signature: frozenset[str] | None = None
        self.batch = False
        self.queue: deque[str] = deque()
        #: events per metrics slot in the frames queued and not yet written
        self.unsent = [0] * SLOTS
        #: the events per channel of the queued batch frames (the Batcher's lists, shared by a frame's clients)
        self.unsent_batches: list[Sequence[int]] = []
        #: frames the queue may hold: the hub's bound, plus a subscribe snapshot until the queue is next written
        self.bound = hub.queue_bound
        self.wake = asyncio.Event()
        self.gone = asyncio.Event()
        self.lagging_since: float | None = None
        self.sending_since: float | None = None
        self.dropped = 0
        self.closed = False
        self.close_reason = ""
        self.writer: asyncio.Task[None] | None = None

    def offer(self, frame: str, channel: int | None = None, counts: Sequence[int] | None = None) -> bool:
        """Queue ``frame`` without waiting; on overflow the client becomes lagging and the frame is dropped.

        ``channel``: the metrics slot of an event frame (None: a control frame, not counted); ``counts``: the
        events per channel a batch frame carries."""
        if self.closed:
            return False
        if len(self.queue) < self.bound or self.write_queue():
            self.queue.append(frame)
            if channel is not None:
                self.unsent[channel] += 1
                if counts is not None:
                    self.unsent_batches.append(counts)
            self.wake.set()
            return True
        self._overflow(channel, counts)
        return False

    def offer_snapshot(self, frames: list[str], channel: int) -> None:
        """Queue a subscribe snapshot as a whole, beyond the queue bound: its size is bounded by the ticker universe
        (a ``*`` snapshot of 10,000 tickers is 10,000 frames), and a reader that keeps up must not be told it lags
        because it asked for many tickers at once. Live frames get the bound's room again once it is written."""
        if self.closed or not frames:
            return
        self.bound += len(frames)
        for frame in frames:
            self.offer(frame, channel)

    def put(self, frame: str, channel: int, counts: Sequence[int] | None = None) -> bool:
        """As :meth:`offer` for the fan-out: queue without waking the writer; the hub's :meth:`Hub.kick` then
        writes the queue straight to the socket when it can, or wakes the writer."""
        if self.closed:
            return False
        q = self.queue
        if len(q) < self.bound or self.write_queue():
            if not q:
                self.hub.pending.append(self)
            q.append(frame)
            self.unsent[channel] += 1
            if counts is not None:  # a list append, not a sum per client: 1,000 batched clients x 40 frames/s
                self.unsent_batches.append(counts)
            return True
        self._overflow(channel, counts)
        return False

    def write_queue(self) -> bool:
        """Hand the whole queue to the socket here, in one write, if the connection takes it without waiting and
        no send of the writer is in flight (nothing can overtake frames the writer holds); its events count as
        sent. False (nothing written) otherwise: the writer task has to wait for the socket.

        The hub calls it after each fan-out (:meth:`Hub.kick`), and :meth:`put`/:meth:`offer` at the bound, so one
        large fan-out (a relayed batch of thousands of events) does not mark a reader that keeps up as lagging.
        """
        write = self.write_now
        q = self.queue
        if write is None or self.sending_since is not None or not q:
            return False
        try:
            written = write(q)  # written synchronously: the deque is not kept
        except Exception as err:  # noqa: BLE001 - the writer meets the error and drops the client
            log.debug("client %s direct write failed: %r", self.id, err)
            return False
        if written:  # on the fan-out's path once per client: the tally handed over without further calls
            q.clear()
            self.bound = self.hub.queue_bound
            self.lagging_since = None
            tallies = self.hub.written
            tallies.append(self.unsent)
            self.unsent = [0] * SLOTS
            if self.unsent_batches:
                tallies.extend(self.unsent_batches)
                self.unsent_batches = []
        return written

    def write_direct(self, frame: str) -> bool:
        """Write ``frame`` straight to the socket (``write_one``) if nothing is queued, no send of the writer is in
        flight (so nothing is overtaken) and the connection takes it without waiting; False: nothing written, the
        caller queues it. The caller counts what is written (the batched flush: once per frame for all clients)."""
        write = self.write_one
        if write is None or self.queue or self.sending_since is not None or self.closed:
            return False
        try:
            return write(frame)
        except Exception as err:  # noqa: BLE001 - queued instead: the writer meets the error and drops the client
            log.debug("client %s direct write failed: %r", self.id, err)
            return False

    def take_unsent(self) -> list[Sequence[int]]:
        """The tallies of the queued events, reset (the caller counts them as sent or dropped)."""
        tallies: list[Sequence[int]] = [self.unsent, *self.unsent_batches]
        self.unsent = [0] * SLOTS
        self.unsent_batches = []
        return tallies

    def _overflow(self, channel: int | None, counts: Sequence[int] | None) -> None:
        hub = self.hub
        lost = 1
        if channel is not None:
            hub.dropped[channel] += 1
            if counts is not None:
                _add(hub.dropped, counts)
        if self.lagging_since is None:
            self.lagging_since = time.monotonic()
            lost += len(self.queue)
            self.queue.clear()
            self.bound = self.hub.queue_bound
            hub.count_dropped(self.take_unsent())
            self.queue.append(control("lagging", dropped=self.dropped + lost, clientId=self.id))
            self.wake.set()
        self.dropped += lost
        if self.dropped >= hub.max_dropped:
            hub.to_drop.add(self)  # not now: the caller may be iterating a subscriber set

    async def run_writer(self) -> None:
        """Drain the queue in order; the only coroutine that ever sends on this connection.

        With ``send_many`` (the server's multi-frame extension) everything queued goes out in one call, one
        socket write; otherwise frame by frame through ASGI (its events are counted as sent once the queue
        has been emptied, so a discard part-way counts the frames already sent as dropped: an over-count of
        drops on servers without the extension only).
        """
        q = self.queue
        send = self._send
        send_many = self._send_many
        counts: list[Sequence[int]] | None = None
        try:
            while not self.closed:
                if not q:
                    self.lagging_since = None
                    self.wake.clear()
                    await self.wake.wait()
                    continue
                self.sending_since = time.monotonic()
                if send_many is not None:
                    frames = list(q)
                    q.clear()
                    self.bound = self.hub.queue_bound
                    counts = self.take_unsent()
                    await send_many(frames)
                    self.hub.written.extend(counts)
                    counts = None
                else:
                    await send(q.popleft())
                    if not q:
                        self.bound = self.hub.queue_bound
                        self.hub.written.extend(self.take_unsent())
                self.sending_since = None
        except asyncio.CancelledError:
            raise
        except Exception as err:  # the socket is gone: the reader will notice, stop queueing now
            log.debug("client %s writer stopped: %r", self.id, err)
            if counts is not None:
                self.hub.count_dropped(counts)
            self.hub.drop(self, "send_failed")

    @property
    def signature(self) -> frozenset[str]:
        """Subscription set; batched clients with equal signatures share frames (cached until keys change)."""
        sig = self._signature
        if sig is None:
            sig = self._signature = frozenset(self.keys)
        return sig

    def keys_changed(self) -> None:
        """Forget the cached :attr:`signature` (the hub calls this whenever it changes :attr:`keys`)."""
        self._signature = None


class Hub:
    """Routes relayed events to subscribed clients; one per process."""

    def __init__(
        self,
        *,
        queue_bound: int,
        lag_grace_s: float,
        max_dropped: int,
        max_clients: int,
        max_subscriptions: int,
        heartbeat_s: float,
        batch_interval_s: float,
    ) -> None:
        self.queue_bound = queue_bound
        self.lag_grace_s = lag_grace_s
        self.max_dropped = max_dropped
        self.max_clients = max_clients
        self.max_subscriptions = max_subscriptions
        self.heartbeat_s = heartbeat_s
        self.clients: dict[str, Client] = {}
        self.index: dict[str, set[Client]] = {}
        self.batches = Batcher(batch_interval_s, len(CHANNEL_NAMES))
        self.tick_cache: dict[str, str] = {}
        self._sent = [0] * SLOTS  # events written per channel, then batch frames (see `sent`)
        #: per-write tallies of written events (a list append per write), folded into ``_sent`` when read
        self.written: list[Sequence[int]] = []
        self.dropped = [0] * SLOTS
        self.relayed = [0] * len(CHANNEL_NAMES)
        self._latency = [relay_latency(name) for name in CHANNEL_NAMES]
        self.to_drop: set[Client] = set()
        self.pending: list[Client] = []  # clients given frames by put() since the last kick()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def sent(self) -> list[int]:
        """Events written to clients per metrics slot since the metrics were last flushed."""
        self._fold_written()
        return self._sent

    def _fold_written(self) -> None:
        """Add the per-write tallies to ``_sent`` (they are kept as a list append per write, folded here)."""
        totals = self._sent
        for counts in self.written:
            _add(totals, counts)
        self.written.clear()

    def count_dropped(self, tallies: Iterable[Sequence[int]]) -> None:
        """Count the events of discarded frames (their tallies, :meth:`Client.take_unsent`) as dropped."""
        for counts in tallies:
            _add(self.dropped, counts)

    # ---- lifecycle ---------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the heartbeat/sweep and batch-flush tasks."""
        self._tasks = [asyncio.create_task(self._sweep_loop()), asyncio.create_task(self._batch_loop())]

    async def stop(self) -> None:
        """Stop background tasks and disconnect everyone."""
        for task in self._tasks:
            task.cancel()
        for client in list(self.clients.values()):
            self.drop(client, "shutdown")
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._flush_metrics()

    def register(self, client: Client) -> bool:
        """Admit ``client`` unless the process is at ``max_clients``; starts its writer."""
        if len(self.clients) >= self.max_clients:
            return False
        self.clients[client.id] = client
        client.writer = asyncio.create_task(client.run_writer())
        WS_CLIENTS.inc()
        return True

    def drop(self, client: Client, reason: str) -> None:
        """Disconnect ``client`` now (idempotent): no more queueing, writer cancelled, endpoint woken."""
        if client.closed:
            return
        client.closed = True
        client.close_reason = reason
        self._leave(client)
        client.keys.clear()
        client.keys_changed()
        if self.clients.pop(client.id, None) is not None:
            WS_CLIENTS.dec()
        WS_DISCONNECTS.labels(reason).inc()
        if client.writer is not None and client.writer is not asyncio.current_task():
            client.writer.cancel()
        client.queue.clear()
        unsent = client.take_unsent()
        if reason in ("lagging", "send_failed"):  # never delivered because of the client; a close just ends
            self.count_dropped(unsent)
        client.gone.set()

    # ---- subscriptions -----------------------------------------------------------------------------------------

    def subscribe(self, client: Client, keys: Iterable[str], batch: bool | None = None) -> list[str]:
        """Add ``keys`` (and switch mode if ``batch`` says so); the keys really added (not already subscribed).

        Raises ValueError beyond ``max_subscriptions``."""
        new = [k for k in dict.fromkeys(keys) if k not in client.keys]
        if len(client.keys) + len(new) > self.max_subscriptions:
            msg = (
                f"subscription limit is {self.max_subscriptions} per connection; "
                f"have {len(client.keys)}, asked for {len(new)} more"
            )
            raise ValueError(msg)
        if batch is not None and batch != client.batch:
            if client.batch:  # to direct: what was buffered for its next batch frame goes out first
                self._send_pending_batch(client)
            else:
                self._leave(client)
            client.batch = batch
            self._index(client, client.keys)
        client.keys.update(new)
        client.keys_changed()
        self._index(client, new)
        return new

    def unsubscribe(self, client: Client, keys: Iterable[str]) -> None:
        """Remove ``keys`` (those not subscribed are ignored)."""
        gone = [k for k in dict.fromkeys(keys) if k in client.keys]
        client.keys.difference_update(gone)
        client.keys_changed()
        self._unindex(client, gone)

    def _index(self, client: Client, keys: Collection[str]) -> None:
        """Start routing ``keys`` (already in ``client.keys``) to ``client``; in batched mode from the next event
        on, per key (an added key gets no buffered event older than its subscribe snapshot)."""
        if client.batch:
            if keys:
                self.batches.add(client, keys)
            return
        for k in keys:
            self.index.setdefault(k, set()).add(client)

    def _unindex(self, client: Client, keys: Iterable[str]) -> None:
        """Stop routing ``keys``, already removed from ``client.keys``, to ``client``; a batched client without
        keys leaves the batcher."""
        if client.batch:
            if not client.keys:
                self.batches.discard(client)
            return
        for k in keys:
            members = self.index.get(k)
            if members is not None:
                members.discard(client)
                if not members:
                    del self.index[k]

    def _leave(self, client: Client) -> None:
        """Stop routing anything to ``client`` (it is dropped, or changes mode); ``client.keys`` stay as they are."""
        if client.batch:
            self.batches.discard(client)
        else:
            self._unindex(client, client.keys)  # the direct index does not look at client.keys

    # ---- fan-out -----------------------------------------------------------------------------------------------

    def publish(self, events: list[Event]) -> None:
        """Deliver a batch of relayed events (called on the loop by the relay thread)."""
        now = now_ms()
        index = self.index
        relayed = self.relayed
        tick_cache = self.tick_cache
        batches = self.batches
        buffering = batches.active
        event_ms: list[list[int]] = [[] for _ in CHANNEL_NAMES]
        for ev in events:
            ch = ev.channel
            relayed[ch] += 1
            if ch == TICKS:
                tick_cache[ev.ticker] = ev.frame
            event_ms[ch].append(ev.event_ms)
            direct = index.get(ev.key)
            if direct:
                for c in direct:
                    c.put(ev.frame, ch)
            wild = index.get(ev.wildcard)
            if wild:
                for c in wild:
                    if direct is None or c not in direct:
                        c.put(ev.frame, ch)
            if buffering:
                batches.append(ev)
        self.kick()
        self._drop_pending()
        for ch, stamps in enumerate(event_ms):
            if stamps:
                hist = self._latency[ch]
                # observing every value costs ~1 us each; a sample of each batch keeps the distribution
                step = max(1, len(stamps) // 64)
                for ms in stamps[::step]:
                    hist.observe((now - ms) / 1000.0)

    def _send_pending_batch(self, client: Client) -> None:
        pending = self.batches.release(client)
        if pending is not None:
            client.offer(pending[0], BATCH, pending[1])

    def flush_batches(self, phase: int | None = None) -> None:
        """Send the batched clients of ``phase`` (all if ``None``) one frame with their events since their last.

        A client with nothing queued and no send in flight gets the frame written to its socket here
        (:meth:`Client.write_direct`: nothing can be overtaken); any other is given it by :meth:`Client.put`.
        The written frames are tallied once per frame, not per client: at 1,000 clients x 40 frames/s the
        per-client queue-and-kick path was a third of the event loop's time (docs/benchmarks.md, session 18).
        """
        written = self.written
        for frame, members, counts in self.batches.take(phase):
            n = 0
            for c in members:
                if c.write_direct(frame):
                    n += 1
                else:
                    c.put(frame, BATCH, counts)
            if n:
                tally = [k * n for k in counts]
                tally.append(n)
                written.append(tally)
        self.kick()
        if len(written) >= 4096:  # kick() folds them too, but not when every client was written here
            self._fold_written()
        self._drop_pending()

    def kick(self) -> None:
        """Hand each client's frames queued by :meth:`Client.put` to its socket in one write, here, if the
        connection takes them without waiting and its writer is idle (so nothing can overtake frames the writer
        holds); otherwise wake the writer. Saves a task switch per client and fan-out."""
        pending = self.pending
        if not pending:
            return
        self.pending = []
        for c in pending:
            if not c.closed and c.queue and not c.write_queue():
                c.wake.set()
        if len(self.written) >= 4096:  # fold the tallies now and then, not only at the next metrics flush
            self._fold_written()

    def _drop_pending(self) -> None:
        if self.to_drop:
            for client in self.to_drop:
                self.drop(client, "lagging")
            self.to_drop.clear()

    async def _batch_loop(self) -> None:
        """One phase per tick on a fixed cadence (a flush's own duration is not added to the period), so each
        batched client gets a frame every ``batch_interval_s``."""
        step = self.batches.step_s
        phases = self.batches.phases
        phase = 0
        next_at = time.monotonic() + step
        while True:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            try:
                self.flush_batches(phase)
            except Exception:  # never let one bad frame stop batching for everyone
                log.exception("batch flush failed")
            phase = (phase + 1) % phases
            next_at += step
            now = time.monotonic()
            if next_at < now:  # fell behind (a stalled loop): restart the cadence rather than burst
                next_at = now + step

    # ---- housekeeping ------------------------------------------------------------------------------------------

    async def _sweep_loop(self) -> None:
        last_beat = time.monotonic()
        while True:
            await asyncio.sleep(min(1.0, self.heartbeat_s))
            now = time.monotonic()
            beat = now - last_beat >= self.heartbeat_s
            if beat:
                last_beat = now
                frame = control("heartbeat")
            for client in list(self.clients.values()):
                stuck = client.sending_since is not None and now - client.sending_since > self.lag_grace_s
                lagging = client.lagging_since is not None and now - client.lagging_since > self.lag_grace_s
                if stuck or lagging:
                    self.drop(client, "lagging")
                elif beat:
                    client.offer(frame)
            self._drop_pending()
            self._flush_metrics()

    def _flush_metrics(self) -> None:
        sent = self.sent
        for ch, name in enumerate(WS_CHANNELS):
            if sent[ch]:
                WS_SENT.labels(name).inc(sent[ch])
                sent[ch] = 0
            if self.dropped[ch]:
                WS_DROPPED.labels(name).inc(self.dropped[ch])
                self.dropped[ch] = 0
        for ch, name in enumerate(CHANNEL_NAMES):
            if self.relayed[ch]:
                RELAY_MESSAGES.labels(name).inc(self.relayed[ch])
                self.relayed[ch] = 0


def _add(into: list[int], counts: Sequence[int]) -> None:
    """``into[i] += counts[i]`` for every non-zero count."""
    for i, n in enumerate(counts):
        if n:
            into[i] += n
