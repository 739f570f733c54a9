"""Private servers for the benchmarks: :func:`local_stack` starts Kafka (optional), PostgreSQL and Redis.

Same stack code as ``tests/conftest.py``: a temporary directory, free ports, throw-away (non-durable)
PostgreSQL and Redis, a migrated database ``bench``; everything stopped and removed on exit.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stack.migrate import apply_migrations
from stack.runner import running
from stack.services import (
    create_database,
    create_topics,
    database_url_for,
    free_port,
    prepare_kafka,
    prepare_postgres,
    prepare_redis,
)
from stack.settings import REPO_ROOT, StackSettings

if TYPE_CHECKING:
    from flows.settings import FlowSettings


@dataclass(frozen=True)
class LocalStack:
    """Endpoints of the servers :func:`local_stack` started, and its temporary directory (removed on exit)."""

    bootstrap: str  # "" when started without Kafka
    database_url: str
    redis_url: str
    home: Path

    def flow_settings(self, **overrides: Any) -> FlowSettings:
        """Flow settings pointing at this stack, with fresh topic names for bars and dead letters."""
        from flows.settings import FlowSettings

        suffix = uuid.uuid4().hex[:8]
        fields: dict[str, Any] = {
            "kafka_bootstrap_servers": self.bootstrap,
            "database_url": self.database_url,
            "redis_url": self.redis_url,
            "topic_bars": f"bench-bars-{suffix}",
            "topic_dead_letter": f"bench-dlq-{suffix}",
            "metrics_port": 0,
            **overrides,
        }
        settings = FlowSettings(**fields)
        create_topics(self.bootstrap, [settings.topic_bars, settings.topic_dead_letter], 3)
        return settings


@contextlib.contextmanager
def local_stack(partitions: int = 3, kafka: bool = True) -> Iterator[LocalStack]:
    """Kafka (unless ``kafka`` is false), PostgreSQL (migrated database ``bench``) and Redis on free ports."""
    home = Path(tempfile.mkdtemp(prefix="md-bench-stack-"))
    home.chmod(0o755)  # PostgreSQL runs as the 'postgres' user when we are root
    settings = StackSettings(
        home=REPO_ROOT / ".local",
        kafka_port=free_port(),
        kafka_controller_port=free_port(),
        postgres_port=free_port(),
        redis_port=free_port(),
        kafka_heap="1g",
        kafka_partitions=partitions,
    )
    data, logs = home / "data", home / "logs"
    try:
        with contextlib.ExitStack() as servers:
            if kafka:
                servers.enter_context(running(prepare_kafka(settings, data), logs, timeout_s=120))
            servers.enter_context(running(prepare_postgres(settings, data, durable=False), logs, timeout_s=60))
            servers.enter_context(running(prepare_redis(settings, data, durable=False), logs, timeout_s=30))
            create_database(settings, "bench")
            url = database_url_for(settings, "bench")
            apply_migrations(url)
            bootstrap = settings.kafka_bootstrap_servers if kafka else ""
            yield LocalStack(bootstrap, url, settings.redis_url, home)
    finally:
        shutil.rmtree(home, ignore_errors=True)
