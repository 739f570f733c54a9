"""Hub fan-out logic with in-memory clients: routing, wildcard de-duplication, lagging, drops, batching."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence

import pytest

from api.hub import ANOMALIES, BARS, BATCH, TICKS, Client, Event, Hub, sub_key
from api.relay import anomaly_event, bar_events, tick_event
from contracts.anomaly import Anomaly, AnomalyType, Severity, encode_anomaly
from contracts.bar import Bar, Indicators, encode_bar
from tests.ticks import tick_bytes


def make_hub(**kw: float) -> Hub:
    args: dict[str, float] = {
        "queue_bound": 8,
        "lag_grace_s": 60.0,
        "max_dropped": 1000,
        "max_clients": 10,
        "max_subscriptions": 5,
        "heartbeat_s": 60.0,
        "batch_interval_s": 60.0,
    }
    args.update(kw)
    return Hub(**args)  # type: ignore[arg-type]


class Sink:
    """A client socket that records frames; ``block`` makes sends hang like a stalled peer."""

    def __init__(self, block: bool = False) -> None:
        self.frames: list[dict[str, object]] = []
        self.block = block

    async def send(self, text: str) -> None:
        if self.block:
            await asyncio.Event().wait()
        self.frames.append(json.loads(text))


def tick(ticker: str, seq: int) -> Event:
    return tick_event(tick_bytes(ticker, seq, 1_700_000_000_000 + seq, 10.0, volume=5, bid_size=1, ask_size=1))


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_routing_and_wildcard_without_duplicates() -> None:
    hub = make_hub()
    a, b = Sink(), Sink()
    ca, cb = Client("a", a.send, hub), Client("b", b.send, hub)
    assert hub.register(ca)
    assert hub.register(cb)
    hub.subscribe(ca, [sub_key(TICKS, "X")])
    hub.subscribe(cb, [sub_key(TICKS, "X"), sub_key(TICKS, "*")])
    hub.publish([tick("X", 1), tick("Y", 2)])
    await settle()
    assert [f["data"]["ticker"] for f in a.frames] == ["X"]  # type: ignore[index]
    assert [f["data"]["ticker"] for f in b.frames] == ["X", "Y"]  # type: ignore[index]
    assert hub.tick_cache.keys() == {"X", "Y"}
    hub.unsubscribe(cb, [sub_key(TICKS, "*")])
    hub.publish([tick("Y", 3)])
    await settle()
    assert len(b.frames) == 2
    await hub.stop()


async def test_overflow_marks_lagging_then_drops_after_bound() -> None:
    hub = make_hub(queue_bound=4, max_dropped=20)
    stalled = Sink(block=True)
    c = Client("s", stalled.send, hub)
    hub.register(c)
    hub.subscribe(c, ["t:X"])
    hub.publish([tick("X", i) for i in range(6)])  # 1 in flight + 4 queued + overflow
    assert c.lagging_since is not None
    assert json.loads(c.queue[0])["type"] == "lagging"
    assert len(c.queue) <= 4
    assert not c.closed
    hub.publish([tick("X", i) for i in range(100)])
    assert c.closed
    assert c.close_reason == "lagging"
    assert "s" not in hub.clients
    assert not hub.index
    await hub.stop()


async def test_subscription_limit() -> None:
    hub = make_hub(max_subscriptions=2)
    c = Client("c", Sink().send, hub)
    hub.register(c)
    hub.subscribe(c, ["t:A", "t:B"])
    with pytest.raises(ValueError, match="subscription limit"):
        hub.subscribe(c, ["t:C"])
    await hub.stop()


async def test_client_limit() -> None:
    hub = make_hub(max_clients=1)
    assert hub.register(Client("1", Sink().send, hub))
    assert not hub.register(Client("2", Sink().send, hub))
    await hub.stop()


async def test_batches_share_one_frame_per_subscription_set() -> None:
    hub = make_hub(batch_interval_s=0.005)  # one phase: every batched client is flushed together
    sinks = [Sink() for _ in range(3)]
    clients = [Client(str(i), s.send, hub) for i, s in enumerate(sinks)]
    for c in clients:
        hub.register(c)
    hub.subscribe(clients[0], ["t:X"], batch=True)
    hub.subscribe(clients[1], ["t:X"], batch=True)
    hub.subscribe(clients[2], ["t:*"], batch=True)
    hub.publish([tick("X", 1), tick("Y", 2), tick("X", 3)])
    hub.flush_batches()
    assert clients[0].queue[0] is clients[1].queue[0]  # serialised once, shared
    await settle()
    seq0 = [e["data"]["timestamp"] % 1000 for e in sinks[0].frames[0]["events"]]  # type: ignore[index,union-attr]
    seq2 = [e["data"]["timestamp"] % 1000 for e in sinks[2].frames[0]["events"]]  # type: ignore[index,union-attr]
    assert seq0 == [1, 3]
    assert seq2 == [1, 2, 3]
    await hub.stop()


def one_minute_bar(final: bool, indicators: Indicators | None = None) -> Bar:
    return Bar(
        ticker="X",
        timeframe="1m",
        start=1_700_000_040_000,
        end=1_700_000_100_000,
        open=1,
        high=2,
        low=1,
        close=2,
        volume=10,
        vwap=1.5,
        trades=3,
        first_tick=1_700_000_040_000,
        last_tick=1_700_000_099_000,
        final=final,
        indicators=indicators,
    )


def test_bar_events_carry_indicators_for_final_bars() -> None:
    bar = one_minute_bar(final=True, indicators=Indicators(rsi_14=50.0))
    events = bar_events(encode_bar(bar))
    assert [e.channel for e in events] == [BARS, 2]
    assert events[0].key == "b:X:1m"
    assert events[0].wildcard == "b:*:1m"
    assert json.loads(events[1].frame)["data"]["rsi_14"] == 50.0


def test_anomaly_event_time_is_when_it_was_detected_not_the_bar_start() -> None:
    anomaly = Anomaly(
        ticker="X",
        type=AnomalyType.PRICE_SPIKE,
        severity=Severity.HIGH,
        timeframe="1m",
        time=1_700_000_040_000,
        value=8.0,
        threshold=5.0,
        detected_at=1_700_000_102_150,
        message="X 1m: close is +8.00%",
    )
    event = anomaly_event(encode_anomaly(anomaly))
    assert (event.channel, event.key, event.wildcard) == (ANOMALIES, "a:X", "a:*")
    assert event.event_ms == anomaly.detected_at  # ws_anomalies latency: detection -> fan-out
    assert json.loads(event.frame)["data"]["time"] == anomaly.time


async def test_batch_frames_are_counted_in_the_batch_slot_not_anomalies() -> None:
    hub = make_hub()
    sinks = [Sink() for _ in range(2)]
    clients = [Client(str(i), s.send, hub) for i, s in enumerate(sinks)]
    for c in clients:
        hub.register(c)
        hub.subscribe(c, ["t:X"], batch=True)
    hub.publish([tick("X", 1), tick("X", 2)])
    hub.flush_batches()
    assert hub.sent == [0] * 5, "queued is not sent"
    await settle()
    assert hub.sent[BATCH] == 2  # one batch frame per client
    assert hub.sent[ANOMALIES] == 0
    assert hub.sent[TICKS] == 4  # two ticks delivered to each of two clients
    await hub.stop()


class DirectSocket:
    """A connection offering ``write_one``: takes a frame now (``accepts``), refuses it, or raises."""

    def __init__(self, accepts: bool = True, fails: bool = False) -> None:
        self.written: list[dict[str, object]] = []
        self.accepts = accepts
        self.fails = fails

    def write_one(self, text: str) -> bool:
        if self.fails:
            raise ConnectionResetError("peer gone")
        if self.accepts:
            self.written.append(json.loads(text))
        return self.accepts


async def test_batched_flush_writes_idle_clients_directly_and_tallies_once_per_frame() -> None:
    hub = make_hub()
    sockets = [DirectSocket() for _ in range(3)]
    sinks = [Sink() for _ in sockets]
    clients = [
        Client(str(i), s.send, hub, write_one=d.write_one) for i, (s, d) in enumerate(zip(sinks, sockets, strict=True))
    ]
    for c in clients:
        hub.register(c)
        hub.subscribe(c, ["t:X"], batch=True)
    hub.publish([tick("X", 1), tick("X", 2)])
    hub.flush_batches()
    # written at once, by the flush itself: no writer task, nothing queued
    stamps = [[e["data"]["timestamp"] - 1_700_000_000_000 for e in d.written[0]["events"]] for d in sockets]  # type: ignore[index]
    assert stamps == [[1, 2]] * 3
    assert all(not c.queue for c in clients)
    assert sinks[0].frames == []
    assert hub.sent[BATCH] == 3
    assert hub.sent[TICKS] == 6
    await hub.stop()


async def test_direct_batched_writes_fold_their_tallies_without_waiting_for_the_metrics_flush() -> None:
    hub = make_hub()
    socket_ = DirectSocket()
    c = Client("a", Sink().send, hub, write_one=socket_.write_one)
    hub.register(c)
    hub.subscribe(c, ["t:X"], batch=True)
    for seq in range(5_000):  # one frame per flush, every one written directly (kick() has nothing to do)
        hub.publish([tick("X", seq)])
        hub.flush_batches()
    assert len(socket_.written) == 5_000
    assert len(hub.written) < 4096, "per-frame tallies are folded as they pile up"
    assert hub.sent[TICKS] == 5_000
    await hub.stop()


async def test_batched_flush_queues_behind_frames_already_queued_and_when_the_socket_refuses() -> None:
    hub = make_hub()
    busy, refusing, failing = DirectSocket(), DirectSocket(accepts=False), DirectSocket(fails=True)
    sinks = [Sink() for _ in range(3)]
    pairs = zip(sinks, (busy, refusing, failing), strict=True)
    clients = [Client(str(i), s.send, hub, write_one=d.write_one) for i, (s, d) in enumerate(pairs)]
    for c in clients:
        hub.register(c)
        hub.subscribe(c, ["t:X"], batch=True)
    clients[0].queue.append('{"type":"pong","timestamp":1}')  # queued earlier: the batch frame must not overtake it
    hub.publish([tick("X", 1)])
    hub.flush_batches()
    assert [busy.written, refusing.written, failing.written] == [[], [], []]
    assert [len(c.queue) for c in clients] == [2, 1, 1]  # handed to each client's writer instead, in order
    assert clients[0].queue[0].startswith('{"type":"pong"')
    assert hub.sent[BATCH] == 0
    await hub.stop()


def test_preregistered_metric_labels_are_the_hub_channels() -> None:
    from api.hub import CHANNEL_NAMES
    from api.metrics import RELAY_CHANNELS, WS_CHANNELS

    assert RELAY_CHANNELS == CHANNEL_NAMES
    assert WS_CHANNELS == (*CHANNEL_NAMES, "batch")  # the order of Hub.sent / Hub.dropped slots
    assert "anomalies" in RELAY_CHANNELS


async def test_batched_clients_are_spread_over_phases_and_each_gets_every_event_once() -> None:
    hub = make_hub(batch_interval_s=0.025, max_clients=20)
    assert hub.batches.phases == 5
    clients = [Client(str(i), Sink().send, hub) for i in range(10)]
    for c in clients:
        hub.register(c)
        hub.subscribe(c, ["t:X"], batch=True)
    got: dict[str, list[int]] = {c.id: [] for c in clients}

    def drain() -> None:
        for c in clients:
            while c.queue:
                frame = json.loads(c.queue.popleft())
                got[c.id] += [e["data"]["timestamp"] % 1000 for e in frame["events"]]

    hub.publish([tick("X", 1), tick("X", 2)])
    hub.flush_batches(0)
    drain()
    served = [c.id for c in clients if got[c.id]]
    assert len(served) == 2, "one phase is a fifth of the clients"
    hub.publish([tick("X", 3)])
    for phase in range(1, 5):
        hub.flush_batches(phase)
    drain()
    for c in clients:
        assert got[c.id] == ([1, 2] if c.id in served else [1, 2, 3]), c.id
    hub.flush_batches(0)  # phase 0 catches up with what arrived after its flush
    drain()
    for c in clients:
        assert got[c.id] == [1, 2, 3], c.id
    assert hub.batches.buffer == [], "events every phase has sent are released"
    hub.publish([tick("X", 4)])
    hub.flush_batches()
    drain()
    assert all(v == [1, 2, 3, 4] for v in got.values())
    await hub.stop()


async def test_leaving_batched_mode_releases_the_phase_slot() -> None:
    hub = make_hub(batch_interval_s=0.025)
    c = Client("a", Sink().send, hub)
    hub.register(c)
    hub.subscribe(c, ["t:X"], batch=True)
    assert hub.batches.active
    hub.unsubscribe(c, ["t:X"])
    assert not hub.batches.active
    hub.publish([tick("X", 1)])
    assert hub.batches.buffer == [], "nothing is buffered without batched clients"
    await hub.stop()


async def test_mode_switches_and_drops_leave_no_routing_behind() -> None:
    hub = make_hub(batch_interval_s=0.025)
    c = Client("a", Sink().send, hub)
    hub.register(c)
    hub.subscribe(c, ["t:X", "t:Y"], batch=True)
    assert hub.batches.active
    assert not hub.index
    hub.subscribe(c, [], batch=False)
    assert not hub.batches.active
    assert hub.index == {"t:X": {c}, "t:Y": {c}}
    hub.subscribe(c, ["t:Z"], batch=True)
    assert hub.batches.phase_of.keys() == {c}
    assert not hub.index
    hub.unsubscribe(c, ["t:X"])
    assert hub.batches.active, "still has keys"
    hub.drop(c, "closed")
    assert not hub.batches.active
    assert not hub.batches.joined
    assert not hub.index
    assert not c.keys
    other = Client("b", Sink().send, hub)
    hub.register(other)
    hub.subscribe(other, ["t:X"])
    hub.drop(other, "closed")
    assert not hub.index
    await hub.stop()


async def test_switching_from_batched_to_direct_sends_what_was_buffered_first() -> None:
    hub = make_hub()  # batch interval 60 s: no frame is flushed on its own during the test
    sink = Sink()
    c = Client("a", sink.send, hub)
    hub.register(c)
    hub.subscribe(c, ["t:X"], batch=True)
    hub.publish([tick("X", 1), tick("Y", 2), tick("X", 2)])
    hub.subscribe(c, [], batch=False)
    hub.publish([tick("X", 3)])
    await settle()
    assert [f["type"] for f in sink.frames] == ["batch", "tick"]
    batched = [e["data"]["ticker"] for e in sink.frames[0]["events"]]  # type: ignore[index,union-attr]
    assert batched == ["X", "X"], "the two buffered X ticks, in order, before the first direct one"
    assert sink.frames[1]["data"]["ticker"] == "X"  # type: ignore[index]
    assert hub.sent[BATCH] == 1
    hub.subscribe(c, [], batch=True)
    hub.subscribe(c, [], batch=False)  # nothing buffered since: no empty frame
    await settle()
    assert len(sink.frames) == 2
    await hub.stop()


async def test_a_client_joining_batched_mode_gets_no_event_from_before_it_joined() -> None:
    hub = make_hub(batch_interval_s=0.005)  # one phase
    early, late = Client("early", Sink().send, hub), Client("late", Sink().send, hub)
    for c in (early, late):
        hub.register(c)
    hub.subscribe(early, ["t:X"], batch=True)
    hub.publish([tick("X", 1)])  # buffered for the next frame; "late" gets it as its subscribe snapshot
    hub.subscribe(late, ["t:X"], batch=True)
    hub.publish([tick("X", 2)])
    hub.flush_batches()

    def seqs(c: Client) -> list[int]:
        frames = [json.loads(f) for f in c.queue]
        return [e["data"]["timestamp"] % 1000 for f in frames for e in f["events"]]

    assert seqs(early) == [1, 2]
    assert seqs(late) == [2], "the event before the subscription is not repeated"
    hub.publish([tick("X", 3)])
    early.queue.clear()
    late.queue.clear()
    hub.flush_batches()
    assert seqs(early) == seqs(late) == [3]
    assert early.queue[0] is late.queue[0], "same subscriptions after the first frame: one shared frame again"
    await hub.stop()


async def test_subscribing_more_while_batched_sends_the_snapshot_once_and_only_later_events() -> None:
    from types import SimpleNamespace

    from api.ws import _send_snapshot

    hub = make_hub(batch_interval_s=0.005)  # one phase
    more, twin, always, wild = (Client(name, Sink().send, hub) for name in ("more", "twin", "always", "wild"))
    for c in (more, twin, always, wild):
        hub.register(c)
    for c in (more, twin, wild):
        hub.subscribe(c, ["t:X"], batch=True)
    hub.subscribe(always, ["t:X", "t:Y"], batch=True)
    hub.publish([tick("X", 1), tick("Y", 2), tick("Y", 3)])  # buffered; Y3 becomes the snapshot of Y
    state = SimpleNamespace(hub=hub, redis=None)  # Y is in the tick cache: Redis is not asked
    for c in (more, twin):
        hub.subscribe(c, ["t:Y"], batch=True)
        await _send_snapshot(c, ["Y"], state)  # type: ignore[arg-type]
    hub.subscribe(wild, ["t:*"], batch=True)
    hub.publish([tick("Y", 4), tick("Z", 5)])
    hub.flush_batches()

    def frames(c: Client) -> list[tuple[str, list[int]]]:
        out = []
        for f in c.queue:
            msg = json.loads(f)
            events = msg["events"] if msg["type"] == "batch" else [msg]
            out.append((msg["type"], [e["data"]["timestamp"] % 1000 for e in events]))
        c.queue.clear()
        return out

    assert frames(more) == [("batch", [3]), ("batch", [1, 4])], "the snapshot once, batched; X1 was due before Y joined"
    assert frames(always) == [("batch", [1, 2, 3, 4])]
    assert frames(wild) == [("batch", [1, 4, 5])], "t:* joined after Y2/Y3: only X1 is older"
    assert more.signature == twin.signature
    hub.publish([tick("X", 6), tick("Y", 7)])
    twin.queue.clear()
    hub.flush_batches()
    assert frames(more) == [("batch", [6, 7])], "later ticks of the added ticker arrive"
    assert twin.queue[0] is always.queue[0], "same subscriptions after the join frame: one shared frame again"
    await hub.stop()


async def test_clients_with_the_same_subscriptions_and_join_point_share_the_join_frame() -> None:
    hub = make_hub(batch_interval_s=0.005)
    a, b = Client("a", Sink().send, hub), Client("b", Sink().send, hub)
    for c in (a, b):
        hub.register(c)
        hub.subscribe(c, ["t:X"], batch=True)
    hub.publish([tick("X", 1), tick("Y", 2)])
    for c in (a, b):
        hub.subscribe(c, ["t:Y"], batch=True)
    hub.publish([tick("Y", 3)])
    hub.flush_batches()
    assert a.queue[0] is b.queue[0]
    assert [e["data"]["timestamp"] % 1000 for e in json.loads(a.queue[0])["events"]] == [1, 3]
    await hub.stop()


class Observed:
    """Stands in for a latency histogram."""

    def __init__(self) -> None:
        self.values: list[float] = []

    def observe(self, value: float) -> None:
        self.values.append(value)


async def test_relay_latency_is_a_sample_of_each_batch_in_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    hub = make_hub()
    now = 1_700_000_001_000
    monkeypatch.setattr("api.hub.now_ms", lambda: now)
    ticks_hist, bars_hist = Observed(), Observed()
    hub._latency[TICKS] = ticks_hist  # type: ignore[call-overload]
    hub._latency[BARS] = bars_hist  # type: ignore[call-overload]
    hub.publish([tick("X", seq) for seq in range(200)])  # event times 1_700_000_000_000 + seq
    step = 200 // 64
    assert ticks_hist.values == [(now - (1_700_000_000_000 + seq)) / 1000.0 for seq in range(0, 200, step)]
    hub.publish([tick("X", 999), tick("Y", 500)])
    assert ticks_hist.values[-2:] == [0.001, 0.5], "small batches are observed in full"
    assert bars_hist.values == []
    assert hub.relayed[TICKS] == 202
    await hub.stop()


class DirectWrite:
    """A ``write_now`` that answers from a script (True, False or an exception) and records what it wrote into
    the same list as the client's ordinary sends, so the order across both paths shows."""

    def __init__(self, delivered: list[dict[str, object]], answers: list[bool | Exception]) -> None:
        self.delivered = delivered
        self.answers = answers
        self.calls = 0

    def __call__(self, texts: Sequence[str]) -> bool:
        self.calls += 1
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        if answer:
            self.delivered.extend(json.loads(t) for t in texts)
        return answer


