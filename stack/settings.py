"""Settings of the local stack (``make up`` / ``make down``): data locations, ports, Kafka layout."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import SettingsConfigDict

from common.settings import BASE_CONFIG, SharedSettings

REPO_ROOT = Path(__file__).resolve().parent.parent


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
