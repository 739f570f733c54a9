"""Tests of :class:`flows.observe.TickCounter`: per-ticker counts with a bounded number of label values."""

from __future__ import annotations

import uuid

from prometheus_client import REGISTRY

from flows.observe import ALL_TICKERS, OTHER_TICKER, TickCounter


def _value(stage: str, ticker: str) -> float:
    value = REGISTRY.get_sample_value("tick_messages_received_total", {"stage": stage, "ticker": ticker})
    return value or 0.0


def test_counts_per_ticker_up_to_the_limit_and_the_rest_as_other() -> None:
    stage = f"test-{uuid.uuid4().hex[:8]}"  # the registry is process-wide: a fresh label value per test
    counter = TickCounter(stage, max_tickers=2)
    batches = [["A", "B", "A", "C", "D", "C"], ["D", "A", "E"]]
    for tickers in batches:
        names = list(dict.fromkeys(tickers))  # first appearance, as DecodedBatch.tally() gives them
        counter.count_tallied(names, [tickers.count(n) for n in names])
    per = {t: _value(stage, t) for t in ("A", "B", "C", "D", "E", OTHER_TICKER)}
    assert per == {"A": 3.0, "B": 1.0, "C": 0.0, "D": 0.0, "E": 0.0, OTHER_TICKER: 5.0}


def test_no_per_ticker_labels_when_the_limit_is_zero() -> None:
    stage = f"test-{uuid.uuid4().hex[:8]}"
    counter = TickCounter(stage, max_tickers=0)
    counter.count_tallied(["A", "B"], [2, 1])
    counter.count_tallied(["A", "C"], [4, 1])
    assert _value(stage, ALL_TICKERS) == 8.0
    assert _value(stage, "A") == 0.0
