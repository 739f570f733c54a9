"""The four infrastructure services as command lines plus their preparation and readiness checks.

One :class:`ServiceSpec` per service describes how to run it; ``prepare_*`` functions create its data
directory and config (idempotently) and return the spec. :mod:`stack.runner` starts specs directly (tests),
:mod:`stack.supervisor` hands them to supervisord (``make up``): both run the same command lines.
"""

from __future__ import annotations

import base64
import logging
import os
import pwd
import shutil
import socket
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from common.errors import StackError
from stack.settings import REPO_ROOT, StackSettings
from stack.system import kafka_classpath, postgres_bin_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServiceSpec:
    """How to run one long-lived process and how to tell it is ready."""

    name: str
    argv: list[str]
    port: int
    port_setting: str
    ready: Callable[[], bool]
    env: dict[str, str] = field(default_factory=dict)
    user: str | None = None
    cwd: Path | None = None


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """True when something already listens on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def ensure_port_free(port: int, setting: str, what: str) -> None:
    """Fail with a message naming the port and the setting that moves it when the port is taken."""
    if port_in_use(port):
        msg = f"port {port} for {what} is already in use; set {setting} in .env to use another port"
        raise StackError(msg)


def free_port() -> int:
    """A TCP port that is free right now (for tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _log_tail(log_file: Path | None, lines: int = 20) -> str:
    if log_file is None or not log_file.exists():
        return ""
    tail = "\n".join(log_file.read_text(errors="replace").splitlines()[-lines:])
    return f"\n--- last lines of {log_file} ---\n{tail}"


def wait_until(check: Callable[[], bool], timeout_s: float, what: str, log_file: Path | None = None) -> None:
    """Poll ``check`` until it is true; raise naming ``what``, the last error seen and the log tail.

    Any other exception of ``check`` means "not ready yet"; a :class:`StackError` from it (e.g. the process
    exited) ends the wait at once instead of after ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    last_err: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except StackError as err:
            msg = f"{what}: {err}{_log_tail(log_file)}"
            raise StackError(msg) from err
        except Exception as err:  # noqa: BLE001 - not ready yet is any other error; kept for the message
            last_err = err
        time.sleep(0.25)
    detail = f" (last error: {last_err!r})" if last_err is not None else ""
    msg = f"{what} did not become ready within {timeout_s:.0f} s{detail}{_log_tail(log_file)}"
    raise StackError(msg)


def _run_as_owner() -> str | None:
    """PostgreSQL refuses to run as root: use the 'postgres' account when we are root."""
    return "postgres" if os.geteuid() == 0 else None


def _chown_for(path: Path, user: str | None) -> None:
    if user is None:
        return
    pw = pwd.getpwnam(user)
    for p in [path, *path.rglob("*")]:
        os.chown(p, pw.pw_uid, pw.pw_gid)


def http_ok(url: str) -> bool:
    """Whether a GET of ``url`` answers 2xx within a second (raises if nothing answers)."""
    with urllib.request.urlopen(url, timeout=1) as resp:  # noqa: S310 - local http only
        status: int = resp.status
        return 200 <= status < 300


def metrics_ready(port: int) -> Callable[[], bool]:
    """Readiness check of a process serving Prometheus ``/metrics`` on ``port`` of localhost."""
    return lambda: http_ok(f"http://127.0.0.1:{port}/metrics")


# --------------------------------------------------------------------------- Kafka


def prepare_kafka(settings: StackSettings, data_dir: Path, retention_hours: int = 168) -> ServiceSpec:
    """Render ``server.properties``, format KRaft storage once, and return the broker's spec."""
    libs = kafka_classpath(settings)
    home = data_dir / "kafka"
    log_dir = home / "log"
    home.mkdir(parents=True, exist_ok=True)
    template = (REPO_ROOT / "stack" / "kafka" / "server.properties").read_text()
    config = home / "server.properties"
    config.write_text(
        template.format(
            port=settings.kafka_port,
            controller_port=settings.kafka_controller_port,
            log_dir=log_dir,
            partitions=settings.kafka_partitions,
            retention_hours=retention_hours,
        )
    )
    java = shutil.which("java") or "java"
    classpath = f"{libs}/*"
    log4j = f"-Dlog4j.configuration=file:{REPO_ROOT / 'stack' / 'kafka' / 'log4j.properties'}"
    if not (log_dir / "meta.properties").exists():
        cluster_id = _kafka_cluster_id(home)
        argv = [java, "-cp", classpath, log4j, "kafka.tools.StorageTool", "format",
                "-t", cluster_id, "-c", str(config), "--ignore-formatted"]  # fmt: skip
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            msg = f"formatting Kafka storage in {log_dir} failed: {proc.stdout}{proc.stderr}"
            raise StackError(msg)
    bootstrap = f"127.0.0.1:{settings.kafka_port}"
    return ServiceSpec(
        name="kafka",
        argv=[
            java,
            f"-Xmx{settings.kafka_heap}",
            f"-Xms{settings.kafka_heap}",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            "-cp",
            classpath,
            log4j,
            "kafka.Kafka",
            str(config),
        ],  # fmt: skip
        port=settings.kafka_port,
        port_setting="KAFKA_PORT",
        # probe the port first: librdkafka logs every refused connection to stderr
        ready=lambda: port_in_use(settings.kafka_port) and kafka_ready(bootstrap),
    )


def _kafka_cluster_id(home: Path) -> str:
    """A stable KRaft cluster id (base64 UUID) kept beside the data (read only before storage is formatted).

    Never one starting with ``-``: ``kafka-storage format -t -xyz…`` reads that as an option and fails (about
    one fresh stack in 64); Kafka's own ``Uuid.randomUuid()`` skips such ids for the same reason.
    """
    path = home / "cluster.id"
    cluster_id = path.read_text().strip() if path.exists() else ""
    while not cluster_id or cluster_id.startswith("-"):
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        path.write_text(cluster_id)
    return cluster_id


def kafka_ready(bootstrap: str) -> bool:
    """True when the broker answers a metadata request."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 1000})
    return len(admin.list_topics(timeout=1).brokers) > 0


#: ``market-ticks`` records carry the broker's append time: the bars flow's log clock then needs only a small idle
#: margin (``FLOW_IDLE_CLOSE_APPEND_MS``) and does not depend on producers' clocks or linger (docs/flows.md)
TICKS_TOPIC_CONFIG = {"message.timestamp.type": "LogAppendTime"}


def create_topics(bootstrap: str, topics: list[str], partitions: int, config: dict[str, str] | None = None) -> None:
    """Create ``topics`` with ``partitions`` each and topic ``config``; existing topics are left as they are."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    admin = AdminClient({"bootstrap.servers": bootstrap})
    existing = set(admin.list_topics(timeout=10).topics)
    new = [
        NewTopic(t, num_partitions=partitions, replication_factor=1, config=config or {})
        for t in topics
        if t not in existing
    ]
    if not new:
        return
    for topic, future in admin.create_topics(new, operation_timeout=30).items():
        try:
            future.result()
        except KafkaException as err:
            if err.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:  # created meanwhile by another process
                log.info("topic %s already exists", topic)
                continue
            msg = f"could not create Kafka topic {topic!r} on {bootstrap}: {err}"
            raise StackError(msg) from err
        log.info("created topic %s with %d partitions", topic, partitions)


def ensure_topic_config(bootstrap: str, topic: str, config: dict[str, str]) -> dict[str, str]:
    """Set ``config`` on the existing ``topic`` where its values differ (an older ``make up`` created it without
    them); returns the previous values of what was changed."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import (  # type: ignore[attr-defined]
        AdminClient,
        AlterConfigOpType,
        ConfigEntry,
        ConfigResource,
        ResourceType,
    )

    admin = AdminClient({"bootstrap.servers": bootstrap})
    resource = ConfigResource(ResourceType.TOPIC, topic)
    try:
        current = admin.describe_configs([resource])[resource].result(timeout=30)
        changed = {k: current[k].value for k, v in config.items() if k in current and current[k].value != v}
        if changed:
            entries = [ConfigEntry(k, config[k], incremental_operation=AlterConfigOpType.SET) for k in changed]
            update = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=entries)
            admin.incremental_alter_configs([update])[update].result(timeout=30)
    except KafkaException as err:
        msg = f"could not set {config} on Kafka topic {topic!r} at {bootstrap}: {err}"
        raise StackError(msg) from err
    return changed


# --------------------------------------------------------------------------- PostgreSQL


def prepare_postgres(settings: StackSettings, data_dir: Path, durable: bool = True) -> ServiceSpec:
    """``initdb`` a private cluster once (not the system one) and return the server's spec."""
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        msg = "PostgreSQL server binaries not found under /usr/lib/postgresql (package 'postgresql')"
        raise StackError(msg)
    owner = _run_as_owner()
    pgdata = data_dir / "postgres"
    if not (pgdata / "PG_VERSION").exists():
        pgdata.mkdir(parents=True, exist_ok=True)
        pwfile = data_dir / ".pgpass.init"
        pwfile.write_text(settings.postgres_password.get_secret_value() + "\n")
        _chown_for(pgdata, owner)
        _chown_for(pwfile, owner)
        argv = [str(bin_dir / "initdb"), "-D", str(pgdata), "-U", settings.postgres_user, "-E", "UTF8",
                "--locale=C.UTF-8", "--auth-local=trust", "--auth-host=scram-sha-256",
                f"--pwfile={pwfile}"]  # fmt: skip
        proc = subprocess.run(argv, capture_output=True, text=True, check=False, user=owner)
        pwfile.unlink()
        if proc.returncode != 0:
            msg = f"initdb in {pgdata} failed: {proc.stderr[-2000:]}"
            raise StackError(msg)
    pgdata.chmod(0o700)
    argv = [str(bin_dir / "postgres"), "-D", str(pgdata), "-p", str(settings.postgres_port),
            "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=",
            "-c", "max_connections=200", "-c", "shared_buffers=256MB", "-c", "logging_collector=off"]  # fmt: skip
    if not durable:  # throw-away test clusters: durability buys nothing there
        argv += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
    url = database_url_for(settings, "postgres")
    return ServiceSpec(
        name="postgres",
        argv=argv,
        port=settings.postgres_port,
        port_setting="POSTGRES_PORT",
        ready=lambda: _pg_ready(url),
        user=owner,
        cwd=pgdata,
    )


def database_url_for(settings: StackSettings, dbname: str) -> str:
    """URL of database ``dbname`` on the stack's local PostgreSQL server."""
    pw = settings.postgres_password.get_secret_value()
    return f"postgresql://{settings.postgres_user}:{pw}@127.0.0.1:{settings.postgres_port}/{dbname}"


def _pg_ready(url: str) -> bool:
    import psycopg

    with psycopg.connect(url, connect_timeout=1) as conn:
        conn.execute("SELECT 1")
    return True


def create_database(settings: StackSettings, dbname: str | None = None) -> None:
    """Create the application database (or ``dbname``) on the server ``DATABASE_URL`` points at, if missing."""
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    url = settings.database_url.get_secret_value()
    name = dbname or str(conninfo_to_dict(url).get("dbname", settings.postgres_db))
    with psycopg.connect(make_conninfo(url, dbname="postgres"), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            log.info("created database %s", name)


# --------------------------------------------------------------------------- Redis


def prepare_redis(settings: StackSettings, data_dir: Path, durable: bool = True) -> ServiceSpec:
    """Redis with the repo's config; append-only persistence unless ``durable`` is false (tests)."""
    home = data_dir / "redis"
    home.mkdir(parents=True, exist_ok=True)
    exe = shutil.which("redis-server") or "redis-server"
    argv = [exe, str(REPO_ROOT / "stack" / "redis" / "redis.conf"), "--port", str(settings.redis_port),
            "--dir", str(home)]  # fmt: skip
    argv += ["--appendonly", "yes"] if durable else ["--save", "", "--appendonly", "no"]
    port = settings.redis_port
    return ServiceSpec(
        name="redis",
        argv=argv,
        port=port,
        port_setting="REDIS_PORT",
        ready=lambda: _redis_ready(port),
    )


def _redis_ready(port: int) -> bool:
    import redis

    client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1)
    try:
        return client.ping() is True
    finally:
        client.close()


# --------------------------------------------------------------------------- Prometheus


def prepare_prometheus(settings: StackSettings, data_dir: Path, targets: dict[str, list[str]]) -> ServiceSpec:
    """Prometheus with the repo's config; scrape targets are written as file_sd JSON per job."""
    import json

    home = data_dir / "prometheus"
    (home / "targets").mkdir(parents=True, exist_ok=True)
    src = REPO_ROOT / "stack" / "prometheus"
    for name in ("prometheus.yml", "alerts.yml"):
        if (src / name).exists():
            shutil.copyfile(src / name, home / name)
    for job, addrs in targets.items():
        (home / "targets" / f"{job}.json").write_text(json.dumps([{"targets": addrs, "labels": {"job": job}}]))
    exe = shutil.which("prometheus") or "prometheus"
    port = settings.prometheus_port
    return ServiceSpec(
        name="prometheus",
        argv=[
            exe,
            f"--config.file={home / 'prometheus.yml'}",
            f"--storage.tsdb.path={home / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--web.enable-lifecycle",
            "--storage.tsdb.retention.time=15d",
        ],  # fmt: skip
        port=port,
        port_setting="STACK_PROMETHEUS_PORT",
        ready=lambda: http_ok(f"http://127.0.0.1:{port}/-/ready"),
        cwd=home,
    )
