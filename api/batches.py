"""Batched WebSocket mode: which events each batched client gets in its next frame, and when.

Every batched client receives one ``{"type":"batch","events":[...]}`` frame per ``interval``. Flushing all of
them at the same instant writes to every socket in one burst: with 1,000 clients that burst took 15–25 ms of
the event loop (a ``send(2)`` per client), so the clients written last always got their frame that much later
and the relay waited behind it. The clients are therefore spread over *phases* of about 5 ms: each tick of the
flush timer serves one phase, and each client still gets a frame every ``interval`` carrying the events since
its previous one. Clients of the same phase with the same subscriptions share one serialised frame.

Events are kept once, in arrival order, with a position per phase; the buffer holds at most one interval of
events (every phase flushes once per interval) and is trimmed after each flush.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from common.clock import now_ms

if TYPE_CHECKING:
    from api.hub import Client, Event

#: target spacing of flush ticks; an interval of 25 ms gives 5 phases
PHASE_S: Final = 0.005
#: at most this many phases (long intervals): clients of one phase share frames, so not too thin a slice
MAX_PHASES: Final = 10


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
        #: stream position at which a client joined, until its first frame: it gets nothing older (its
        #: subscribe snapshot already carried the latest tick; an older buffered one would repeat it)
        self.joined: dict[Client, int] = {}
        self._next = 0

    @property
    def active(self) -> bool:
        """Whether any client is batched (events are buffered only then)."""
        return bool(self.phase_of)

    def add(self, client: Client) -> None:
        """Batch ``client`` from the next event on (idempotent); phases are dealt round-robin so they stay the
        same size."""
        if client in self.phase_of:
            return
        phase = self._next
        self._next = (phase + 1) % self.phases
        self.phase_of[client] = phase
        self.members[phase].add(client)
        self.joined[client] = self.base + len(self.buffer)

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
            groups: dict[tuple[frozenset[str], int], list[Client]] = {}
            for c in members:
                since = joined.pop(c, start) if joined else start
                groups.setdefault((c.signature, max(since, start)), []).append(c)
            for (signature, since), clients in groups.items():
                frame = self._frame(self.buffer[since - self.base :], signature)
                if frame is not None:
                    out.append((frame[0], clients, frame[1]))
        low = min(self.sent_to)
        if low > self.base:
            del self.buffer[: low - self.base]
            self.base = low
        return out

    def _frame(self, events: list[Event], signature: frozenset[str]) -> tuple[str, list[int]] | None:
        counts = [0] * self.channels
        parts: list[str] = []
        for ev in events:
            if ev.key in signature or ev.wildcard in signature:
                parts.append(ev.frame)
                counts[ev.channel] += 1
        if not parts:
            return None
        frame = '{"type":"batch","count":%d,"timestamp":%d,"events":[%s]}' % (  # noqa: UP031 - hot path
            len(parts),
            now_ms(),
            ",".join(parts),
        )
        return frame, counts
