"""Prometheus rules: ``promtool check`` the rules and both scrape configs, ``promtool test rules`` the alerts.

promtool comes with the Debian ``prometheus`` package that ``python -m stack install`` installs; it runs
locally on files only (no network).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "stack" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "tests" / "unit" / "prometheus" / "alerts_test.yml"


def _promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail("promtool is missing: run `.venv/bin/python -m stack install` (Debian package prometheus)")
    return subprocess.run([exe, *args], capture_output=True, text=True, check=False, cwd=cwd)


def test_rules_pass_promtool_check() -> None:
    proc = _promtool("check", "rules", str(RULES))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_alert_unit_tests_pass() -> None:
    proc = _promtool("test", "rules", str(RULE_TESTS))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_alert_has_a_unit_test_that_expects_it_to_fire() -> None:
    rules = yaml.safe_load(RULES.read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    fired = {case["alertname"] for t in tests for case in t.get("alert_rule_test", []) if case.get("exp_alerts")}
    assert alerts, "no alerts defined"
    assert alerts == fired, f"alerts without a firing test: {sorted(alerts - fired)}"


def test_required_alerts_exist_with_severity_and_summary() -> None:
    rules = yaml.safe_load(RULES.read_text())
    alerts = {r["alert"]: r for g in rules["groups"] for r in g["rules"] if "alert" in r}
    assert {"PipelineStalled", "KafkaConsumerLagHigh", "DeadLetterRateHigh", "ApiErrorRateHigh"} <= set(alerts)
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        assert rule["annotations"]["summary"], name


@pytest.mark.parametrize("config", ["stack/prometheus/prometheus.yml", "grafana/prometheus.docker.yml"])
def test_prometheus_configs_are_valid_and_load_the_rules(config: str, tmp_path: Path) -> None:
    # both configs name the rules file beside themselves (docker-compose mounts it at /etc/prometheus)
    text = (ROOT / config).read_text().replace("/etc/prometheus/alerts.yml", "alerts.yml")
    (tmp_path / "prometheus.yml").write_text(text)
    shutil.copyfile(RULES, tmp_path / "alerts.yml")
    proc = _promtool("check", "config", "prometheus.yml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 rule files found" in proc.stdout
