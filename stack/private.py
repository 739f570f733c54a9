"""Private, throw-away servers on free ports: what the test fixtures and the benchmarks start.

The same start-up code as ``make up`` (:mod:`stack.services`), run directly (:func:`stack.runner.running`) with
data and logs under a temporary directory: :func:`temp_home` makes it, :func:`private_settings` picks free
ports, and :func:`run_kafka`, :func:`run_postgres` and :func:`run_redis` start one server each and stop it on
exit. PostgreSQL and Redis are non-durable unless asked otherwise (fsync off, no persistence).
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from stack.runner import ManagedProcess, running
from stack.services import free_port, prepare_kafka, prepare_postgres, prepare_redis
from stack.settings import REPO_ROOT, StackSettings


@contextlib.contextmanager
def temp_home(prefix: str) -> Iterator[Path]:
    """A temporary directory others can traverse (PostgreSQL runs as the 'postgres' user when we are root),
    removed with everything in it on exit."""
    home = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        home.chmod(0o755)
        yield home
    finally:
        shutil.rmtree(home, ignore_errors=True)


def private_settings(**overrides: Any) -> StackSettings:
    """Stack settings with every server port free right now; Kafka jars come from the cache in the repo's
    ``.local`` that ``make up`` fills (the servers' data lives wherever the caller runs them). ``overrides`` are
    further :class:`~stack.settings.StackSettings` fields (``kafka_heap="512m"``, ``kafka_partitions=3``)."""
    ports = {
        "kafka_port": free_port(),
        "kafka_controller_port": free_port(),
        "postgres_port": free_port(),
        "redis_port": free_port(),
    }
    return StackSettings(**{"home": REPO_ROOT / ".local", **ports, **overrides})


#: seconds a fresh broker may take to answer (JVM start, KRaft election) on a loaded machine
KAFKA_START_TIMEOUT_S = 120


def run_kafka(settings: StackSettings, home: Path) -> contextlib.AbstractContextManager[ManagedProcess]:
    """A single-node KRaft broker with data and log under ``home``, running until the context exits."""
    return running(prepare_kafka(settings, home / "data"), home / "logs", timeout_s=KAFKA_START_TIMEOUT_S)


def run_postgres(
    settings: StackSettings, home: Path, durable: bool = False
) -> contextlib.AbstractContextManager[ManagedProcess]:
    """A PostgreSQL cluster (fsync off unless ``durable``) under ``home``, running until the context exits."""
    return running(prepare_postgres(settings, home / "data", durable=durable), home / "logs", timeout_s=60)


def run_redis(settings: StackSettings, home: Path) -> contextlib.AbstractContextManager[ManagedProcess]:
    """A Redis server without persistence under ``home``, running until the context exits."""
    return running(prepare_redis(settings, home / "data", durable=False), home / "logs", timeout_s=30)