def seqs_of(frames: list[dict[str, object]]) -> list[int]:
    return [f["data"]["timestamp"] % 1000 for f in frames]  # type: ignore[index]


async def test_kick_writes_directly_when_it_can_and_wakes_the_writer_when_not() -> None:
    hub = make_hub(queue_bound=100)
    sink = Sink()
    direct = DirectWrite(sink.frames, [True, False, OSError("socket gone"), True])
    c = Client("d", sink.send, hub, write_now=direct)
    hub.register(c)
    hub.subscribe(c, ["t:X"])
    await settle()  # the writer task waits for work

    c.lagging_since = 1.0
    hub.publish([tick("X", 1), tick("X", 2)])
    assert direct.calls == 1
    assert seqs_of(sink.frames) == [1, 2], "written at once, in order, from the fan-out itself"
    assert not c.queue
    assert c.lagging_since is None, "a successful write ends lagging"
    assert not c.wake.is_set(), "no task switch needed"

    c.lagging_since = 2.0
    hub.publish([tick("X", 3)])  # the connection cannot take it now: the writer waits for it
    assert direct.calls == 2
    assert seqs_of([json.loads(f) for f in c.queue]) == [3]
    assert c.wake.is_set()
    assert c.lagging_since == 2.0
    hub.publish([tick("X", 4)])  # queued behind 3: not written around the writer
    assert direct.calls == 2
    await settle()
    assert seqs_of(sink.frames) == [1, 2, 3, 4]
    assert not c.queue

    hub.publish([tick("X", 5)])  # the direct write raises: the writer takes the frame and meets the error itself
    assert direct.calls == 3
    assert c.wake.is_set()
    await settle()
    assert seqs_of(sink.frames) == [1, 2, 3, 4, 5]

    c.sending_since = 3.0  # the writer holds frames of its own: a direct write could overtake them
    hub.publish([tick("X", 6)])
    assert direct.calls == 3
    assert c.wake.is_set()
    c.sending_since = None
    await settle()
    assert seqs_of(sink.frames) == [1, 2, 3, 4, 5, 6]

    hub.publish([tick("X", 7)])
    assert direct.calls == 4
    assert seqs_of(sink.frames) == [1, 2, 3, 4, 5, 6, 7]
    assert not c.closed
    await hub.stop()


