"""``python -m api``: run the gateway under uvicorn with the workers, port and WebSocket options of settings."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import uvicorn

from api.settings import ApiSettings
from api.ws_protocol import uvicorn_ws_options

log = logging.getLogger("api")


def multiprocess_dir(settings: ApiSettings) -> tuple[Path | None, bool]:
    """The directory of the workers' metrics files and whether it was made here (to remove at exit).

    ``PROMETHEUS_MULTIPROC_DIR`` when set; with several workers and none set, a new private temporary directory:
    without one, every worker would keep its own registry, and each scrape of the shared port would read one
    worker at random (counters jumping between workers' values, most of the traffic missing).
    """
    if settings.prometheus_multiproc_dir is not None or settings.workers == 1:
        return settings.prometheus_multiproc_dir, False
    return Path(tempfile.mkdtemp(prefix="md-gateway-metrics-")), True


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
    directory, own = multiprocess_dir(settings)
    if own:
        log.warning(
            "PROMETHEUS_MULTIPROC_DIR is not set: %d workers share their metrics in %s", settings.workers, directory
        )
    _fresh_multiprocess_dir(directory)
    try:
        _serve(settings)
    finally:
        if own and directory is not None:
            shutil.rmtree(directory, ignore_errors=True)


def proxy_options(settings: ApiSettings) -> dict[str, Any]:
    """uvicorn's X-Forwarded-For/-Proto options: believed from ``API_FORWARDED_ALLOW_IPS`` only, off when empty.

    The client address they set is the rate-limit identity of requests without a valid key: a peer trusted here
    chooses it, so a gateway without a proxy in front trusts nobody (``API_FORWARDED_ALLOW_IPS=``).
    """
    allowed = settings.forwarded_allow_ips
    return {"proxy_headers": bool(allowed), "forwarded_allow_ips": allowed}


def _serve(settings: ApiSettings) -> None:
    """uvicorn in the foreground until it stops."""
    uvicorn.run(
        "api.main:app",
        host=settings.bind_host,
        port=settings.port,
        workers=settings.workers,
        **uvicorn_ws_options(settings),
        log_level=settings.log_level.lower(),
        access_log=False,  # our middleware logs requests with ids
        **proxy_options(settings),
        http="httptools",  # the C parser (uvicorn's "auto" picks it too; explicit so a missing wheel fails loudly)
        loop="uvloop",
        backlog=settings.backlog,
        limit_concurrency=None,  # no 503s from uvicorn: the rate limiter and WebSocket limits bound the load
        server_header=False,  # a header fewer per response, and no version disclosure
    )


if __name__ == "__main__":
    main()
