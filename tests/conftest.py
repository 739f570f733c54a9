"""Session fixtures that start real servers (Kafka, PostgreSQL, Redis) on free ports for integration tests.

They use the same start-up code as ``make up`` and the benchmarks (:mod:`stack.private`), in a throw-away
directory, and are only started when a test asks for them, so unit tests never touch the network. Each test gets
its own topics (``make_topic``), its own database cloned from a migrated template (``pg_url``) and an empty Redis
(``redis_url``).
"""

from __future__ import annotations

import signal
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from stack.private import private_settings, run_kafka, run_postgres, run_redis, temp_home
from stack.runner import ManagedProcess
from stack.services import create_database, create_topics, database_url_for
from stack.settings import StackSettings
from tests.support import Child


def pytest_configure(config: pytest.Config) -> None:
    """SIGTERM (CI cancelling a job, ``timeout``) ends the run like Ctrl-C, so fixture teardown still stops the
    Kafka, PostgreSQL and Redis servers the session started instead of leaving them running."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)


@pytest.fixture(scope="session")
def stack_home() -> Iterator[Path]:
    """A world-traversable temp dir (PostgreSQL runs as the 'postgres' user when tests run as root)."""
    with temp_home("md-test-stack-") as home:
        yield home


@pytest.fixture(scope="session")
def stack_settings(stack_home: Path) -> StackSettings:
    """Settings of the test stack: free ports, data under ``stack_home``; jars cached in the repo's .local."""
    return private_settings(kafka_heap="512m", kafka_partitions=3)


@pytest.fixture(scope="session")
def kafka_server(stack_settings: StackSettings, stack_home: Path) -> Iterator[ManagedProcess]:
    """A real single-node KRaft broker."""
    with run_kafka(stack_settings, stack_home) as proc:
        yield proc


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_server: ManagedProcess, stack_settings: StackSettings) -> str:
    """``host:port`` of the test broker."""
    return stack_settings.kafka_bootstrap_servers


@pytest.fixture
def make_topic(kafka_bootstrap: str) -> Callable[..., str]:
    """Create a uniquely named topic: ``make_topic(partitions=6, config=None) -> name``."""

    def make(partitions: int = 6, prefix: str = "t", config: dict[str, str] | None = None) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        create_topics(kafka_bootstrap, [name], partitions, config)
        return name

    return make


@pytest.fixture(scope="session")
def postgres_server(stack_settings: StackSettings, stack_home: Path) -> Iterator[ManagedProcess]:
    """A real PostgreSQL server (private cluster, fsync off)."""
    with run_postgres(stack_settings, stack_home) as proc:
        yield proc


@pytest.fixture(scope="session")
def pg_template(postgres_server: ManagedProcess, stack_settings: StackSettings) -> str:
    """Name of a database with every migration applied, cloned for each test."""
    from stack.migrate import apply_migrations

    name = "md_template"
    create_database(stack_settings, name)
    apply_migrations(database_url_for(stack_settings, name))
    return name


@pytest.fixture
def make_database(pg_template: str, stack_settings: StackSettings) -> Iterator[Callable[[], str]]:
    """Factory of fresh, migrated databases (clones of the session template): ``make_database() -> url``.

    Every database it made is dropped at the end of the test."""
    import psycopg
    from psycopg import sql

    admin = database_url_for(stack_settings, "postgres")
    made: list[str] = []

    def make() -> str:
        name = f"md_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(pg_template))
            )
        made.append(name)
        return database_url_for(stack_settings, name)

    yield make
    with psycopg.connect(admin, autocommit=True) as conn:
        for name in made:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def pg_url(make_database: Callable[[], str]) -> str:
    """URL of a fresh, migrated database of this test's own (dropped afterwards)."""
    return make_database()


@pytest.fixture(scope="session")
def redis_server(stack_settings: StackSettings, stack_home: Path) -> Iterator[ManagedProcess]:
    """A real Redis server without persistence."""
    with run_redis(stack_settings, stack_home) as proc:
        yield proc


@pytest.fixture
def redis_url(redis_server: ManagedProcess, stack_settings: StackSettings) -> str:
    """URL of the test Redis, emptied before the test."""
    import redis

    client = redis.Redis.from_url(stack_settings.redis_url)
    client.flushall()
    client.close()
    return stack_settings.redis_url


@pytest.fixture
def spawn() -> Iterator[Callable[..., Child]]:
    """Factory of child processes: ``spawn(argv, env, log) -> Child`` (cwd: the repo; stdout and stderr
    appended to ``log``; ``env`` is the whole environment, see :func:`tests.support.service_env`).

    A test may stop a child itself (``stop()``: SIGTERM then SIGKILL; ``kill9()``); whatever is still running
    at teardown is stopped the same way, newest first, and every log is closed."""
    children: list[Child] = []

    def start(argv: list[str], env: Mapping[str, str], log: Path) -> Child:
        child = Child(argv, env, log)
        children.append(child)
        return child

    yield start
    for child in reversed(children):
        child.stop()
