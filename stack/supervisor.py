"""Runs the stack's processes under supervisord for ``make up``: config rendering and control.

supervisord restarts a crashed process, keeps one log file per process, and stops each process group as a
whole; ``make down`` shuts it down and then checks by PID that nothing it started is left.
"""

from __future__ import annotations

import configparser
import contextlib
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from common.errors import StackError
from stack.services import ServiceSpec
from stack.settings import StackSettings

INFRA_GROUP = "infra"
APPS_GROUP = "apps"


def conf_path(settings: StackSettings) -> Path:
    """Where the rendered supervisord configuration lives."""
    return settings.run_dir / "supervisord.conf"


def _program(spec: ServiceSpec, settings: StackSettings, autostart: bool, priority: int) -> dict[str, str]:
    section = {
        "command": " ".join(shlex.quote(a) for a in spec.argv).replace("%", "%%"),
        "autostart": str(autostart).lower(),
        "autorestart": "true",
        "startsecs": "3",
        "startretries": "5",
        "stopasgroup": "true",
        "killasgroup": "true",
        "stopwaitsecs": "30",
        "priority": str(priority),
        "redirect_stderr": "true",
        "stdout_logfile": str(settings.log_dir / f"{spec.name}.log"),
        "stdout_logfile_maxbytes": "50MB",
        "stdout_logfile_backups": "3",
    }
    if spec.cwd is not None:
        section["directory"] = str(spec.cwd)
    if spec.user is not None:
        section["user"] = spec.user
    if spec.name == "postgres":
        section["stopsignal"] = "INT"  # PostgreSQL's "fast" shutdown
    if spec.env:
        pairs = ",".join(f'{k}="{v}"' for k, v in spec.env.items())
        section["environment"] = pairs.replace("%", "%%")
    return section


def render(settings: StackSettings, infra: list[ServiceSpec], apps: list[ServiceSpec]) -> Path:
    """Write supervisord.conf: infra programs start with supervisord, apps are started once infra is ready."""
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    cfg = configparser.RawConfigParser()
    sock = settings.run_dir / "supervisor.sock"
    cfg["unix_http_server"] = {"file": str(sock), "chmod": "0700"}
    cfg["supervisord"] = {
        "logfile": str(settings.log_dir / "supervisord.log"),
        "pidfile": str(settings.run_dir / "supervisord.pid"),
        "childlogdir": str(settings.log_dir),
        "user": "root" if os.geteuid() == 0 else os.environ.get("USER", ""),
        "minfds": "16384",
    }
    if not cfg["supervisord"]["user"]:
        del cfg["supervisord"]["user"]
    cfg["rpcinterface:supervisor"] = {
        "supervisor.rpcinterface_factory": "supervisor.rpcinterface:make_main_rpcinterface"
    }
    cfg["supervisorctl"] = {"serverurl": f"unix://{sock}"}
    for i, spec in enumerate(infra):
        cfg[f"program:{spec.name}"] = _program(spec, settings, autostart=True, priority=10 + i)
    for i, spec in enumerate(apps):
        cfg[f"program:{spec.name}"] = _program(spec, settings, autostart=False, priority=100 + i)
    cfg[f"group:{INFRA_GROUP}"] = {"programs": ",".join(s.name for s in infra)}
    if apps:
        cfg[f"group:{APPS_GROUP}"] = {"programs": ",".join(s.name for s in apps)}
    path = conf_path(settings)
    with path.open("w") as fh:
        cfg.write(fh)
    return path


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def supervisord_pid(settings: StackSettings) -> int | None:
    """PID of our running supervisord, or None."""
    pidfile = settings.run_dir / "supervisord.pid"
    if not pidfile.exists():
        return None
    try:
        pid = int(pidfile.read_text().strip())
        os.kill(pid, 0)
    except (ValueError, ProcessLookupError):
        return None
    return pid


def start_supervisord(settings: StackSettings) -> None:
    """Start supervisord (daemonised) unless ours is already running."""
    if supervisord_pid(settings) is not None:
        ctl(settings, "update")  # pick up config changes, start new programs
        return
    proc = subprocess.run([_bin("supervisord"), "-c", str(conf_path(settings))], capture_output=True, text=True)
    if proc.returncode != 0:
        msg = f"supervisord failed to start: {proc.stdout}{proc.stderr}"
        raise StackError(msg)


def ctl(settings: StackSettings, *args: str, check: bool = True) -> str:
    """Run ``supervisorctl`` against our supervisord and return its output."""
    proc = subprocess.run(
        [_bin("supervisorctl"), "-c", str(conf_path(settings)), *args], capture_output=True, text=True
    )
    # supervisorctl exits non-zero for "status" when a program is not RUNNING; callers decide
    if check and proc.returncode not in (0, 3):
        msg = f"supervisorctl {' '.join(args)} failed: {proc.stdout}{proc.stderr}"
        raise StackError(msg)
    return proc.stdout


def child_pids(settings: StackSettings) -> list[int]:
    """PIDs of the programs supervisord currently runs."""
    out = ctl(settings, "pid", "all", check=False)
    return [int(tok) for tok in out.split() if tok.isdigit() and int(tok) > 0]


def shutdown(settings: StackSettings, timeout_s: float = 90.0) -> list[int]:
    """Stop every program and supervisord; returns PIDs that had to be killed (should be none)."""
    pid = supervisord_pid(settings)
    if pid is None:
        return []
    pids = child_pids(settings)
    ctl(settings, "stop", f"{APPS_GROUP}:*", check=False)  # apps first: they flush into the infra
    ctl(settings, "shutdown", check=False)
    deadline = time.monotonic() + timeout_s
    survivors = [pid, *pids]
    while time.monotonic() < deadline:
        survivors = [p for p in survivors if _alive(p)]
        if not survivors:
            return []
        time.sleep(0.5)
    for p in survivors:
        try:
            os.killpg(p, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            with contextlib.suppress(ProcessLookupError):  # it may have exited since the last check
                os.kill(p, signal.SIGKILL)
    return survivors


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still "exists"; treat it as gone
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except (OSError, IndexError):
        return False
    return state != "Z"
