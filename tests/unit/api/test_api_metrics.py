"""Gateway metrics bookkeeping of workers: ``api_workers`` and live gauges of dead workers (no network)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from api import metrics


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)  # exited and reaped: no process has this pid (until it is reused)


def test_a_worker_counts_itself_and_forgets_live_gauges_of_dead_workers(tmp_path: Path) -> None:
    dead, me = _dead_pid(), os.getpid()
    for pid in (dead, me):
        (tmp_path / f"gauge_livesum_{pid}.db").write_bytes(b"")
    (tmp_path / f"counter_{dead}.db").write_bytes(b"")  # totals of exited workers stay
    before = metrics.WORKERS._value.get()

    metrics.mark_worker_started(tmp_path)
    assert metrics.WORKERS._value.get() == before + 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"counter_{dead}.db", f"gauge_livesum_{me}.db"]

    metrics.mark_worker_stopped(tmp_path)
    assert metrics.WORKERS._value.get() == before
    assert [p.name for p in tmp_path.iterdir()] == [f"counter_{dead}.db"]


def test_without_multiprocess_mode_only_the_gauge_moves() -> None:
    before = metrics.WORKERS._value.get()
    metrics.mark_worker_started(None)
    assert metrics.WORKERS._value.get() == before + 1
    metrics.mark_worker_stopped(None)
    assert metrics.WORKERS._value.get() == before
