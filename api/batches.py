"""Batched WebSocket mode: which events each batched client gets in its next frame, and when.

Every batched client receives one ``{"type":"batch","events":[...]}`` frame per ``interval``. Flushing all of
them at the same instant writes to every socket in one burst: with 1,000 clients that burst took 15–25 ms of
the event loop (a ``send(2)`` per client), so the clients written last always got their frame that much later
and the relay waited behind it. The clients are therefore spread over *phases* of about 5 ms: each tick of the
flush timer serves one phase, and each client still gets a frame every ``interval`` carrying the events since
its previous one. Clients of the same phase with the same subscriptions share one serialised frame.

Events are kept once, in arrival order, with a position per phase; the buffer holds at most one interval of
events (every phase flushes once per interval) and is trimmed after each flush.

A subscription added to a batched client (its first ones, or more later) starts at the stream position of the
subscribe: buffered events older than that are not sent for it, because the subscribe snapshot already carried
the latest tick (an older buffered one would repeat it, or arrive after it). The join positions are kept per
subscription key until the client's next frame.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Final

from common.clock import now_ms

if TYPE_CHECKING:
    from api.hub import Client, Event

#: target spacing of flush ticks; an interval of 25 ms gives 5 phases
PHASE_S: Final = 0.005
#: at most this many phases (long intervals): clients of one phase share frames, so not too thin a slice
MAX_PHASES: Final = 10
_NONE: Final[frozenset[tuple[str, int]]] = frozenset()


def batch_frame(parts: list[str]) -> str:
    """The ``{"type":"batch","count","timestamp","events":[...]}`` frame of already serialised messages."""
    return '{"type":"batch","count":%d,"timestamp":%d,"events":[%s]}' % (  # noqa: UP031 - hot path
        len(parts),
        now_ms(),
        ",".join(parts),
    )


class Batcher:
    """Phases, members and buffered events of batched mode (single-threaded, on the event loop)."""

    def __init__(self, interval_s: float, channels: int) -> None:
        self.phases = max(1, min(MAX_PHASES, round(interval_s / PHASE_S)))
        self.step_s = interval_s / self.phases
        self.channels = channels
        self.members: list[set[Client]] = [set() for _ in range(self.phases)]
        self.phase_of: dict[Client, int] = {}
        self.buffer: list[Event] = []
        self.base = 0  # position of buffer[0] in the stream of events since start
        self.sent_to = [0] * self.phases  # stream position each phase has been sent up to
        #: per client, the stream position at which each of its newer subscription keys was added, until the
        #: client's next frame: no older event is sent for that key
        self.joined: dict[Client, dict[str, int]] = {}
        self._next = 0

    @property
    def active(self) -> bool:
        """Whether any client is batched (events are buffered only then)."""
        return bool(self.phase_of)

    def add(self, client: Client, keys: Iterable[str]) -> None:
        """Batch ``client``'s subscription ``keys`` from the next event on; a new client gets a phase (dealt
        round-robin so phases stay the same size)."""
        if client not in self.phase_of:
            phase = self._next
            self._next = (phase + 1) % self.phases
            self.phase_of[client] = phase
            self.members[phase].add(client)
        position = self.base + len(self.buffer)
        self.joined.setdefault(client, {}).update(dict.fromkeys(keys, position))

    def discard(self, client: Client) -> None:
        """Stop batching ``client`` (idempotent)."""
        phase = self.phase_of.pop(client, None)
        if phase is not None:
            self.members[phase].discard(client)
        self.joined.pop(client, None)

    def append(self, event: Event) -> None:
        """Buffer one relayed event for every phase's next frame."""
        self.buffer.append(event)

    def take(self, phase: int | None = None) -> list[tuple[str, list[Client], list[int]]]:
        """The frames of ``phase`` (every phase if ``None``): ``(frame, clients, events per channel)`` for each
        subscription set (and join point) with something to send. Advances the phase(s), trims the buffer."""
        end = self.base + len(self.buffer)
        phases = range(self.phases) if phase is None else (phase,)
        out: list[tuple[str, list[Client], list[int]]] = []
        joined = self.joined
        for p in phases:
            start, self.sent_to[p] = self.sent_to[p], end
            members = self.members[p]
            if not members or start == end:
                continue
            groups: dict[tuple[frozenset[str], frozenset[tuple[str, int]]], list[Client]] = {}
            for c in members:
                signature = c.signature
                late: frozenset[tuple[str, int]] = _NONE
                if joined:
                    keys = joined.pop(c, None)
                    if keys:  # only keys still subscribed and joined after this phase's last frame matter
                        late = frozenset((k, at) for k, at in keys.items() if at > start and k in signature)
                groups.setdefault((signature, late), []).append(c)
            events = self.buffer[start - self.base :]  # once per phase, shared by its groups
            for (signature, late), clients in groups.items():
                frame = self._frame(events, start, signature, dict(late))
                if frame is not None:
                    out.append((frame[0], clients, frame[1]))
        low = min(self.sent_to)
        if low > self.base:
            del self.buffer[: low - self.base]
            self.base = low
        return out

    def release(self, client: Client) -> tuple[str, list[int]] | None:
        """Stop batching ``client`` (it switches to direct mode) and return the frame of what it has not been sent
        yet, with its events per channel (None: nothing pending), so that switching mode loses nothing."""
        phase = self.phase_of.get(client)
        if phase is None:
            return None
        start = self.sent_to[phase]
        joined = self.joined.get(client) or {}
        late = {k: at for k, at in joined.items() if at > start and k in client.signature}
        frame = self._frame(self.buffer[start - self.base :], start, client.signature, late)
        self.discard(client)
        return frame

    def _frame(
        self, events: list[Event], start: int, signature: frozenset[str], late: dict[str, int]
    ) -> tuple[str, list[int]] | None:
        """The batch frame of ``events`` (the buffer from stream position ``start`` on) for ``signature``; an event
        is left out when every key of the signature it matches was added after it (``late``: key -> position)."""
        counts = [0] * self.channels
        parts: list[str] = []
        if not late:
            for ev in events:
                if ev.key in signature or ev.wildcard in signature:
                    parts.append(ev.frame)
                    counts[ev.channel] += 1
        else:
            for position, ev in enumerate(events, start):
                if (ev.key in signature and late.get(ev.key, start) <= position) or (
                    ev.wildcard in signature and late.get(ev.wildcard, start) <= position
                ):
                    parts.append(ev.frame)
                    counts[ev.channel] += 1
        if not parts:
            return None
        return batch_frame(parts), counts
