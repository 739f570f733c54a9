"""``python -m api``: run the gateway under uvicorn with the workers, port and WebSocket options of settings."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import uvicorn

from api.settings import ApiSettings
from api.ws_protocol import uvicorn_ws_options


def _fresh_multiprocess_dir(directory: Path | None) -> None:
    """prometheus-client's multiprocess mode needs its directory to exist and be emptied at start-up.

    prometheus-client reads ``PROMETHEUS_MULTIPROC_DIR`` from the environment itself (in this process and the
    workers uvicorn starts), so the setting is exported there, whatever source it came from.
    """
    if directory is None:
        return
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)


def main() -> None:
    """Start uvicorn (``workers > 1`` forks processes, each with its own Kafka relay)."""
    settings = ApiSettings()
    _fresh_multiprocess_dir(settings.prometheus_multiproc_dir)
    uvicorn.run(
        "api.main:app",
        host=settings.bind_host,
        port=settings.port,
        workers=settings.workers,
        **uvicorn_ws_options(settings),
        log_level=settings.log_level.lower(),
        access_log=False,  # our middleware logs requests with ids
        proxy_headers=True,
        http="httptools",  # the C parser (uvicorn's "auto" picks it too; explicit so a missing wheel fails loudly)
        loop="uvloop",
        backlog=settings.backlog,
        limit_concurrency=None,  # no 503s from uvicorn: the rate limiter and WebSocket limits bound the load
        server_header=False,  # a header fewer per response, and no version disclosure
    )


if __name__ == "__main__":
    main()
