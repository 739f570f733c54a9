"""Gateway metrics bookkeeping of workers: ``api_workers`` and live gauges of dead workers (no network)."""

from __future__ import annotations

import os
import resource
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


def _fake_process(
    proc: Path, pid: int, *, utime: int, stime: int, start: int, rss_pages: int, fds: int, limit: int
) -> None:
    """A ``/proc/<pid>`` as prometheus-client's ProcessCollector reads it (stat, limits, fd)."""
    fields = ["S", *["0"] * 50]  # after "(comm)": field 3 (state) onwards
    fields[11], fields[12], fields[19], fields[20], fields[21] = (
        str(utime),
        str(stime),
        str(start),
        "1000",
        str(rss_pages),
    )
    (proc / str(pid) / "fd").mkdir(parents=True)
    (proc / str(pid) / "stat").write_text(f"{pid} (python) " + " ".join(fields))
    (proc / str(pid) / "limits").write_text(
        f"Max open files            {limit}                 {limit}                 files\n"
    )
    for fd in range(fds):
        (proc / str(pid) / "fd" / str(fd)).write_text("")


def _samples(collector: metrics.GatewayProcessCollector) -> dict[tuple[str, str], float]:
    return {(s.name, s.labels["pid"]): s.value for family in collector.collect() for s in family.samples}


def test_a_multi_worker_gateway_exports_each_of_its_processes(tmp_path: Path) -> None:
    proc, multiproc = tmp_path / "proc", tmp_path / "metrics"
    multiproc.mkdir()
    proc.mkdir()
    (proc / "stat").write_text("cpu  1 2 3\nbtime 1700000000\n")
    ticks = os.sysconf("SC_CLK_TCK")
    _fake_process(proc, 101, utime=2 * ticks, stime=ticks, start=10 * ticks, rss_pages=1000, fds=5, limit=1024)
    _fake_process(proc, 102, utime=ticks, stime=0, start=12 * ticks, rss_pages=3000, fds=7, limit=512)
    _fake_process(proc, 100, utime=0, stime=ticks, start=9 * ticks, rss_pages=500, fds=3, limit=2048)  # supervisor
    for pid in (101, 102, 103):  # 103: a worker that died (its files stay until the next start-up sweeps them)
        (multiproc / f"gauge_livesum_{pid}.db").write_bytes(b"")
    (multiproc / "counter_104.db").write_bytes(b"")  # an exited worker's totals: not a live process

    collector = metrics.GatewayProcessCollector(multiproc, supervisor=100, proc=str(proc))
    assert collector.pids() == [100, 101, 102]
    samples = _samples(collector)
    page = resource.getpagesize()
    assert {pid: samples["process_cpu_seconds_total", pid] for pid in ("100", "101", "102")} == {
        "100": 1.0,
        "101": 3.0,
        "102": 1.0,
    }
    assert samples["process_resident_memory_bytes", "102"] == 3000.0 * page
    assert samples["process_start_time_seconds", "100"] == 1700000009.0
    assert (samples["process_open_fds", "101"], samples["process_max_fds", "102"]) == (5.0, 512.0)
    assert len(samples) == 3 * 6  # six metrics for each of the three processes, none for the dead worker

    workers_only = metrics.GatewayProcessCollector(multiproc, proc=str(proc))
    assert workers_only.pids() == [101, 102]
    assert {pid for _, pid in _samples(workers_only)} == {"101", "102"}
