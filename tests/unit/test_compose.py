"""docker-compose.yml cannot run here (no Docker engine), so it is validated statically against the code:
it parses, images/builds/depends_on are consistent, every environment variable an app service sets is one our
settings read, and ports agree with the settings and the Prometheus scrape config."""

from __future__ import annotations

import importlib
import importlib.util
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from common.settings import SharedSettings, env_names

ROOT = Path(__file__).resolve().parents[2]
APP_IMAGE = "synthetic-market-data:latest"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _settings_env() -> set[str]:
    """Env names read by any settings class in the project."""
    from pydantic_settings import BaseSettings

    names = set(env_names(SharedSettings))
    modules = sorted(
        ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for package in ("simulator", "flows", "api", "stack")
        for path in (ROOT / package).glob("*settings.py")
    )
    for module in modules:
        mod = importlib.import_module(module)
        for obj in vars(mod).values():
            if isinstance(obj, type) and issubclass(obj, BaseSettings) and obj is not BaseSettings:
                names |= env_names(obj)
    return names | {"PROMETHEUS_MULTIPROC_DIR"}  # read by prometheus-client itself


def _app_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in compose["services"].items() if s.get("image") == APP_IMAGE or "build" in s}


def test_every_service_has_an_image_and_the_app_image_is_built(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"kafka", "timescaledb", "redis", "prometheus", "grafana", "simulator", "bars", "gateway"} <= set(services)
    for name, svc in services.items():
        assert "image" in svc or "build" in svc, name
    builders = [n for n, s in services.items() if "build" in s]
    assert builders, "some service must build the app image"
    assert all(services[b]["image"] == APP_IMAGE for b in builders)
    assert services["timescaledb"]["image"].startswith("timescale/timescaledb:")
    assert services["kafka"]["image"].startswith("apache/kafka:")


def test_depends_on_targets_exist_and_conditions_make_sense(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, svc in services.items():
        deps = svc.get("depends_on", {})
        items = deps.items() if isinstance(deps, dict) else ((d, {}) for d in deps)
        for dep, spec in items:
            assert dep in services, f"{name} depends on unknown service {dep}"
            condition = (spec or {}).get("condition")
            if condition == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep} health, which has no healthcheck"
            if condition == "service_completed_successfully":
                assert services[dep].get("restart") == "no", f"{dep} is a one-shot job and must not restart"


def test_app_environment_is_read_by_the_settings(compose: dict[str, Any]) -> None:
    known = _settings_env()
    for name, svc in _app_services(compose).items():
        for key in svc.get("environment", {}):
            assert key in known, f"{name} sets {key}, which no settings class reads"


def test_app_commands_run_modules_that_exist(compose: dict[str, Any]) -> None:
    for name, svc in _app_services(compose).items():
        command = " ".join(svc["command"]) if isinstance(svc["command"], list) else svc["command"]
        for module in re.findall(r"python -m ([\w.]+)(?: ([\w.]+))?", command):
            target = module[1] if module[0] == "bytewax.run" else module[0]
            assert importlib.util.find_spec(target) is not None, f"{name} runs missing module {target}"


def test_ports_agree_with_settings_and_scrape_config(compose: dict[str, Any]) -> None:
    services = compose["services"]
    gateway_env = services["gateway"]["environment"]
    assert f"{gateway_env['API_PORT']}:{gateway_env['API_PORT']}" in services["gateway"]["ports"]
    scrape = yaml.safe_load((ROOT / "grafana" / "prometheus.docker.yml").read_text())
    targets = {t for job in scrape["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    port_vars = {"simulator": "SIM_METRICS_PORT", "bars": "FLOW_METRICS_PORT", "ticks": "FLOW_METRICS_PORT",
                 "anomalies": "ANOMALY_METRICS_PORT", "gateway": "API_PORT"}  # fmt: skip
    for svc, var in port_vars.items():
        assert f"{svc}:{services[svc]['environment'][var]}" in targets, f"Prometheus does not scrape {svc}"
    for target in targets:
        assert target.split(":")[0] in services


def test_database_credentials_match(compose: dict[str, Any]) -> None:
    env = compose["x-app-env"]
    db = compose["services"]["timescaledb"]["environment"]
    for var in ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"):
        assert "${" + var in env["DATABASE_URL"]
        assert db[var].startswith("${" + var)
    assert env["DATABASE_URL"].split("@")[1].startswith("timescaledb:5432/")
    assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert env["REDIS_URL"].startswith("redis://redis:")


def test_dockerfile_copies_existing_paths() -> None:
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY ") and not line.startswith("COPY --from="):  # not from a build stage
            for src in line.split()[1:-1]:
                assert (ROOT / src).exists(), f"Dockerfile copies missing {src}"
