"""The platform's own processes for ``make up``: simulator, bars, ticks and anomalies flows, gateway.

Each is a :class:`~stack.services.ServiceSpec` run by supervisord after the infrastructure is ready; readiness
is the process's own HTTP endpoint (``/metrics`` or ``/health``).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from common.errors import StackError
from stack.services import ServiceSpec, http_ok, metrics_ready
from stack.settings import CLUSTER_PORT_OFFSET, REPO_ROOT, StackSettings


def _python() -> str:
    return sys.executable


def init_recovery(directory: Path, partitions: int) -> None:
    """Create Bytewax recovery partitions once (``python -m bytewax.recovery DIR N``)."""
    if directory.exists() and any(directory.glob("part-*.sqlite3")):
        return
    directory.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [_python(), "-m", "bytewax.recovery", str(directory), str(partitions)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        msg = f"could not initialise Bytewax recovery in {directory}: {proc.stderr[-2000:]}"
        raise StackError(msg)


def _flow_spec(
    name: str, module: str, recovery: Path, port: int, port_setting: str, port_env: str, extra: list[str] | None = None
) -> ServiceSpec:
    """A Bytewax flow under supervision: recovery on (snapshot every 30 s), metrics on ``port``."""
    argv = [_python(), "-m", "bytewax.run", module, "-r", str(recovery), "-s", "30", "-b", "0", *(extra or [])]
    return ServiceSpec(
        name=name,
        argv=argv,
        port=port,
        port_setting=port_setting,
        ready=metrics_ready(port),
        env={port_env: str(port)},
        cwd=REPO_ROOT,
    )


def app_specs(settings: StackSettings) -> list[ServiceSpec]:
    """Supervised processes of the platform, in start order."""
    specs: list[ServiceSpec] = []
    recovery = settings.data_dir / "recovery"
    n = settings.flow_processes
    init_recovery(recovery / "bars", max(2, n))
    init_recovery(recovery / "ticks", 2)
    init_recovery(recovery / "anomalies", 2)
    addresses = ";".join(f"127.0.0.1:{settings.flow_metrics_port + CLUSTER_PORT_OFFSET + i}" for i in range(n))
    for i in range(n):
        cluster = ["-i", str(i), "-a", addresses] if n > 1 else []
        port = settings.flow_metrics_port + i
        specs.append(
            _flow_spec(
                f"bars-{i}", "flows.bars", recovery / "bars", port,
                "STACK_FLOW_METRICS_PORT", "FLOW_METRICS_PORT", cluster,
            )
        )  # fmt: skip
    specs.append(
        _flow_spec(
            "ticks", "flows.ticks", recovery / "ticks", settings.ticks_flow_metrics_port,
            "STACK_TICKS_FLOW_METRICS_PORT", "FLOW_METRICS_PORT",
        )
    )  # fmt: skip
    specs.append(
        _flow_spec(
            "anomalies", "flows.anomalies", recovery / "anomalies", settings.anomalies_flow_metrics_port,
            "STACK_ANOMALIES_FLOW_METRICS_PORT", "ANOMALY_METRICS_PORT",
        )
    )  # fmt: skip
    port = settings.api_port
    specs.append(
        ServiceSpec(
            name="gateway",
            argv=[_python(), "-m", "api"],
            port=port,
            port_setting="API_PORT",
            ready=lambda: http_ok(f"http://127.0.0.1:{port}/health"),
            env={"API_PORT": str(port), "PROMETHEUS_MULTIPROC_DIR": str(settings.run_dir / "gateway-metrics")},
            cwd=REPO_ROOT,
        )
    )
    port = settings.simulator_metrics_port
    specs.append(
        ServiceSpec(
            name="simulator",
            argv=[_python(), "-m", "simulator", "run", "--backfill", str(settings.backfill_hours)],
            port=port,
            port_setting="STACK_SIMULATOR_METRICS_PORT",
            ready=metrics_ready(port),
            env={"SIM_METRICS_PORT": str(port)},
            cwd=REPO_ROOT,
        )
    )
    return specs


def scrape_targets(settings: StackSettings) -> dict[str, list[str]]:
    """Prometheus file_sd targets per job: every process's metrics endpoint."""
    return {
        "simulator": [f"127.0.0.1:{settings.simulator_metrics_port}"],
        "flow-bars": [f"127.0.0.1:{settings.flow_metrics_port + i}" for i in range(settings.flow_processes)],
        "flow-ticks": [f"127.0.0.1:{settings.ticks_flow_metrics_port}"],
        "flow-anomalies": [f"127.0.0.1:{settings.anomalies_flow_metrics_port}"],
        "gateway": [f"127.0.0.1:{settings.api_port}"],
        "prometheus": [f"127.0.0.1:{settings.prometheus_port}"],
    }
