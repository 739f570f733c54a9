"""Shared by the benchmarks: :func:`local_stack` starts Kafka (optional), PostgreSQL and Redis;
:func:`export_revision` checks out an older revision's packages to compare with in the same run.

Same stack code as ``tests/conftest.py`` (:mod:`stack.private`): a temporary directory, free ports, throw-away
(non-durable) PostgreSQL and Redis, a migrated database ``bench``; everything stopped and removed on exit.
"""

from __future__ import annotations

import contextlib
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stack.migrate import apply_migrations
from stack.private import private_settings, run_kafka, run_postgres, run_redis, temp_home
from stack.services import create_database, create_topics, database_url_for
from stack.settings import StackSettings

if TYPE_CHECKING:
    from flows.settings import FlowSettings


@dataclass(frozen=True)
class LocalStack:
    """Endpoints of the servers :func:`local_stack` started, and its temporary directory (removed on exit)."""

    bootstrap: str  # "" when started without Kafka
    database_url: str  # "" without PostgreSQL
    redis_url: str  # "" without Redis
    home: Path
    settings: StackSettings  # ports and credentials (e.g. for another database on the same server)

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
def local_stack(
    partitions: int = 3, kafka: bool = True, postgres: bool = True, redis: bool = True, durable: bool = False
) -> Iterator[LocalStack]:
    """The servers asked for on free ports: Kafka, PostgreSQL (migrated database ``bench``; fsync on only if
    ``durable``, as ``make up``) and Redis."""
    settings = private_settings(kafka_heap="1g", kafka_partitions=partitions)
    with temp_home("md-bench-stack-") as home, contextlib.ExitStack() as servers:
        if kafka:
            servers.enter_context(run_kafka(settings, home))
        url = ""
        if postgres:
            servers.enter_context(run_postgres(settings, home, durable=durable))
            create_database(settings, "bench")
            url = database_url_for(settings, "bench")
            apply_migrations(url)
        if redis:
            servers.enter_context(run_redis(settings, home))
        bootstrap = settings.kafka_bootstrap_servers if kafka else ""
        yield LocalStack(bootstrap, url, settings.redis_url if redis else "", home, settings)


def export_revision(rev: str, into: Path, packages: tuple[str, ...] = ("api",)) -> Path:
    """The ``packages`` (default: ``api``; ``()``: the whole tree) of git revision ``rev`` in a fresh directory
    (importable from there): the "before" side of a same-run comparison."""
    into.mkdir(parents=True)
    archive = subprocess.run(  # noqa: S603
        ["git", "archive", rev, *packages],  # noqa: S607
        cwd=Path(__file__).resolve().parent.parent,
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)  # noqa: S603, S607
    return into
