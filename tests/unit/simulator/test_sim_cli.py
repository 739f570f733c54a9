"""``python -m simulator`` options: bad values exit with code 2 and a message, before anything touches Kafka."""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import simulator.producer
from simulator.__main__ import main


@pytest.fixture(autouse=True)
def no_kafka(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Any attempt to produce fails the test; no ``.env`` or ``SIM_*`` of the shell leaks in."""

    def refuse(*_args: object, **_kwargs: object) -> None:
        pytest.fail("the command reached Kafka")

    monkeypatch.setattr(simulator.producer, "TickProducer", refuse)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SIM_METRICS_PORT", "0")


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["backfill", "--start", "1995-01-03", "--end", "1995-01-04"], "--start 1995-01-03T00:00:00.000Z is outside"),
        (["backfill", "--start", "1965-01-04", "--end", "2026-01-05"], "--start 1965-01-04T00:00:00.000Z is outside"),
        (["backfill", "--start", "2026-01-05", "--end", "2300-01-01"], "--end 2300-01-01T00:00:00.000Z is outside"),
        (["export", "--interval", "tick", "--start", "1965-01-04", "--end", "1965-01-05", "--out", "t.csv"], "--start"),
        (["run", "--backfill", "300000"], "--backfill of 300000 hours is too long"),
        (["run", "--backfill", "1e12"], r"--backfill of 1e\+12 hours is too long"),
        (["backfill", "--start", "2026-01-05T10:00Z", "--end", "2026-01-05T10:00Z"], "--end .* must be after --start"),
    ],
)
def test_times_outside_the_tick_contract_are_refused_naming_the_option(
    argv: list[str], needle: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Starts before 2001-09-09 used to be produced (before 1970 as "timestamp":0); --backfill 1e12 a traceback."""
    assert main(argv) == 2
    assert re.search(needle, caplog.text), caplog.text


def test_a_backfill_setting_reaching_before_the_contract_is_refused(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("SIM_BACKFILL", "P10000D")
    assert main(["run"]) == 2
    assert "SIM_BACKFILL of 240000 hours is too long" in caplog.text


def test_export_of_old_bars_is_still_allowed() -> None:
    """Bars are files, not contract ticks: a 1990s daily export (the report's kind of history) stays possible."""
    argv = ["export", "--interval", "1d", "--start", "1990-01-01", "--end", "1990-02-01", "--out", "b.parquet"]
    assert main(argv) == 0
    assert pq.read_table("b.parquet").num_rows == 5 * 31


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--backfill", "nan"],
        ["run", "--backfill", "inf"],
        ["run", "--backfill", "-5"],
        ["run", "--backfill", "two"],
        ["report", "--paths", "0"],
        ["report", "--years", "0"],
        ["report", "--intraday-days", "0"],
        ["report", "--paths", "-3"],
        ["report", "--years", "100000"],
    ],
)
def test_bad_numbers_exit_2_with_a_message(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """These gave tracebacks (exit 1) or were accepted silently."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "must be" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "event",
    ["TECH:jump:8@2026-01-05T10:00Z", "NOPE:jump:+8%@2026-01-05T10:00Z", "TECH:regime:stressed@2026-01-05T10:00Z"],
)
def test_a_bad_event_is_reported_before_connecting(event: str, caplog: pytest.LogCaptureFixture) -> None:
    """--inject used to be parsed only after the broker answered."""
    assert main(["--inject", event, "backfill", "--start", "2026-01-05T10:00Z", "--end", "2026-01-05T11:00Z"]) == 2
    assert "event" in caplog.text


def test_a_block_too_large_for_the_memory_limit_is_refused_before_connecting(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("SIM_TICK_RATE", "1000")  # 5 tickers x 60,000 steps x 68 B = 19 MiB a block
    monkeypatch.setenv("SIM_MAX_BLOCK_MB", "16")
    assert main(["backfill", "--start", "2026-01-05T10:00Z", "--end", "2026-01-05T11:00Z"]) == 2
    assert "19 MiB of ticks" in caplog.text
    assert "SIM_MAX_BLOCK_MB=16" in caplog.text


def test_export_applies_inject_to_ticks_and_refuses_it_for_bars(caplog: pytest.LogCaptureFixture) -> None:
    """``export`` used to ignore --inject silently."""
    times = ["--start", "2026-01-05T09:55Z", "--end", "2026-01-05T10:05Z"]
    assert main(["export", "--interval", "tick", *times, "--out", "base.parquet"]) == 0
    jump = ["--inject", "TECH:jump:+8%@2026-01-05T10:00Z"]
    assert main([*jump, "export", "--interval", "tick", *times, "--out", "jump.parquet"]) == 0
    base, jumped = (pq.read_table(p).to_pandas() for p in ("base.parquet", "jump.parquet"))
    after = (base["ticker"] == "TECH") & (base["timestamp"] >= 1_767_607_200_000)
    assert (jumped["price"][after] / base["price"][after]).between(1.078, 1.082).all()
    assert main([*jump, "export", "--interval", "1m", *times, "--out", "bars.parquet"]) == 2
    assert "tick exports only" in caplog.text
    assert main([*jump, "universe", "--count", "3", "--out", "u.yaml"]) == 2
