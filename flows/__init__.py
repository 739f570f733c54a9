"""Bytewax dataflows of the platform and their pure logic.

- ``flows.bars``: ticks -> OHLCV/VWAP bars and indicators per ticker and timeframe (``docs/flows.md``).
- ``flows.decode``, ``flows.partial``, ``flows.aggregation``, ``flows.shards``, ``flows.indicators``: the pure
  logic, importable and testable without Bytewax, Kafka or a database.
- ``flows.settings``: ``FlowSettings`` (env prefix ``FLOW_``).
"""
