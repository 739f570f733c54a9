"""``python -m grafana [--check]``: write the dashboards' JSON into grafana/dashboards/, or check it is current."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from grafana import market, pipeline
from grafana.common import render

OUT_DIR = Path(__file__).resolve().parent / "dashboards"
#: file name -> builder of every provisioned dashboard
DASHBOARDS: dict[str, Callable[[], Any]] = {"pipeline.json": pipeline.build, "market.json": market.build}


def rendered() -> dict[str, str]:
    """The JSON text of every dashboard, by file name."""
    return {name: render(build()) for name, build in DASHBOARDS.items()}


def main(argv: list[str] | None = None) -> int:
    """Write (default) or check (``--check``) the generated files; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m grafana", description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if a committed file differs from the code")
    args = parser.parse_args(argv)
    stale = []
    for name, text in rendered().items():
        path = OUT_DIR / name
        current = path.read_text() if path.exists() else None
        if current == text:
            continue
        if args.check:
            stale.append(name)
        else:
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print(f"stale dashboards (run `python -m grafana`): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
