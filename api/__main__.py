"""``python -m api``: run the gateway under uvicorn with the workers, port and WebSocket options of settings."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import uvicorn

from api.settings import ApiSettings


def _fresh_multiprocess_dir() -> None:
    """prometheus-client's multiprocess mode needs its directory to exist and be emptied at start-up."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")  # read by prometheus-client itself
    if directory:
        shutil.rmtree(directory, ignore_errors=True)
        Path(directory).mkdir(parents=True, exist_ok=True)


def main() -> None:
    """Start uvicorn (``workers > 1`` forks processes, each with its own Kafka relay)."""
    settings = ApiSettings()
    _fresh_multiprocess_dir()
    uvicorn.run(
        "api.main:app",
        host=settings.bind_host,
        port=settings.port,
        workers=settings.workers,
        ws_per_message_deflate=settings.ws_per_message_deflate,
        ws_max_size=settings.ws_max_message_bytes,
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
