"""Tuning Python's garbage collector for a long-running process that allocates at a high rate.

With Python's default generation-0 threshold (700 allocations), a process allocating hundreds of thousands of
short-lived containers a second collects thousands of times a second, and objects that live a few
milliseconds (a batch, a queued frame) survive those collections and reach the oldest generation, which is
then collected every few seconds, walking every long-lived object. In the gateway that was a 60–200 ms stall
of the event loop every few seconds with 1,000 WebSocket clients connected: the tail of its relay latency
(docs/benchmarks.md, session 17). A larger threshold lets short-lived objects die young.
"""

from __future__ import annotations

import gc


def tune_collector(gen0_threshold: int) -> None:
    """Collect, then freeze what exists (imports, configuration: never collectable, now never walked again),
    and set the generation-0 threshold to ``gen0_threshold`` (0: keep Python's default)."""
    gc.collect()
    gc.freeze()
    if gen0_threshold:
        _, gen1, gen2 = gc.get_threshold()
        gc.set_threshold(gen0_threshold, gen1, gen2)