class Socket:
    """A connection that takes everything at once (``write_now`` succeeds), like a reader that keeps up."""

    def __init__(self) -> None:
        self.frames: list[str] = []

    def write(self, texts: Sequence[str]) -> bool:
        self.frames.extend(texts)
        return True

    async def send_many(self, texts: list[str]) -> None:
        self.frames.extend(texts)

    async def send(self, text: str) -> None:
        self.frames.append(text)


async def test_one_fan_out_larger_than_the_queue_bound_does_not_mark_a_reader_that_keeps_up_lagging() -> None:
    hub = make_hub(queue_bound=16, max_subscriptions=10)
    sock = Socket()
    c = Client("fast", sock.send, hub, sock.send_many, sock.write)
    hub.register(c)
    hub.subscribe(c, ["t:*"])
    hub.publish([tick(f"T{i}", i) for i in range(100)])  # one relayed batch: 100 frames against a bound of 16
    await settle()
    kinds = [json.loads(f)["type"] for f in sock.frames]
    assert kinds == ["tick"] * 100, "every tick, in order, and no lagging notice"
    assert [json.loads(f)["data"]["ticker"] for f in sock.frames] == [f"T{i}" for i in range(100)]
    assert c.lagging_since is None
    assert c.dropped == 0
    assert hub.sent[TICKS] == 100
    assert hub.dropped == [0] * 5
    await hub.stop()


