"""The Kafka source's consumer configuration (no broker: the consumer is a stub)."""

from __future__ import annotations

from typing import Any

import pytest

import flows.sources as sources


class _Consumer:
    configs: list[dict[str, Any]] = []

    def __init__(self, config: dict[str, Any]) -> None:
        _Consumer.configs.append(config)

    def assign(self, parts: list[Any]) -> None:
        pass


@pytest.mark.parametrize(("kwargs", "group"), [({}, "bytewax-managed-offsets"), ({"group_id": "e2e-1"}, "e2e-1")])
def test_source_uses_the_configured_group_id(
    monkeypatch: pytest.MonkeyPatch, kwargs: dict[str, Any], group: str
) -> None:
    _Consumer.configs = []
    monkeypatch.setattr(sources, "Consumer", _Consumer)
    sources.RawKafkaSource("localhost:1", "market-ticks", **kwargs).build_part("in", "market-ticks#0", None)
    assert _Consumer.configs[0]["group.id"] == group
    assert _Consumer.configs[0]["enable.auto.commit"] is False


def test_flow_settings_read_the_consumer_group(monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.settings import FlowSettings

    monkeypatch.setenv("FLOW_CONSUMER_GROUP", "bars-test")
    assert FlowSettings().consumer_group == "bars-test"


def test_source_fetches_large_batches_per_partition_unless_overridden(monkeypatch: pytest.MonkeyPatch) -> None:
    _Consumer.configs = []
    monkeypatch.setattr(sources, "Consumer", _Consumer)
    sources.RawKafkaSource("localhost:1", "market-ticks").build_part("in", "market-ticks#0", None)
    extra = {"max.partition.fetch.bytes": 65_536}
    sources.RawKafkaSource("localhost:1", "market-ticks", extra_config=extra).build_part("in", "market-ticks#1", None)
    assert _Consumer.configs[0]["max.partition.fetch.bytes"] == sources.MAX_PARTITION_FETCH_BYTES > 1024 * 1024
    assert _Consumer.configs[1]["max.partition.fetch.bytes"] == 65_536
