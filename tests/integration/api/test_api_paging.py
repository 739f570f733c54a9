"""Newest-first listings of ``/history`` and ``/bars`` (no ``start``) and their backward cursors, against real
PostgreSQL/Redis with known rows: the newest N ascending, every row exactly once when paging back (ties on
equal tick timestamps included), the live bar rule, ``start`` unchanged, and 422s naming ``cursor``."""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from common.clock import to_ms
from tests.ticks import make_tick

from .conftest import LiveApi, Seeder, make_bar

pytestmark = pytest.mark.integration

MINUTE = 60_000


def get(api: LiveApi, path: str, **params: Any) -> dict[str, Any]:
    resp = httpx.get(api.base_url + path, params=params, timeout=10)
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def error_of(api: LiveApi, path: str, **params: Any) -> tuple[int, str]:
    resp = httpx.get(api.base_url + path, params=params, timeout=10)
    return resp.status_code, resp.json()["error"]["message"]


def page_back(api: LiveApi, path: str, **params: Any) -> list[list[dict[str, Any]]]:
    """Every page from the newest back to the window start, following ``meta.prev_cursor``."""
    body = get(api, path, **params)
    pages = [body["data"]]
    while body["meta"]["prev_cursor"] is not None:
        assert body["meta"]["next_cursor"] is None
        body = get(api, path, **params, cursor=body["meta"]["prev_cursor"])
        pages.append(body["data"])
        assert len(pages) < 100
    return pages


@pytest.fixture
def api(seed: Seeder, start_api: Callable[..., LiveApi]) -> LiveApi:
    seed.universe()
    return start_api()


