"""``python -m stack up|down|clean|status|install|migrate``: the local stack behind ``make up`` and ``make down``."""

from __future__ import annotations

import argparse
import logging
import shutil
import sys

import pydantic

from common.errors import MarketDataError
from stack import supervisor
from stack.apps import app_specs, scrape_targets
from stack.migrate import apply_migrations, storage_flavour
from stack.services import (
    TICKS_TOPIC_CONFIG,
    ServiceSpec,
    create_database,
    create_topics,
    ensure_port_free,
    ensure_topic_config,
    prepare_kafka,
    prepare_postgres,
    prepare_prometheus,
    prepare_redis,
    wait_until,
)
from stack.settings import StackSettings
from stack.system import ensure_system_packages, kafka_classpath

log = logging.getLogger("stack")


def infra_specs(settings: StackSettings) -> list[ServiceSpec]:
    """Kafka, PostgreSQL, Redis and Prometheus, prepared in the stack's data directory."""
    data = settings.data_dir
    return [
        prepare_postgres(settings, data),
        prepare_redis(settings, data),
        prepare_kafka(settings, data),
        prepare_prometheus(settings, data, scrape_targets(settings)),
    ]


def _wait(settings: StackSettings, specs: list[ServiceSpec]) -> None:
    for spec in specs:
        log.info("waiting for %s on port %d", spec.name, spec.port)
        wait_until(spec.ready, settings.start_timeout_s, spec.name, settings.log_dir / f"{spec.name}.log")


def seed_tickers(settings: StackSettings) -> int:
    """Load the simulator's universe into the ``tickers`` table (upsert)."""
    import psycopg

    from simulator.settings import SimulatorSettings
    from simulator.universe import load_universe

    universe = load_universe(SimulatorSettings().preset)
    rows = [(t.symbol, t.name or t.symbol, t.sector, t.start_price) for t in universe.tickers]
    with psycopg.connect(settings.database_url.get_secret_value()) as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO tickers (ticker, name, sector, initial_price) VALUES (%s, %s, %s, round(%s::numeric, 2))"
            " ON CONFLICT (ticker) DO UPDATE SET name = EXCLUDED.name, sector = EXCLUDED.sector,"
            " updated_at = now()",
            rows,
        )
    return len(rows)


def prepare_database(settings: StackSettings) -> tuple[str, int]:
    """Create the database if needed, apply the migrations, load the tickers: (storage flavour, tickers)."""
    create_database(settings)
    url = settings.database_url.get_secret_value()
    apply_migrations(url)
    return storage_flavour(url), seed_tickers(settings)


def up(settings: StackSettings) -> None:
    """Install what is missing, start everything, wait until healthy, print where to look."""
    ensure_system_packages()
    already = supervisor.supervisord_pid(settings) is not None
    infra = infra_specs(settings)
    apps = app_specs(settings)
    if not already:
        for spec in [*infra, *apps]:
            ensure_port_free(spec.port, spec.port_setting, spec.name)
        ensure_port_free(settings.kafka_controller_port, "STACK_KAFKA_CONTROLLER_PORT", "kafka controller")
    supervisor.render(settings, infra, apps)
    supervisor.start_supervisord(settings)
    _wait(settings, infra)
    topics = [settings.topic_ticks, settings.topic_bars, settings.topic_dead_letter, settings.topic_alerts]
    bootstrap, partitions = settings.kafka_bootstrap_servers, settings.kafka_partitions
    create_topics(bootstrap, topics[:1], partitions, TICKS_TOPIC_CONFIG)  # market-ticks: broker append times
    for key, old in ensure_topic_config(bootstrap, settings.topic_ticks, TICKS_TOPIC_CONFIG).items():
        log.info("topic %s: %s changed from %s to %s", settings.topic_ticks, key, old, TICKS_TOPIC_CONFIG[key])
    create_topics(bootstrap, topics[1:], partitions)
    flavour, seeded = prepare_database(settings)
    supervisor.ctl(settings, "start", f"{supervisor.APPS_GROUP}:*")
    _wait(settings, apps)
    print(
        f"""
The synthetic market-data platform is up ({seeded} tickers, storage: {flavour}).

  API docs       http://127.0.0.1:{settings.api_port}/docs
  REST           http://127.0.0.1:{settings.api_port}/api/v1/quote/SYNTH
  WebSocket      ws://127.0.0.1:{settings.api_port}/ws
  Prometheus     http://127.0.0.1:{settings.prometheus_port}
  Metrics        simulator :{settings.simulator_metrics_port}  bars flow :{settings.flow_metrics_port}  \
ticks flow :{settings.ticks_flow_metrics_port}  anomalies flow :{settings.anomalies_flow_metrics_port}  \
gateway :{settings.api_port}/metrics
  Kafka          {settings.kafka_bootstrap_servers}  (topics: {", ".join(topics)})
  PostgreSQL     postgresql://{settings.postgres_user}@127.0.0.1:{settings.postgres_port}/{settings.postgres_db}
  Redis          {settings.redis_url}
  Logs           {settings.log_dir}/
  Processes      .venv/bin/python -m stack status      Stop: make down
"""
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m stack``."""
    parser = argparse.ArgumentParser(prog="python -m stack", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "clean", "status", "install", "migrate"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = StackSettings()
    except pydantic.ValidationError as err:
        log.error("invalid settings: %s", err)  # noqa: TRY400 - the field and the value, not a traceback
        return 2
    try:
        if args.command == "install":
            ensure_system_packages()
            kafka_classpath(settings)
        elif args.command == "migrate":  # docker-compose's one-shot schema job
            log.info("storage: %s; %d tickers loaded", *prepare_database(settings))
        elif args.command == "up":
            up(settings)
        elif args.command in ("down", "clean"):
            killed = supervisor.shutdown(settings)
            if killed:
                log.warning("had to SIGKILL processes that ignored SIGTERM: %s", killed)
            log.info("stack stopped")
            if args.command == "clean":
                shutil.rmtree(settings.data_dir, ignore_errors=True)
                shutil.rmtree(settings.log_dir, ignore_errors=True)
                shutil.rmtree(settings.run_dir, ignore_errors=True)
                log.info("removed %s, %s and %s", settings.data_dir, settings.log_dir, settings.run_dir)
        elif args.command == "status":
            if supervisor.supervisord_pid(settings) is None:
                print("stack is not running")
                return 3
            print(supervisor.ctl(settings, "status", check=False), end="")
    except MarketDataError as err:
        log.error("%s", err)  # noqa: TRY400 - a clear message, not a traceback, for expected failures
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
