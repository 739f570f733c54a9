"""common.collector: the collector tuning the flows and the gateway apply at start-up."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from common.collector import tune_collector


@pytest.fixture
def restore_collector() -> Iterator[None]:
    threshold = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


@pytest.mark.usefixtures("restore_collector")
def test_tune_collector_freezes_what_exists_and_raises_the_young_threshold() -> None:
    gc.unfreeze()
    _, gen1, gen2 = gc.get_threshold()
    tune_collector(50_000)
    assert gc.get_threshold() == (50_000, gen1, gen2)
    assert gc.get_freeze_count() > 1000  # at least the modules imported so far
    assert gc.get_count()[0] < 100  # collected just before freezing


@pytest.mark.usefixtures("restore_collector")
def test_tune_collector_zero_keeps_the_threshold() -> None:
    before = gc.get_threshold()
    tune_collector(0)
    assert gc.get_threshold() == before


def test_the_gateway_and_the_flows_read_their_thresholds(monkeypatch: pytest.MonkeyPatch) -> None:
    from api.settings import ApiSettings
    from flows.settings import FlowSettings

    assert ApiSettings().gc_threshold == 50_000
    monkeypatch.setenv("API_GC_THRESHOLD", "0")
    monkeypatch.setenv("FLOW_GC_THRESHOLD", "1234")
    assert ApiSettings().gc_threshold == 0
    assert FlowSettings().gc_threshold == 1234
