"""Settings of the local stack (``make up`` / ``make down``): data locations, ports, Kafka layout."""

from __future__ import annotations

from pathlib import Path
from typing import Self

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import SettingsConfigDict

from common.settings import BASE_CONFIG, SharedSettings

REPO_ROOT = Path(__file__).resolve().parent.parent
#: the bars flow processes' cluster addresses (``bytewax -a``) are this far above their metrics ports
CLUSTER_PORT_OFFSET = 100


class StackSettings(SharedSettings):
    """Where the local services keep their data and which ports they use (prefix ``STACK_`` for the rest)."""

    model_config = SettingsConfigDict(**BASE_CONFIG, env_prefix="STACK_")

    home: Path = Field(REPO_ROOT / ".local", description="data, logs, pids and downloaded jars (git-ignored)")
    kafka_version: str = Field("3.9.1", pattern=r"^\d+\.\d+\.\d+$")
    kafka_controller_port: int = Field(9093, ge=1, le=65535)
    kafka_partitions: int = Field(6, ge=1, le=1024, description="partitions of every platform topic")
    kafka_heap: str = "1g"
    prometheus_port: int = Field(9090, ge=1, le=65535)
    #: the gateway's port: ``API_PORT`` (what the gateway itself reads, and what .env.example sets) or STACK_API_PORT
    api_port: int = Field(8000, ge=1, le=65535, validation_alias=AliasChoices("API_PORT", "STACK_API_PORT", "api_port"))
    simulator_metrics_port: int = Field(9101, ge=1, le=65535)
    flow_metrics_port: int = Field(9102, ge=1, le=65535, description="first flow process; +1 per process")
    ticks_flow_metrics_port: int = Field(9110, ge=1, le=65535)
    anomalies_flow_metrics_port: int = Field(9111, ge=1, le=65535)
    flow_processes: int = Field(1, ge=1, le=16, description="bars flow processes (bytewax -i/-a)")
    backfill_hours: float = Field(48.0, ge=0, description="history backfilled by `make up` before real time")
    start_timeout_s: float = Field(120.0, gt=0)

    @model_validator(mode="after")
    def _distinct_ports(self) -> Self:
        """Every port the stack listens on is used once: the bars flow takes ``flow_processes`` metrics ports
        from ``flow_metrics_port`` (and as many cluster ports :data:`CLUSTER_PORT_OFFSET` above), so e.g. 9
        processes from 9102 would run into the ticks flow's 9110."""
        owners: dict[int, str] = {}
        for port, what in self._ports():
            if port > 65535:
                msg = f"{what} would be port {port}, above 65535: lower STACK_FLOW_METRICS_PORT or STACK_FLOW_PROCESSES"
                raise ValueError(msg)
            if port in owners:
                msg = f"port {port} is used twice, as {owners[port]} and as {what}: change one of these settings"
                raise ValueError(msg)
            owners[port] = what
        return self

    def _ports(self) -> list[tuple[int, str]]:
        """(port, what uses it and which setting sets it) of every listener ``make up`` starts."""
        n, first = self.flow_processes, self.flow_metrics_port
        of_n = f"of STACK_FLOW_PROCESSES={n}"
        bars = [
            (first + i, f"the metrics port of bars flow process {i} {of_n} (STACK_FLOW_METRICS_PORT + {i})")
            for i in range(n)
        ]
        offset = CLUSTER_PORT_OFFSET
        cluster = [  # only a cluster of several processes listens on them
            (
                first + offset + i,
                f"the cluster port of bars flow process {i} {of_n} (STACK_FLOW_METRICS_PORT + {offset + i})",
            )
            for i in range(n if n > 1 else 0)
        ]
        return [
            *bars,
            *cluster,
            (self.ticks_flow_metrics_port, "the ticks flow's metrics port (STACK_TICKS_FLOW_METRICS_PORT)"),
            (self.anomalies_flow_metrics_port, "the anomalies flow's metrics port (STACK_ANOMALIES_FLOW_METRICS_PORT)"),
            (self.simulator_metrics_port, "the simulator's metrics port (STACK_SIMULATOR_METRICS_PORT)"),
            (self.api_port, "the gateway's port (API_PORT)"),
            (self.prometheus_port, "Prometheus's port (STACK_PROMETHEUS_PORT)"),
            (self.kafka_port, "Kafka's port (KAFKA_PORT)"),
            (self.kafka_controller_port, "the Kafka controller's port (STACK_KAFKA_CONTROLLER_PORT)"),
            (self.postgres_port, "PostgreSQL's port (POSTGRES_PORT)"),
            (self.redis_port, "Redis's port (REDIS_PORT)"),
        ]

    @property
    def run_dir(self) -> Path:
        """PID files, sockets and the supervisord config."""
        return self.home / "run"

    @property
    def log_dir(self) -> Path:
        """One log file per process."""
        return self.home / "logs"

    @property
    def data_dir(self) -> Path:
        """Kafka log dirs, PostgreSQL cluster, Redis dump, Prometheus TSDB, Bytewax recovery."""
        return self.home / "data"
