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
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from common.clock import to_ms
from common.errors import ConfigError
from simulator.session import parse_time

if TYPE_CHECKING:
    from simulator.engine import TickEngine

EventKind = Literal["jump", "volume", "regime", "delay"]
_PATTERN = re.compile(
    r"^(?P<ticker>[A-Za-z0-9._*-]+):(?P<kind>jump|volume|regime|delay):(?P<value>[^@]+)@(?P<at>[^/]+)"
    r"(?:/(?P<dur>\d+[smh]))?$"
)
MAX_DELAY_MS = 3_600_000
_UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000}


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

    def __call__(self, engine: TickEngine, block_start_ms: int) -> None:
        """Apply every event due by ``block_start_ms``; end volume bursts that are over."""
        if self._base_volume is None:
            self._base_volume = engine._tick_volume.copy()
        for col, until in list(self._volume_until.items()):
            if block_start_ms >= until:
                engine._tick_volume[col] = self._base_volume[col]
                del self._volume_until[col]
        for col, until in list(self._delay_until.items()):
            if block_start_ms >= until:
                engine.stamp_delay[col] = 0
                del self._delay_until[col]
        while self._pending and self._pending[0].at_ms <= block_start_ms:
            event = self._pending.pop(0)
            if event.kind == "regime":
                engine.model.stressed = event.value > 0
            else:
                col = self._index[event.ticker]
                if event.kind == "jump":
                    engine._x[col] += math.log1p(event.value)
                elif event.kind == "delay":
                    engine.stamp_delay[col] = int(event.value)
                    self._delay_until[col] = block_start_ms + max(event.duration_ms, engine.block_ms)
                else:
                    engine._tick_volume = engine._tick_volume.copy()  # never write into the universe's array
                    engine._tick_volume[col] = self._base_volume[col] * event.value
                    self._volume_until[col] = block_start_ms + max(event.duration_ms, engine.block_ms)
            self.applied.append((block_start_ms, event))
