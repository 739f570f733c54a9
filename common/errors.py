"""The project's exception hierarchy: one root, a few subclasses per boundary.

Messages are built before raising, name the offending field/topic/offset and show the bad value with ``!r``;
callers chain with ``raise ... from err`` so the original cause stays visible.
"""

from __future__ import annotations


class MarketDataError(Exception):
    """Root of every exception this project raises on purpose."""


class ConfigError(MarketDataError, ValueError):
    """A setting or configuration file is invalid; the message names the field and the value."""


class ContractError(MarketDataError, ValueError):
    """A message does not satisfy the published wire contract (bad JSON, missing field, broken invariant)."""


class StackError(MarketDataError, RuntimeError):
    """A local service (Kafka, PostgreSQL, Redis, Prometheus) could not be installed, started or reached."""


class SinkError(MarketDataError, RuntimeError):
    """Writing to PostgreSQL, Redis or Kafka failed after retries."""


class SourceError(MarketDataError, RuntimeError):
    """Reading a Kafka topic failed (missing topic, broker error) after retries."""
