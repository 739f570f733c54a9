"""Bytewax dataflows of the platform and their pure logic.

- ``flows.bars``: ticks -> OHLCV/VWAP bars and indicators per ticker and timeframe (``docs/flows.md``).
- ``flows.decode``, ``flows.partial``, ``flows.aggregation``, ``flows.shards``, ``flows.indicators``: the pure
  logic, importable and testable without Bytewax, Kafka or a database.
- ``flows.settings``: ``FlowSettings`` (env prefix ``FLOW_``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bytewax.dataflow import Dataflow


def lazy_flow(module: str, build: Callable[[], Dataflow]) -> Callable[[str], Dataflow]:
    """A module ``__getattr__`` (PEP 562) whose ``flow`` is ``build()``, made on first access: that is what
    ``python -m bytewax.run flows.<name>`` reads, and importing the module for its pure parts builds nothing."""

    def __getattr__(name: str) -> Dataflow:  # noqa: N807 - the module attribute hook
        if name == "flow":
            return build()
        msg = f"module {module!r} has no attribute {name!r}"
        raise AttributeError(msg)

    return __getattr__
