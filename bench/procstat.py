"""CPU time and resident memory of a process from Linux ``/proc`` (the benchmarks' one reader)."""

from __future__ import annotations

import os
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int | str) -> list[str]:
    """Fields of ``/proc/<pid>/stat`` after the command name (``state`` is index 0)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int, tree: bool = False) -> float:
    """User + system CPU seconds of ``pid`` (all threads), with ``tree`` also of its live descendants."""
    if not tree:
        fields = _stat_fields(pid)
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = _stat_fields(entry)
        except OSError:
            continue
        parents[int(entry)] = int(fields[1])
        ticks[int(entry)] = int(fields[11]) + int(fields[12])
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        total += ticks.get(p, 0)
        stack.extend(c for c, pp in parents.items() if pp == p)
    return total / CLK_TCK


def rss_mb(pid: int) -> float:
    """Resident set size (``VmRSS``) of ``pid`` in MiB."""
    return _status_mb(pid, "VmRSS")


def _status_mb(pid: int | str, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    msg = f"no {field} for pid {pid}"
    raise RuntimeError(msg)


def reset_peak_rss(pid: int | str = "self") -> float:
    """Start a new peak-RSS measurement of ``pid`` (``VmHWM`` restarts at the current RSS: ``clear_refs`` 5);
    returns the RSS now in MiB."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return _status_mb(pid, "VmRSS")


def peak_rss_mb(pid: int | str = "self") -> float:
    """The peak resident set size (``VmHWM``) of ``pid`` in MiB since it started or :func:`reset_peak_rss`."""
    return _status_mb(pid, "VmHWM")


def host_busy_seconds() -> float:
    """CPU seconds all processes of the machine have used so far, summed over its CPUs (``/proc/stat``; idle and
    I/O wait excluded): the difference over an interval divided by its length is how many cores were busy."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK
