"""Scheduled events injected into the simulation on demand: price jumps, volume bursts, regime switches, a
delayed feed.

They exist so the anomaly detectors can be exercised deterministically (a test injects one +8 % jump and
expects exactly one price-spike alert; a delay raises one high-latency alert). An event is written
``TICKER:KIND:VALUE@TIME[/DURATION]``:

* ``TECH:jump:+8%@2026-01-05T10:00Z`` — the log price of TECH moves by ``log(1.08)`` and stays there (a Merton
  jump of a chosen size; the path goes on from the new level);
* ``TECH:volume:x5@2026-01-05T10:00Z/5m`` — TECH's mean tick volume is multiplied by 5 for five minutes
  (duration ``Ns``/``Nm``/``Nh``, default one block);
* ``*:regime:stressed@2026-01-05T10:00Z`` (or ``calm``) — the market's calm/stressed regime switches now; the
  model's own Markov switching continues from there. Only tickers with ``regime: true`` in the universe react;
* ``TECH:delay:500ms@2026-01-05T10:00Z/2m`` — for two minutes (default one block) TECH's ticks are stamped
  500 ms (``Nms`` or ``Ns``, up to an hour) before they are produced, as a vendor feed delivering late looks
  to the pipeline; prices, order and pacing are unchanged. Beyond the bars flow's grace the ticks are late.

Events act at block boundaries of the engine (one simulated minute by default): an event takes effect at the
first block that starts at or after its time. They consume no random numbers, so everything else in the stream
— other tickers, other times — stays byte-identical to the run without events.

Events before the start. An event whose block starts before the engine's start (``TickEngine.start_ms``: the
requested start of a fresh stream, or the resume point of a resumed ``run``) belongs to history that was either
never produced (fresh start) or already produced, with the event applied, by the run being continued (resume):
a jump or regime switch there is dropped with a warning, so the same ``--inject`` given again after a restart
does not act twice; a volume burst or delay still running at the start goes on until its original end (as the
continued run would have had it), one already over is dropped with the warning.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from common.clock import from_ms, to_ms
from common.errors import ConfigError
from simulator.session import block_starts, parse_time

if TYPE_CHECKING:
    from simulator.engine import TickEngine

EventKind = Literal["jump", "volume", "regime", "delay"]
_PATTERN = re.compile(
    r"^(?P<ticker>[A-Za-z0-9._*-]+):(?P<kind>jump|volume|regime|delay):(?P<value>[^@]+)@(?P<at>[^/]+)"
    r"(?:/(?P<dur>\d+[smh]))?$"
)
MAX_DELAY_MS = 3_600_000
_UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000}
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class MarketEvent:
    """One scheduled event; ``value`` is the jump as a fraction (0.08), the volume multiple, 1/0 for regime, or
    the delay in ms."""

    ticker: str
    kind: EventKind
    value: float
    at_ms: int
    duration_ms: int = 0


def parse_event(text: str) -> MarketEvent:
    """Parse ``TICKER:KIND:VALUE@TIME[/DURATION]``; :class:`ConfigError` quotes the text and what is wrong."""
    m = _PATTERN.match(text.strip())
    if m is None:
        msg = f"event {text!r} is not TICKER:jump|volume|regime|delay:VALUE@ISO-TIME[/DURATION]"
        raise ConfigError(msg)
    ticker, kind, value, at_text, dur = (m["ticker"].upper(), m["kind"], m["value"].strip(), m["at"], m["dur"])
    try:
        at_ms = to_ms(parse_time(at_text))
    except ValueError as err:
        msg = f"event {text!r}: time {at_text!r} is not ISO-8601"
        raise ConfigError(msg) from err
    duration_ms = int(dur[:-1]) * _UNIT_MS[dur[-1]] if dur else 0
    if kind == "jump":
        jm = re.fullmatch(r"([+-]?\d+(?:\.\d+)?)%", value)
        pct = float(jm[1]) if jm else math.nan
        if not (jm and -100 < pct <= 1000):
            msg = f"event {text!r}: a jump is a percentage above -100%, e.g. +8% or -5.5%"
            raise ConfigError(msg)
        return MarketEvent(ticker, "jump", pct / 100.0, at_ms)
    if kind == "volume":
        vm = re.fullmatch(r"x(\d+(?:\.\d+)?)", value)
        mult = float(vm[1]) if vm else 0.0
        if not (vm and 0 < mult <= 10_000):
            msg = f"event {text!r}: a volume event is a positive multiple such as x5"
            raise ConfigError(msg)
        return MarketEvent(ticker, "volume", mult, at_ms, duration_ms)
    if kind == "delay":
        dm = re.fullmatch(r"(\d+)(ms|s)", value)
        delay = int(dm[1]) * (1 if dm[2] == "ms" else 1_000) if dm else 0
        if not (dm and 0 < delay <= MAX_DELAY_MS):
            msg = f"event {text!r}: a delay is a duration such as 500ms or 3s, at most an hour"
            raise ConfigError(msg)
        return MarketEvent(ticker, "delay", float(delay), at_ms, duration_ms)
    if value not in ("stressed", "calm"):
        msg = f"event {text!r}: a regime event is 'stressed' or 'calm'"
        raise ConfigError(msg)
    if ticker != "*":
        msg = f"event {text!r}: the regime is market-wide, write it *:regime:{value}@..."
        raise ConfigError(msg)
    return MarketEvent("*", "regime", 1.0 if value == "stressed" else 0.0, at_ms)


class EventSchedule:
    """Applies events to a :class:`~simulator.engine.TickEngine` before each block (its ``before_block`` hook)."""

    def __init__(self, events: list[MarketEvent], symbols: list[str]) -> None:
        index = {s: i for i, s in enumerate(symbols)}
        unknown = sorted({e.ticker for e in events if e.kind != "regime" and e.ticker not in index})
        if unknown:
            msg = f"events name tickers not in the universe: {unknown}"
            raise ConfigError(msg)
        self._pending = sorted(events, key=lambda e: e.at_ms)
        self._index = index
        self._volume_until: dict[int, int] = {}  # ticker column -> end of its volume burst (ms)
        self._delay_until: dict[int, int] = {}  # ticker column -> end of its feed delay (ms)
        self._base_volume: np.ndarray | None = None
        self.applied: list[tuple[int, MarketEvent]] = []  # (block start, event): what happened when
        self.dropped: list[MarketEvent] = []  # events before the engine's start (see the module docstring)

    def __call__(self, engine: TickEngine, block_start_ms: int) -> None:
        """Apply every event due by ``block_start_ms``; end volume bursts and delays that are over.

        At the first block, events before the engine's start are handled as the module docstring says.
        """
        first = self._base_volume is None
        if self._base_volume is None:
            self._base_volume = engine._tick_volume.copy()
        base = self._base_volume
        for col, until in list(self._volume_until.items()):
            if block_start_ms >= until:
                engine._tick_volume[col] = base[col]
                del self._volume_until[col]
        for col, until in list(self._delay_until.items()):
            if block_start_ms >= until:
                engine.stamp_delay[col] = 0
                del self._delay_until[col]
        stale: list[MarketEvent] = []
        while self._pending and self._pending[0].at_ms <= block_start_ms:
            event = self._pending.pop(0)
            acts_at = block_start_ms
            if first and event.at_ms < engine.start_ms:
                acts_at, _ = next(block_starts(engine.session, event.at_ms, engine.block_ms))
                still_on = event.kind in ("volume", "delay") and self._until(engine, event, acts_at) > block_start_ms
                if acts_at < engine.start_ms and not still_on:
                    stale.append(event)
                    continue
            self._apply(engine, event, acts_at, base)
            self.applied.append((block_start_ms, event))
        if stale:
            self.dropped += stale
            log.warning(
                "dropping %d event(s) that act before the start %s (already applied by the run this one resumes,"
                " or before the stream): %s",
                len(stale),
                from_ms(engine.start_ms).isoformat(),
                ", ".join(f"{e.ticker}:{e.kind}@{from_ms(e.at_ms).isoformat()}" for e in stale),
            )

    @staticmethod
    def _until(engine: TickEngine, event: MarketEvent, acts_at: int) -> int:
        """End of a volume burst or delay that starts acting at block ``acts_at``."""
        return acts_at + max(event.duration_ms, engine.block_ms)

    def _apply(self, engine: TickEngine, event: MarketEvent, acts_at: int, base: np.ndarray) -> None:
        """Apply ``event``, which acts from the block starting at ``acts_at`` (earlier than now: a burst or delay
        that began before a resumed engine's start keeps its original end)."""
        if event.kind == "regime":
            engine.model.stressed = event.value > 0
            return
        col = self._index[event.ticker]
        if event.kind == "jump":
            engine._x[col] += math.log1p(event.value)
        elif event.kind == "delay":
            engine.stamp_delay[col] = int(event.value)
            self._delay_until[col] = self._until(engine, event, acts_at)
        else:
            engine._tick_volume = engine._tick_volume.copy()  # never write into the universe's array
            engine._tick_volume[col] = base[col] * event.value
            self._volume_until[col] = self._until(engine, event, acts_at)
