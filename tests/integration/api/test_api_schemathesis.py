"""Property-based fuzzing of the OpenAPI document with schemathesis against a live gateway with real data.

Every operation gets a bounded number of generated requests (valid and invalid); no answer may be a 5xx, use
an undocumented status or content type, or break its documented response schema.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from common.clock import to_ms
from contracts.bar import Indicators
from tests.ticks import make_tick

from .conftest import LiveApi, Seeder, make_bar

pytestmark = pytest.mark.integration

EXAMPLES = 25
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture
def fuzz_api(seed: Seeder, start_api: Callable[..., LiveApi]) -> LiveApi:
    seed.universe()
    now = to_ms(datetime.now(UTC))
    seed.ticks([make_tick("SYNTH", i, now - 600_000 + i * 1000, 150 + i * 0.01) for i in range(200)])
    minute = now // 60_000 * 60_000
    bars = [make_bar("SYNTH", "1m", minute - (30 - i) * 60_000, 60_000, 150, 151, 149, 150.5) for i in range(30)]
    bars.append(
        make_bar(
            "SYNTH",
            "5m",
            minute // 300_000 * 300_000 - 300_000,
            300_000,
            150,
            151,
            149,
            150.5,
            indicators=Indicators(sma_20=150.0, rsi_14=51.0),
        )
    )
    seed.bars(bars)
    seed.latest(make_tick("SYNTH", 999, now, 151.0))
    seed.live_bar(make_bar("SYNTH", "1m", minute, 60_000, 150.5, 151, 150, 150.75, final=False))
    seed.final_bar(
        make_bar("SYNTH", "1m", minute - 60_000, 60_000, 150, 151, 149, 150.5, indicators=Indicators(sma_20=150.1))
    )
    return start_api()


def fuzz(strategy: Any, examples: int) -> None:
    """Run ``examples`` generated cases of one strategy through every check."""

    @given(case=strategy)
    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def run(case: Any) -> None:
        case.call_and_validate(checks=CHECKS, timeout=10)

    run()


def test_openapi_conformance_without_server_errors(fuzz_api: LiveApi) -> None:
    schema = schemathesis.openapi.from_url(fuzz_api.base_url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 13
    for op in operations:
        fuzz(op.as_strategy(GenerationMode.POSITIVE), EXAMPLES)
        try:
            fuzz(op.as_strategy(GenerationMode.NEGATIVE), EXAMPLES)
        except Unsatisfiable:
            assert "{" not in op.path  # only an operation without parameters has no invalid input
        known = {name: "SYNTH" for name in ("ticker", "symbol") if "{" + name + "}" in op.path}
        if known:  # random strings are unknown tickers: also fuzz the query of one with data
            fuzz(op.as_strategy(GenerationMode.POSITIVE, path_parameters=known), EXAMPLES)
