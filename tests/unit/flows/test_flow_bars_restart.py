"""A restart from a recovery snapshot in live mode: the downtime must not turn the ticks still to be read late."""

from __future__ import annotations

from flows.aggregation import AggregationConfig, TickChunk, partial_bars
from flows.bars import FinalBars, ShardLogic
from flows.decode import decode_batch
from tests.ticks import tick_bytes

T0 = 1_736_121_600_000  # a whole UTC minute
WALL = 1_800_000_000_000


def _chunks(times: list[int]) -> list[TickChunk]:
    values = [tick_bytes("A", i, t, 100.0, volume=1, bid_size=1, ask_size=1) for i, t in enumerate(times)]
    batch, dead = decode_batch(values, not_after_ms=WALL)
    assert dead == []
    return [chunk for _, chunk in partial_bars(batch, 60_000, 2_000).chunks]


def test_ticks_read_after_a_restart_are_not_late_because_of_the_downtime() -> None:
    config = AggregationConfig(close_on_system_time=True, live_enabled=False)
    before = ShardLogic(config, None, clock=lambda: WALL)
    before.on_batch([_chunks([T0 + 57_000])])
    snapshot = before.snapshot()

    # the process died and came back 6 s later: more than the 2 s grace, and past the window's end + grace
    now = [WALL + 6_000]
    after = ShardLogic(config, snapshot, clock=lambda: now[0])
    out, _ = after.on_batch([_chunks([T0 + 58_000, T0 + 59_500]), _chunks([T0 + 61_000])])
    assert list(out) == [], "no tick is late, and the window is still open (watermark - grace < its end)"
    now[0] += 3_000  # the ticker goes quiet: the clock closes the window grace after its (extrapolated) end
    out, _ = after.on_notify()
    (bars,) = out
    assert isinstance(bars, FinalBars)
    (bar,) = bars
    assert (bar.timeframe, bar.start, bar.trades, bar.final) == ("1m", T0, 3, True)