async def test_a_reader_that_does_not_keep_up_is_still_lagging_at_the_bound() -> None:
    hub = make_hub(queue_bound=4, max_dropped=1000)
    c = Client("slow", Sink(block=True).send, hub, None, lambda _texts: False)  # the socket takes nothing now
    hub.register(c)
    hub.subscribe(c, ["t:X"])
    hub.publish([tick("X", i) for i in range(6)])
    assert c.lagging_since is not None
    assert json.loads(c.queue[0])["type"] == "lagging"
    await hub.stop()


async def test_every_event_is_counted_once_sent_or_dropped_under_its_own_channel() -> None:
    hub = make_hub(queue_bound=4, max_dropped=1000)
    c = Client("s", Sink(block=True).send, hub)  # its writer hangs on the first frame it sends
    hub.register(c)
    hub.subscribe(c, ["t:X", "b:X:1m"])
    bar = bar_events(encode_bar(one_minute_bar(final=False)))  # a live bar: one event, no indicators
    hub.publish([*bar, tick("X", 1), tick("X", 2), tick("X", 3), tick("X", 4)])  # 1 bar + 3 ticks fit, 1 overflows
    hub.publish([tick("X", 5)])  # queued behind the lagging notice
    await settle()
    assert hub.sent == [0] * 5, "the writer is stuck on the lagging notice: nothing was written"
    assert (hub.dropped[TICKS], hub.dropped[BARS]) == (4, 1), "the discarded backlog, each under its channel"
    hub.drop(c, "lagging")
    assert hub.dropped[TICKS] == 5, "what was still queued when the lagging client was dropped"
    assert sum(hub.dropped) == 6, "six events, each counted once"
    await hub.stop()


async def test_control_frames_are_not_counted_as_events() -> None:
    hub = make_hub()
    sock = Socket()
    c = Client("c", sock.send, hub, sock.send_many, sock.write)
    hub.register(c)
    c.offer('{"type":"pong"}')
    await settle()
    assert sock.frames == ['{"type":"pong"}']
    assert hub.sent == [0] * 5
    await hub.stop()


async def test_the_events_inside_discarded_batch_frames_are_counted_dropped_under_their_channels() -> None:
    hub = make_hub(queue_bound=2, max_dropped=1000)
    c = Client("s", Sink(block=True).send, hub)  # its writer hangs on the first frame it sends
    hub.register(c)
    hub.subscribe(c, ["t:X"], batch=True)
    for seq in range(3):  # three batch frames of two ticks: two queued, the third overflows
        hub.publish([tick("X", 2 * seq), tick("X", 2 * seq + 1)])
        hub.flush_batches()
    await settle()
    assert hub.sent == [0] * 5
    assert (hub.dropped[BATCH], hub.dropped[TICKS]) == (3, 6), "three frames, each tick once"
    await hub.stop()
