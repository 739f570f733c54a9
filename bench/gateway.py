"""The gateway (``python -m api``) as a benchmark subject: one helper for ``bench_api_rest`` and ``bench_api_ws``.

Built on :class:`stack.services.ServiceSpec` and :class:`stack.runner.ManagedProcess` (own session, log file,
SIGTERM then SIGKILL on exit, log tail in the error when it does not become ready), plus one thing
:func:`stack.runner.running` does not do: stop waiting as soon as the gateway has exited.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from stack.runner import ManagedProcess, running
from stack.services import ServiceSpec

ROOT = Path(__file__).resolve().parent.parent


def gateway_spec(
    name: str,
    port: int,
    env: dict[str, str],
    *,
    workers: int = 1,
    rate_limit: str = "",
    code_dir: Path | None = None,
    ready_path: str = "/health",
    ready_timeout_s: float = 1.0,
) -> ServiceSpec:
    """``python -m api`` on ``port``, quiet (no access log, WARNING), no rate limits unless ``rate_limit``.

    ``env`` adds the endpoints (and anything else); ``code_dir`` runs the ``api`` package found there (an
    exported revision) with the working tree behind it on ``PYTHONPATH``; default: the working tree.
    """
    full_env = {**env}
    if code_dir is not None:
        full_env["PYTHONPATH"] = f"{code_dir}{os.pathsep}{ROOT}"
    full_env |= {
        "API_PORT": str(port),
        "API_WORKERS": str(workers),
        "API_RATE_LIMIT": rate_limit,
        "API_RATE_LIMIT_WS_CONNECT": "",
        "API_ACCESS_LOG": "false",
        "API_LOG_LEVEL": "WARNING",
        "API_BIND_HOST": "127.0.0.1",
    }
    url = f"http://127.0.0.1:{port}{ready_path}"
    return ServiceSpec(
        name=name,
        argv=[sys.executable, "-m", "api"],
        port=port,
        port_setting="API_PORT",
        ready=lambda: httpx.get(url, timeout=ready_timeout_s).status_code == 200,
        env=full_env,
        cwd=code_dir or ROOT,
    )


@contextlib.contextmanager
def running_gateway(
    spec: ServiceSpec, log_dir: Path, timeout_s: float = 60.0, settle_s: float = 0.0
) -> Iterator[ManagedProcess]:
    """Start ``spec`` with :func:`stack.runner.running` (fails at once, with the log tail, if it exits before it is
    ready), let every worker finish its start-up for ``settle_s``, yield, stop.

    CPU and memory of the gateway: read them for ``.pid`` (the ``python -m api`` process; workers are its children).
    """
    with running(spec, log_dir, timeout_s) as proc:
        time.sleep(settle_s)
        yield proc