@pytest.fixture
def ticks(seed: Seeder) -> list[tuple[int, int]]:
    """26 SYNTH ticks in the last hour, three per millisecond timestamp (ties broken by seq), plus one tick two
    hours old; returns the (time, seq) of the 26 in ascending order."""
    now = to_ms(datetime.now(UTC))
    base = now - 30 * MINUTE
    recent = [make_tick("SYNTH", i, base + (i // 3) * 1000, 150 + i * 0.01) for i in range(26)]
    seed.ticks([*recent, make_tick("SYNTH", 99, now - 120 * MINUTE, 149.0)])
    return [(t.timestamp, t.seq) for t in recent]


def key(tick: dict[str, Any]) -> tuple[str, int]:
    return tick["time"], tick["seq"]


def test_history_without_start_is_the_newest_n_ascending(api: LiveApi, ticks: list[tuple[int, int]]) -> None:
    body = get(api, "/api/v1/history/SYNTH", limit=10)
    assert [d["seq"] for d in body["data"]] == list(range(16, 26))
    assert body["meta"]["count"] == 10
    assert body["meta"]["next_cursor"] is None
    assert body["meta"]["prev_cursor"]
    everything = get(api, "/api/v1/history/SYNTH")  # default limit holds the whole hour: no cursor
    assert [d["seq"] for d in everything["data"]] == list(range(26))
    assert everything["meta"]["prev_cursor"] is None


@pytest.mark.parametrize("limit", [1, 4, 10, 25])
def test_history_paging_back_returns_every_tick_once_in_order(
    api: LiveApi, ticks: list[tuple[int, int]], limit: int
) -> None:
    pages = page_back(api, "/api/v1/history/SYNTH", limit=limit)
    assert all(len(p) == limit for p in pages[:-1])
    assert len(pages) == -(-len(ticks) // limit)
    for page in pages:
        assert [key(t) for t in page] == sorted(key(t) for t in page)  # each page ascending
    collected = [d["seq"] for page in reversed(pages) for d in page]
    assert collected == list(range(26))  # none twice, none skipped, ties split across pages included


def test_history_with_start_is_unchanged(api: LiveApi, ticks: list[tuple[int, int]]) -> None:
    start = datetime.now(UTC) - timedelta(minutes=50)
    body = get(api, "/api/v1/history/SYNTH", limit=10, start=start.isoformat())
    assert [d["seq"] for d in body["data"]] == list(range(10))
    assert body["meta"]["prev_cursor"] is None
    again = get(api, "/api/v1/history/SYNTH", limit=10, start=start.isoformat(), cursor=body["meta"]["next_cursor"])
    assert [d["seq"] for d in again["data"]] == list(range(10, 20))


def test_history_next_cursor_alone_walks_on_without_skipping(api: LiveApi, seed: Seeder) -> None:
    """A ``next_cursor`` passed without resending ``start`` continues right after its row, also when that row is
    older than the default hour before ``end`` (it used to restart at that hour, skipping what lay between)."""
    now = to_ms(datetime.now(UTC))
    seed.ticks(
        [
            make_tick("SYNTH", seq, now - minutes * MINUTE, 150.0)
            for seq, minutes in ((1, 150), (2, 120), (3, 90), (4, 10))
        ]
    )
    start = datetime.now(UTC) - timedelta(hours=3)
    body = get(api, "/api/v1/history/SYNTH", limit=1, start=start.isoformat())
    walked = [d["seq"] for d in body["data"]]
    while body["meta"]["next_cursor"] is not None:
        body = get(api, "/api/v1/history/SYNTH", limit=1, cursor=body["meta"]["next_cursor"])
        walked.extend(d["seq"] for d in body["data"])
        assert len(walked) < 10
    assert walked == [1, 2, 3, 4]


@pytest.fixture
def bars(seed: Seeder) -> tuple[list[int], int]:
    """30 final 1m bars up to the previous minute and the live bar of the current one; returns the finals'
    starts (ascending, epoch ms) and the live bar's start."""
    minute = to_ms(datetime.now(UTC)) // MINUTE * MINUTE
    starts = [minute - (30 - i) * MINUTE for i in range(30)]
    seed.bars([make_bar("SYNTH", "1m", s, MINUTE, 150, 151, 149, 150.5) for s in starts])
    seed.live_bar(make_bar("SYNTH", "1m", minute, MINUTE, 150.5, 152.25, 150.0, 152.0, final=False))
    return starts, minute


def ms(bar: dict[str, Any]) -> int:
    return to_ms(datetime.fromisoformat(bar["time"]))


def test_bars_without_start_end_with_the_live_bar_which_counts_toward_limit(
    api: LiveApi, bars: tuple[list[int], int]
) -> None:
    starts, live = bars
    body = get(api, "/api/v1/bars/SYNTH", timeframe="1m", limit=10)
    assert [ms(b) for b in body["data"]] == [*starts[-9:], live]
    assert [b["final"] for b in body["data"]] == [True] * 9 + [False]
    assert body["meta"]["live_included"] is True
    assert body["meta"]["count"] == 10
    only_live = get(api, "/api/v1/bars/SYNTH", limit=1)
    assert [b["final"] for b in only_live["data"]] == [False]
    older = get(api, "/api/v1/bars/SYNTH", limit=1, cursor=only_live["meta"]["prev_cursor"])
    assert [ms(b) for b in older["data"]] == starts[-1:]
    assert older["meta"]["live_included"] is False


@pytest.mark.parametrize("limit", [1, 7, 10, 31])
def test_bars_paging_back_returns_every_bar_once_in_order(
    api: LiveApi, bars: tuple[list[int], int], limit: int
) -> None:
    starts, live = bars
    pages = page_back(api, "/api/v1/bars/SYNTH", timeframe="1m", limit=limit)
    assert all(len(p) == limit for p in pages[:-1])
    collected = [ms(b) for page in reversed(pages) for b in page]
    assert collected == [*starts, live]
    assert [b["final"] for page in pages for b in page].count(False) == 1


def test_bars_paging_back_keeps_the_first_pages_window(api: LiveApi, seed: Seeder) -> None:
    """The window start travels in the cursor: pages after an explicit past ``end`` reach ``end - 1 day`` even
    when the next requests omit ``end`` (their own default window would start later)."""
    end = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=3)
    floor = to_ms(end) - 1440 * MINUTE
    starts = [floor - MINUTE, floor, floor + MINUTE, floor + 2 * MINUTE, to_ms(end) - MINUTE]
    seed.bars([make_bar("SYNTH", "1m", s, MINUTE, 150, 151, 149, 150.5) for s in starts])
    first = get(api, "/api/v1/bars/SYNTH", limit=2, end=end.isoformat())
    assert [ms(b) for b in first["data"]] == starts[-2:]
    assert first["meta"]["live_included"] is False
    second = get(api, "/api/v1/bars/SYNTH", limit=2, cursor=first["meta"]["prev_cursor"])
    assert [ms(b) for b in second["data"]] == starts[1:3]
    assert second["meta"]["prev_cursor"] is None  # the bar before floor lies outside the first page's window


def test_a_stale_live_copy_of_a_final_bar_is_not_served_twice(
    api: LiveApi, seed: Seeder, bars: tuple[list[int], int]
) -> None:
    starts, _ = bars
    seed.live_bar(make_bar("SYNTH", "1m", starts[-1], MINUTE, 150, 151, 149, 150.5, final=False))
    body = get(api, "/api/v1/bars/SYNTH", limit=3)
    assert [ms(b) for b in body["data"]] == starts[-3:]
    assert all(b["final"] for b in body["data"])
    assert body["meta"]["live_included"] is False


def test_bars_with_start_are_unchanged(api: LiveApi, bars: tuple[list[int], int]) -> None:
    starts, _ = bars
    start = datetime.fromtimestamp(starts[0] / 1000, UTC).isoformat()
    body = get(api, "/api/v1/bars/SYNTH", limit=10, start=start)
    assert [ms(b) for b in body["data"]] == starts[:10]
    assert body["meta"]["prev_cursor"] is None
    assert body["meta"]["live_included"] is False
    again = get(api, "/api/v1/bars/SYNTH", limit=10, start=start, cursor=body["meta"]["next_cursor"])
    assert [ms(b) for b in again["data"]] == starts[10:20]


def test_garbage_and_misused_cursors_are_422_naming_cursor(
    api: LiveApi, ticks: list[tuple[int, int]], bars: tuple[list[int], int]
) -> None:
    bars_prev = get(api, "/api/v1/bars/SYNTH", limit=2)["meta"]["prev_cursor"]
    ticks_prev = get(api, "/api/v1/history/SYNTH", limit=2)["meta"]["prev_cursor"]
    start = (datetime.now(UTC) - timedelta(minutes=50)).isoformat()
    cases: list[tuple[str, dict[str, Any]]] = [
        ("/api/v1/bars/SYNTH", {"cursor": "garbage!"}),
        ("/api/v1/history/SYNTH", {"cursor": "garbage!"}),
        ("/api/v1/history/SYNTH", {"cursor": bars_prev}),  # another endpoint's cursor
        ("/api/v1/bars/SYNTH", {"cursor": ticks_prev}),
        ("/api/v1/bars/SYNTH", {"cursor": bars_prev, "start": start}),  # a backward cursor with start
        ("/api/v1/history/SYNTH", {"cursor": ticks_prev, "start": start}),
        ("/api/v1/history/SYNTH", {"cursor": ticks_prev, "end": "2000-01-01T00:00:00Z"}),  # end before its window
        ("/api/v1/history/TECH", {"cursor": ticks_prev}),  # another ticker's cursor
        ("/api/v1/bars/TECH", {"cursor": bars_prev}),
        ("/api/v1/bars/SYNTH", {"cursor": bars_prev, "timeframe": "5m"}),  # another timeframe's
    ]
    for path, params in cases:
        status, message = error_of(api, path, **params)
        assert status == 422, (path, params)
        assert "cursor" in message, (path, params, message)
    assert "another listing" in error_of(api, "/api/v1/bars/SYNTH", cursor=bars_prev, timeframe="1h")[1]
    assert get(api, "/api/v1/bars/SYNTH", cursor=bars_prev, timeframe="1m")["meta"]["count"] > 0  # its own listing


def _cursor(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def test_only_cursors_spelt_as_the_encoder_spells_them_are_accepted(api: LiveApi, ticks: list[tuple[int, int]]) -> None:
    """Positions in Unicode digits, with a sign, blanks, underscores or padding are 422 naming cursor; the ticker's
    case does not change a cursor's listing (the look-up now runs after the parameter checks)."""
    first = get(api, "/api/v1/history/SYNTH", limit=2)
    prev = first["meta"]["prev_cursor"]
    text = base64.urlsafe_b64decode(prev + "=" * (-len(prev) % 4)).decode()
    kind, at, seq, floor, scope = text.split(":")
    arabic = at.translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩"))
    for bad in (
        _cursor(f"{kind}:{arabic}:{seq}:{floor}:{scope}"),
        _cursor(f"{kind}:+{at}:{seq}:{floor}:{scope}"),
        _cursor(f"{kind}:{at}:{seq}:{int(floor):_}:{scope}"),
        _cursor(f"{kind}:{at}: {seq}:{floor}:{scope}"),
        prev + "=" * (-len(prev) % 4 or 4),
    ):
        status, message = error_of(api, "/api/v1/history/SYNTH", cursor=bad)
        assert (status, message) == (422, "cursor: not a cursor returned by this endpoint"), bad
    assert error_of(api, "/api/v1/history/NOPE", cursor="garbage!")[0] == 422  # the parameter before the ticker
    huge = _cursor(f"{kind}:{at}:{2**70}:{floor}:{scope}")  # digits as the encoder writes them, beyond bigint
    assert httpx.get(api.base_url + "/api/v1/history/SYNTH", params={"cursor": huge}, timeout=10).status_code == 200
    lower = get(api, "/api/v1/history/synth", limit=2, cursor=prev)
    assert lower["data"] == get(api, "/api/v1/history/SYNTH", limit=2, cursor=prev)["data"]
    assert lower["meta"]["ticker"] == "SYNTH"
