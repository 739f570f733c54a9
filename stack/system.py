"""Installs what the local stack needs on a fresh Debian machine: system packages and Kafka's jars.

System packages come from apt-get (root, as on the project's machines); Kafka's broker classpath is resolved
from Maven Central by ``stack/kafka/pom.xml`` into a git-ignored folder and reused afterwards.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path

from common.errors import StackError
from stack.settings import REPO_ROOT, StackSettings

log = logging.getLogger(__name__)

#: executable -> Debian package that provides it
APT_PROVIDERS: dict[str, str] = {
    "redis-server": "redis-server",
    "redis-cli": "redis-tools",
    "prometheus": "prometheus",
    "promtool": "prometheus",
    "kcat": "kcat",
    "java": "openjdk-17-jre-headless",
    "mvn": "maven",
    # the TimescaleDB tests run PGlite on Node.js (the machines ship Node 20; Debian's is the fallback)
    "node": "nodejs",
    "npm": "npm",
}
POSTGRES_PACKAGE = "postgresql"


def postgres_bin_dir() -> Path | None:
    """The newest installed PostgreSQL server's bin directory (Debian layout), or None."""
    root = Path("/usr/lib/postgresql")
    versions = sorted(
        (p for p in root.glob("*/bin") if (p / "postgres").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    return versions[-1] if versions else None


def missing_packages() -> list[str]:
    """Debian packages still to install for the local stack."""
    needed = sorted({pkg for exe, pkg in APT_PROVIDERS.items() if shutil.which(exe) is None})
    if postgres_bin_dir() is None:
        needed.append(POSTGRES_PACKAGE)
    return needed


def ensure_system_packages() -> None:
    """Install missing Debian packages with apt-get, saying which and why; fail clearly if not root."""
    needed = missing_packages()
    if not needed:
        return
    if os.geteuid() != 0:
        msg = f"missing system packages {needed}; run as root or install them: apt-get install -y {' '.join(needed)}"
        raise StackError(msg)
    log.warning("installing system packages with apt-get: %s", " ".join(needed))
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *needed]):
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            msg = f"{' '.join(argv)} failed with exit code {proc.returncode}:\n{proc.stderr[-2000:]}"
            raise StackError(msg)
    # Debian starts the packaged services on install; the stack runs its own instances instead
    for unit in ("redis-server", "prometheus", "postgresql"):
        subprocess.run(["service", unit, "stop"], capture_output=True, check=False)


def kafka_classpath(settings: StackSettings) -> Path:
    """Directory holding Kafka's runtime jars, resolved from Maven Central on first use."""
    libs = settings.home / "kafka" / f"libs-{settings.kafka_version}"
    marker = libs / ".complete"
    if marker.exists():
        return libs
    if shutil.which("mvn") is None:
        msg = "Maven (mvn) is needed to fetch Kafka's jars; install package 'maven'"
        raise StackError(msg)
    log.warning("resolving Kafka %s jars from Maven Central into %s", settings.kafka_version, libs)
    libs.mkdir(parents=True, exist_ok=True)
    argv = [
        "mvn", "-q", "-B", "-f", str(REPO_ROOT / "stack" / "kafka" / "pom.xml"),
        "dependency:copy-dependencies", "-DincludeScope=runtime",
        f"-DoutputDirectory={libs}", f"-Dkafka.version={settings.kafka_version}",
    ]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not any(libs.glob("kafka_2.13-*.jar")):
        msg = f"could not resolve Kafka {settings.kafka_version} jars (exit {proc.returncode}):\n{proc.stdout[-2000:]}"
        raise StackError(msg)
    marker.touch()
    return libs
