"""Input validation helpers: time ranges, cursors, limits, settings, error messages (no network)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from api.deps import bounded_limit, epoch_us, time_range
from api.errors import ApiError, validation_message
from api.paging import decode_cursor, encode_next, encode_prev, plan_page, scope_of
from api.settings import ApiSettings
from common.clock import iso_ms


def test_time_range_defaults_and_checks() -> None:
    rng = time_range(None, None, timedelta(hours=1), timedelta(days=1))
    assert rng.end - rng.start == timedelta(hours=1)
    naive = time_range(datetime(2025, 1, 1), datetime(2025, 1, 1, 1), timedelta(hours=1), timedelta(days=1))  # noqa: DTZ001
    assert naive.start.tzinfo is not None
    with pytest.raises(ApiError) as err:
        time_range(datetime(2025, 1, 2, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC), timedelta(1), timedelta(9))
    assert err.value.code == "invalid_range"
    with pytest.raises(ApiError) as err:
        time_range(datetime(2020, 1, 1, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC), timedelta(1), timedelta(9))
    assert err.value.code == "range_too_large"
    assert err.value.status == 422


def test_cursor_round_trip_and_rejection() -> None:
    at = datetime(2025, 10, 2, 14, 0, 0, 123456, tzinfo=UTC)
    floor = at - timedelta(hours=1)
    scope = scope_of("SYNTH")
    nxt = decode_cursor("h", scope, encode_next("h", scope, at, 42))
    assert (nxt.older, nxt.at, nxt.seq, nxt.floor) == (False, at, 42, None)
    prev = decode_cursor("h", scope, encode_prev("h", scope, at, 7, floor))
    assert (prev.older, prev.at, prev.seq, prev.floor) == (True, at, 7, floor)
    legacy = "aDoxNzU5NDEzNjAwMTIzNDU2OjQy"  # base64 of the earliest format "h:1759413600123456:42"
    assert decode_cursor("h", scope, legacy).at == at
    legacy_prev = _b64(f"h<:{epoch_us(at)}:7:{epoch_us(floor)}")  # every encoder dropped the padding
    assert decode_cursor("h", scope, legacy_prev) == prev  # the session-8 format, before scopes
    for bad in (
        "",
        "!!!",
        "aDox",
        encode_next("b", scope, at),  # another endpoint
        encode_prev("b", scope, at, 0, floor),
        encode_prev("h", scope, floor, 0, at),  # window start after the position
        "aDotMTox",  # "h:-1:1": before 1970
        base64.urlsafe_b64encode(f"h:{epoch_us(at)}:1:{scope}:{scope}".encode()).decode(),  # a field too many
    ):
        with pytest.raises(ApiError, match="cursor") as err:
            decode_cursor("h", scope, bad)
        assert "another listing" not in err.value.message


def _b64(text: str) -> str:
    """A cursor as the encoders write it: URL-safe base64 without padding."""
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def test_only_the_encoders_spelling_of_a_cursor_is_accepted() -> None:
    """``int()`` takes Unicode digits, signs, blanks and underscores, and base64 decoding skips stray characters
    and padding: a hand-made cursor spelling a position otherwise than the encoder did is a 422 naming cursor."""
    at = datetime(2025, 10, 2, 14, 0, 0, 123456, tzinfo=UTC)
    us, scope = epoch_us(at), scope_of("SYNTH")
    good = encode_next("h", scope, at, 42)
    assert good == _b64(f"h:{us}:42:{scope}")
    assert decode_cursor("h", scope, good).seq == 42
    floor = epoch_us(at - timedelta(hours=1))
    arabic = str(us).translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩"))
    for text in (
        f"h:{arabic}:42:{scope}",  # Arabic-Indic digits
        f"h:{us}:٤٢:{scope}",
        f"h:+{us}:42:{scope}",
        f"h: {us} :42:{scope}",
        f"h:{us:_}:42:{scope}",  # 1_759_...
        f"h:{us}:042:{scope}",
        f"h:{us}:-0:{scope}",
        f"h:{us}:+42",  # the earliest format (no scope), with the same defects
        f"h<:{us}:7:+{floor}:{scope}",  # the floor of a prev cursor
        f"h<:{us}:7:{floor:_}",
    ):
        with pytest.raises(ApiError, match="cursor") as err:
            decode_cursor("h", scope, _b64(text))
        assert (err.value.status, err.value.code) == (422, "invalid_parameter"), text
    for spelling in (good + "=", good + "==", good[:5] + "!" + good[5:], good[:5] + "\n" + good[5:]):
        with pytest.raises(ApiError, match="cursor"):
            decode_cursor("h", scope, spelling)
    last = good[-1]
    other_bits = good[:-1] + ("A" if last != "A" else "B")  # the same bytes when the unused low bits differ
    if base64.urlsafe_b64decode(other_bits + "=" * (-len(other_bits) % 4)) == base64.urlsafe_b64decode(
        good + "=" * (-len(good) % 4)
    ):
        with pytest.raises(ApiError, match="cursor"):
            decode_cursor("h", scope, other_bits)


def test_cursor_of_another_ticker_or_timeframe_is_refused() -> None:
    at = datetime(2025, 10, 2, 14, tzinfo=UTC)
    assert len({scope_of("SYNTH"), scope_of("OTHER"), scope_of("SYNTH", "1m"), scope_of("SYNTH", "5m")}) == 4
    assert scope_of("SYNTH", "1m") == scope_of("SYNTH", "1m")
    for cursor in (
        encode_next("b", scope_of("SYNTH", "1m"), at),
        encode_prev("b", scope_of("SYNTH", "1m"), at, 0, at - timedelta(days=1)),
        encode_next("b", scope_of("OTHER", "5m"), at),
    ):
        with pytest.raises(ApiError, match="another listing") as err:
            decode_cursor("b", scope_of("SYNTH", "5m"), cursor)
        assert (err.value.status, err.value.code) == (422, "invalid_parameter")
        assert "cursor" in err.value.message


def test_plan_page_direction() -> None:
    day, span = timedelta(days=1), timedelta(days=30)
    end = datetime(2025, 10, 2, 14, tzinfo=UTC)
    sc = scope_of("SYNTH", "1m")
    newest = plan_page("b", sc, None, end, None, day, span)
    assert (newest.newest, newest.start, newest.end, newest.scope) == (True, end - day, end, sc)
    fwd = plan_page("b", sc, end - timedelta(hours=2), end, None, day, span)
    assert (fwd.newest, fwd.start) == (False, end - timedelta(hours=2))
    at = end - timedelta(minutes=5)
    floor = end - day - timedelta(minutes=1)  # the first page's window, fixed in the cursor
    back = plan_page("b", sc, None, end, encode_prev("b", sc, at, 0, floor), day, span)
    assert (back.newest, back.start, back.before, back.scope) == (True, floor, (at, 0), sc)
    on = plan_page("b", sc, end - timedelta(hours=2), end, encode_next("b", sc, at), day, span)
    assert (on.newest, on.after, on.scope) == (False, (at, 0), sc)
    with pytest.raises(ApiError, match="cursor") as err:
        plan_page("b", sc, end - timedelta(hours=2), end, encode_prev("b", sc, at, 0, floor), day, span)
    assert err.value.status == 422
    with pytest.raises(ApiError, match="cursor"):
        plan_page("b", sc, None, floor - timedelta(seconds=1), encode_prev("b", sc, at, 0, floor), day, span)


def test_a_next_cursor_without_start_continues_right_after_its_row() -> None:
    """Without ``start`` the page must not fall back to the default window before ``end``: a cursor older than
    that window would skip every row between them (with a 200)."""
    hour, span = timedelta(hours=1), timedelta(days=31)
    end = datetime(2025, 10, 2, 14, tzinfo=UTC)
    sc = scope_of("SYNTH")
    at = end - timedelta(hours=2)  # the last row of a page of an oldest-first walk that began 3 h before end
    page = plan_page("h", sc, None, end, encode_next("h", sc, at, 7), hour, span)
    assert (page.newest, page.start, page.end, page.after) == (False, at, end, (at, 7))
    resent = plan_page("h", sc, end - timedelta(hours=3), end, encode_next("h", sc, at, 7), hour, span)
    assert (resent.start, resent.after) == (end - timedelta(hours=3), (at, 7))  # a resent start is kept
    with pytest.raises(ApiError, match="cursor") as err:  # a cursor past the end the request asks for
        plan_page("h", sc, None, at - timedelta(seconds=1), encode_next("h", sc, at, 7), hour, span)
    assert (err.value.status, err.value.code) == (422, "invalid_range")


def test_cursors_do_not_age_out_of_the_maximum_range() -> None:
    """A page from a cursor is a LIMIT-bounded scan from its row; with the default end (now) a walk through a
    range as wide as the maximum must not start failing once the clock has moved on."""
    hour = timedelta(hours=1)
    end = datetime(2025, 10, 2, 14, tzinfo=UTC)
    sc = scope_of("SYNTH")
    later = end + timedelta(minutes=10)  # the same walk's end, ten minutes on
    back = plan_page("h", sc, None, later, encode_prev("h", sc, end - timedelta(minutes=30), 3, end - hour), hour, hour)
    assert (back.start, back.end, back.before) == (end - hour, later, (end - timedelta(minutes=30), 3))
    on = plan_page("h", sc, None, later, encode_next("h", sc, end - hour, 3), hour, hour)
    assert (on.start, on.end, on.after) == (end - hour, later, (end - hour, 3))


def test_limits() -> None:
    assert bounded_limit(None, 500, 5000) == 500
    with pytest.raises(ApiError, match="limit"):
        bounded_limit(5001, 500, 5000)


def test_iso_ms_is_utc_with_milliseconds() -> None:
    t = datetime(2024, 1, 15, 11, 30, 45, 123999, tzinfo=UTC) + timedelta(0)
    assert iso_ms(t) == "2024-01-15T11:30:45.123Z"


def test_validation_message_names_parameters() -> None:
    text = validation_message([{"loc": ("query", "limit"), "msg": "too big"}, {"loc": ("path", "ticker"), "msg": "x"}])
    assert text == "limit: too big; ticker: x"


def test_settings_lists_and_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_KEYS", "alpha, beta")
    monkeypatch.setenv("API_CORS_ORIGINS", '["https://a.example"]')
    s = ApiSettings()
    assert [k.get_secret_value() for k in s.keys] == ["alpha", "beta"]
    assert s.auth_enabled
    assert s.cors_origins == ["https://a.example"]
    assert "alpha" not in repr(s)
    with pytest.raises(ValueError, match="rate_limit"):
        ApiSettings(rate_limit="lots")
    with pytest.raises(ValueError, match="bars_default_limit"):
        ApiSettings(bars_default_limit=6000)


def test_time_range_names_the_given_parameters() -> None:
    with pytest.raises(ApiError) as err:
        time_range(None, datetime(1, 1, 1), timedelta(days=1), timedelta(days=31), "since", "until")  # noqa: DTZ001
    assert err.value.status == 422
    assert "until" in err.value.message
    with pytest.raises(ApiError) as err:
        time_range(
            datetime(2025, 1, 2, tzinfo=UTC),
            datetime(2025, 1, 1, tzinfo=UTC),
            timedelta(1),
            timedelta(9),
            "since",
            "until",
        )
    assert "since" in err.value.message
    assert "until" in err.value.message


def test_indicator_names_are_derived_from_the_contract_and_match_the_openapi_model() -> None:
    from api import schemas
    from api.store import INDICATOR_COLUMNS
    from contracts.bar import INDICATOR_NAMES

    assert schemas.INDICATOR_FIELDS == INDICATOR_NAMES
    assert INDICATOR_COLUMNS.split(", ") == list(INDICATOR_NAMES)
    model_fields = list(schemas.IndicatorValues.model_fields)
    assert model_fields[-len(INDICATOR_NAMES) :] == list(INDICATOR_NAMES)


def test_schema_literals_agree_with_the_contracts() -> None:
    from typing import get_args

    from api import schemas
    from contracts import TIMEFRAMES
    from contracts.redis_keys import WINDOW_TO_TIMEFRAME

    assert list(get_args(schemas.Timeframe)) == list(TIMEFRAMES)
    assert list(get_args(schemas.Window)) == list(WINDOW_TO_TIMEFRAME)
    assert set(WINDOW_TO_TIMEFRAME.values()) == set(TIMEFRAMES)


def test_anomaly_enums_in_openapi_are_the_contract_values() -> None:
    from api.main import create_app
    from contracts.anomaly import AnomalyType, Severity

    components = create_app(ApiSettings(relay_enabled=False, access_log=False)).openapi()["components"]["schemas"]
    assert components["Severity"]["enum"] == ["low", "medium", "high", "critical"]
    assert components["AnomalyType"]["enum"] == [t.value for t in AnomalyType]
    assert [s.value for s in Severity] == components["Severity"]["enum"]


def test_multiprocess_dir_comes_from_settings_and_is_exported(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    from api.__main__ import _fresh_multiprocess_dir

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "")
    assert ApiSettings().prometheus_multiproc_dir is None  # empty = off, never "."
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")
    directory = tmp_path / "metrics"
    directory.mkdir()
    (directory / "stale.db").write_text("x")
    _fresh_multiprocess_dir(ApiSettings(prometheus_multiproc_dir=directory).prometheus_multiproc_dir)
    assert directory.is_dir()
    assert not list(directory.iterdir())
    assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == str(directory)
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")


def test_several_workers_without_a_multiprocess_dir_get_a_private_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """API_WORKERS > 1 without PROMETHEUS_MULTIPROC_DIR would let each scrape read one worker at random:
    ``python -m api`` makes a temporary directory, exports it to the workers and removes it at exit."""
    import os

    import api.__main__ as entry

    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    monkeypatch.setenv("API_WORKERS", "2")
    seen: dict[str, object] = {}

    def serve(settings: ApiSettings) -> None:  # what a worker sees instead of uvicorn starting
        directory = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
        seen["dir"] = directory
        seen["exists"] = directory.is_dir()
        seen["worker_setting"] = ApiSettings().prometheus_multiproc_dir

    monkeypatch.setattr(entry, "_serve", serve)
    try:
        entry.main()
        assert seen["exists"]
        assert seen["worker_setting"] == seen["dir"]
        assert not Path(str(seen["dir"])).exists(), "the private directory is removed at exit"
    finally:
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)

    # one worker needs none; a configured directory is used as it is (and kept)
    assert entry.multiprocess_dir(ApiSettings(workers=1)) == (None, False)
    assert entry.multiprocess_dir(ApiSettings(workers=4, prometheus_multiproc_dir=tmp_path)) == (tmp_path, False)


def test_forwarded_allow_ips_is_a_setting_passed_to_uvicorn(monkeypatch: pytest.MonkeyPatch) -> None:
    """Which peers' X-Forwarded-For is believed (it sets the client address, the rate-limit identity without a
    valid key): uvicorn's loopback default, ``API_FORWARDED_ALLOW_IPS``, empty = trust nobody, which switches
    uvicorn's proxy headers off. uvicorn's own ``FORWARDED_ALLOW_IPS`` is ignored: images often set it to ``*``."""
    import api.__main__ as entry

    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "*")  # uvicorn's variable, as many images set it: not ours
    assert ApiSettings().forwarded_allow_ips == ["127.0.0.1", "::1"]
    monkeypatch.setenv("API_FORWARDED_ALLOW_IPS", "10.0.0.0/8, fd00::/8")
    assert ApiSettings().forwarded_allow_ips == ["10.0.0.0/8", "fd00::/8"]
    monkeypatch.setenv("API_FORWARDED_ALLOW_IPS", "")
    assert ApiSettings().forwarded_allow_ips == []
    monkeypatch.setenv("API_FORWARDED_ALLOW_IPS", "*")
    assert ApiSettings().forwarded_allow_ips == ["*"]
    for bad in ("localhost", "10.0.0.1/8", "*, 10.0.0.1"):
        with pytest.raises(ValueError, match="forwarded_allow_ips"):
            ApiSettings(forwarded_allow_ips=bad)

    seen: dict[str, object] = {}
    monkeypatch.setattr(entry.uvicorn, "run", lambda app, **kwargs: seen.update(kwargs))
    entry._serve(ApiSettings(forwarded_allow_ips=""))
    assert (seen["proxy_headers"], seen["forwarded_allow_ips"]) == (False, [])
    entry._serve(ApiSettings(forwarded_allow_ips="192.0.2.1"))
    assert (seen["proxy_headers"], seen["forwarded_allow_ips"]) == (True, ["192.0.2.1"])
