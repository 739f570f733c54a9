"""Runs a :class:`~stack.services.ServiceSpec` as a child process: used by the test fixtures.

Each process gets its own session (so stopping it stops its children), a log file, and is stopped with
SIGTERM then SIGKILL after a grace period.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

from common.errors import StackError
from stack.services import ServiceSpec, ensure_port_free, wait_until


class ManagedProcess:
    """A started service: its Popen handle and log file."""

    def __init__(self, spec: ServiceSpec, log_dir: Path) -> None:
        self.spec = spec
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_file = log_dir / f"{spec.name}.log"
        ensure_port_free(spec.port, spec.port_setting, spec.name)
        with self.log_file.open("ab") as out:
            self.proc = subprocess.Popen(  # noqa: S603 - argv built from settings, no shell
                spec.argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=spec.cwd,
                env={**os.environ, **spec.env},
                user=spec.user,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        """Process id of the service."""
        return self.proc.pid

    def wait_ready(self, timeout_s: float = 90.0) -> None:
        """Block until the service answers its readiness check."""

        def ready() -> bool:
            code = self.proc.poll()
            if code is not None:
                msg = f"exited with code {code} before it was ready"
                raise StackError(msg)
            return self.spec.ready()

        wait_until(ready, timeout_s, f"{self.spec.name} (pid {self.pid}, port {self.spec.port})", self.log_file)

    def kill(self) -> None:
        """SIGKILL the whole process group at once (crash simulation)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self, grace_s: float = 20.0) -> None:
        """SIGTERM the process group; SIGKILL what is left after ``grace_s``."""
        if self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            self.kill()


@contextlib.contextmanager
def running(spec: ServiceSpec, log_dir: Path, timeout_s: float = 90.0) -> Iterator[ManagedProcess]:
    """Start ``spec``, wait until ready, yield it, and stop it on exit."""
    proc = ManagedProcess(spec, log_dir)
    try:
        proc.wait_ready(timeout_s)
        yield proc
    finally:
        proc.stop()
