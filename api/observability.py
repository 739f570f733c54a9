"""Request ids, structured (JSON) logs and per-route HTTP metrics, as one pure ASGI middleware.

A pure ASGI middleware (not ``BaseHTTPMiddleware``) keeps the per-request cost to a few microseconds. The
route label is the matched template (``/api/v1/quote/{ticker}``), never the raw path, so label cardinality
stays bounded whatever clients send.
"""

from __future__ import annotations

import contextvars
import json
import logging
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.metrics import LATENCY, REQUESTS

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
access_log = logging.getLogger("api.access")


class JsonFormatter(logging.Formatter):
    """One JSON object per line with time, level, logger, message, request id and any ``extra`` fields."""

    _STD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "request_id": REQUEST_ID.get(),
        }
        for key, value in record.__dict__.items():
            if key not in self._STD:
                doc[key] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def configure_logging(level: str) -> None:
    """JSON logs on stderr in UTC (idempotent)."""
    root = logging.getLogger()
    if any(isinstance(h.formatter, JsonFormatter) for h in root.handlers):
        root.setLevel(level)
        return
    handler = logging.StreamHandler()
    formatter = JsonFormatter()
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    root.handlers = [handler]
    root.setLevel(level)


class ObservabilityMiddleware:
    """Assigns a request id (or keeps the client's ``X-Request-ID``), times the request, records metrics."""

    def __init__(self, app: ASGIApp, access_log_enabled: bool = True) -> None:
        self.app = app
        self.access_log_enabled = access_log_enabled

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                REQUEST_ID.set(uuid.uuid4().hex[:16])
            await self.app(scope, receive, send)
            return
        request_id = ""
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                request_id = value.decode("latin-1")[:64]
                break
        if not request_id:
            request_id = uuid.uuid4().hex[:16]
        REQUEST_ID.set(request_id)
        status = 500
        started = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", None)
            if template is None:
                # framework routes (/docs, /openapi.json) are few; anything else unmatched shares one label
                template = scope["path"] if status < 400 else "<unmatched>"
            code = str(status)
            REQUESTS.labels(scope["method"], template, code).inc()
            LATENCY.labels(scope["method"], template, code).observe(elapsed)
            if self.access_log_enabled:
                access_log.info(
                    "%s %s %s",
                    scope["method"],
                    scope["path"],
                    status,
                    extra={"route": template, "status": status, "ms": round(elapsed * 1000, 3)},
                )
