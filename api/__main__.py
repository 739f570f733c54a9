"""``python -m api``: run the gateway under uvicorn with the workers, port and WebSocket options of settings."""

from __future__ import annotations

import uvicorn

from api.settings import ApiSettings


def main() -> None:
    """Start uvicorn (``workers > 1`` forks processes, each with its own Kafka relay)."""
    settings = ApiSettings()
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
    )


if __name__ == "__main__":
    main()
