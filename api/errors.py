"""Error envelope and exception handlers: every failure is ``{"success": false, "error": {code, message}}``.

Bad input is the client's mistake and gets a 4xx naming the parameter; only a fault of ours is a 5xx, and its
message never leaks internals (the request id in the log links the two).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from common.errors import MarketDataError

log = logging.getLogger("api.errors")


#: the message of every 500: never internals (the request id, in the response header and the log, links the two)
INTERNAL_MESSAGE = "internal error; see the gateway log for this request id"


class ApiError(MarketDataError):
    """An error answered to the client with ``status`` and a stable machine-readable ``code``."""

    def __init__(self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


def not_found(what: str) -> ApiError:
    """404 for an unknown ticker or a ticker without data yet."""
    return ApiError(404, "not_found", what)


def unavailable(what: str) -> ApiError:
    """503 for a dependency that cannot be reached right now (the caller logs the cause, never the client)."""
    return ApiError(503, "unavailable", f"{what} is unavailable, try again shortly")


def invalid(parameter: str, message: str, code: str = "invalid_parameter") -> ApiError:
    """422 naming the offending parameter."""
    return ApiError(422, code, f"{parameter}: {message}")


def error_body(code: str, message: str) -> dict[str, Any]:
    """The JSON body of an error response."""
    return {"success": False, "error": {"code": code, "message": message}}


def error_response(status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> Response:
    """An error response with the envelope."""
    return Response(
        orjson.dumps(error_body(code, message)),
        status_code=status,
        headers=dict(headers or {}),
        media_type="application/json",
    )


_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    503: "unavailable",
}


def _param_name(loc: Sequence[Any]) -> str:
    """``("query", "limit")`` -> ``limit``; body paths are dotted."""
    parts = [str(p) for p in loc if p not in ("query", "path", "header", "body", "cookie")]
    return ".".join(parts) or "request"


def validation_message(errors: Sequence[Mapping[str, Any]]) -> str:
    """One line naming each bad parameter and why, e.g. ``limit: Input should be less than or equal to 10000``."""
    seen: list[str] = []
    for err in errors:
        text = f"{_param_name(err.get('loc', ()))}: {err.get('msg', 'invalid')}"
        if text not in seen:
            seen.append(text)
    return "; ".join(seen) or "invalid request"


async def _api_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message, exc.headers)


async def _validation_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return error_response(422, "invalid_parameter", validation_message(exc.errors()))


async def _http_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = _STATUS_CODES.get(exc.status_code, "error")
    return error_response(exc.status_code, code, str(exc.detail), exc.headers)


async def _unexpected(request: Request, exc: Exception) -> Response:
    # a fallback: GatewayMiddleware answers exceptions from the app itself (with the request id); this handler
    # (Starlette's ServerErrorMiddleware, outermost) only sees one raised outside it
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal_error", INTERNAL_MESSAGE)


def install_error_handlers(app: FastAPI) -> None:
    """Register the envelope handlers on ``app``."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
