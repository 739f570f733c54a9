"""The gateway's one pure ASGI middleware: request id, metrics, access log, API-key auth, rate limit, fast routes.

Why one middleware and not FastAPI dependencies: the profile of a ``/quote`` showed about 30 % of its CPU in
FastAPI's dependency solving and another 20 % in the Starlette/FastAPI layers around it. Cross-cutting work
done here costs a few dictionary look-ups per request, and the hottest read (``/quote``, ``/latest``) is
answered here without entering FastAPI at all (:mod:`api.fastpath`); its FastAPI route stays for OpenAPI
and behaves identically.

Order of work for an HTTP request:

1. request id: the client's ``X-Request-ID`` (first 64 characters) or ``<process prefix>-<counter>``
   (unique per process without calling the random source per request); echoed in the response headers;
2. under ``/api/v1`` (the routing path: ``root_path`` stripped, as the router sees it): the rate limit per key
   digest, or per client IP without a valid key (429 + ``Retry-After``), and authentication (when keys are
   configured; 401 + ``WWW-Authenticate``); service endpoints (``/health``, ``/ready``, ``/metrics``, ``/docs``)
   stay open;
3. the fast routes, else FastAPI; an exception escaping FastAPI is logged here with the request id and answered
   with the 500 envelope and ``X-Request-ID`` (re-raised when the response had already started);
4. metrics per (method, route template, status): the template (``/api/v1/quote/{ticker}``), never the raw
   path, so label cardinality stays bounded whatever clients send; every answer without a route (404s, and
   FastAPI's trailing-slash 307 redirects whatever the path) shares ``<unmatched>``;
5. the access log line, only when the ``api.access`` logger is enabled for INFO (no formatting otherwise).

CORS (when configured) wraps this middleware, so error answers made here (500s included) carry the CORS headers and
preflight requests are answered by the CORS layer without auth (they carry no credentials by design).
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final
from urllib.parse import parse_qsl

import orjson
from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.auth import admit, credential_from
from api.deps import API_PREFIX
from api.errors import INTERNAL_MESSAGE, ApiError, error_body
from api.metrics import LATENCY, REQUESTS
from api.observability import REQUEST_ID

if TYPE_CHECKING:
    from api.deps import AppState

log = logging.getLogger("api.middleware")
access_log = logging.getLogger("api.access")

#: a fast route answers ``(status, body, extra headers)`` from the app state and the decoded path remainder
FastHandler = Callable[["AppState", str], Awaitable[tuple[int, bytes, list[tuple[bytes, bytes]]]]]

_JSON: Final = (b"content-type", b"application/json")
_GUARDED_PREFIX: Final = API_PREFIX + "/"
UNMATCHED: Final = "<unmatched>"


class _Metric:
    """The (counter, histogram) children of one label set, looked up once and kept."""

    __slots__ = ("count", "latency")

    def __init__(self, count: Counter, latency: Histogram) -> None:
        self.count = count
        self.latency = latency


def route_path(scope: Scope) -> str:
    """The path the router matches: ``scope["path"]`` without a leading ``root_path`` (as Starlette's own private
    ``get_route_path`` does; kept here so a Starlette upgrade cannot move it from under the auth check)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if not root or not path.startswith(root):
        return path
    if path == root:
        return ""
    return path[len(root) :] if path[len(root)] == "/" else path


class GatewayMiddleware:
    """See the module docstring. ``fast_routes`` maps a path prefix to (route template, handler)."""

    def __init__(
        self,
        app: ASGIApp,
        fast_routes: dict[str, tuple[str, FastHandler]] | None = None,
        access_log_enabled: bool = True,
    ) -> None:
        self.app = app
        self.fast_routes = dict(fast_routes or {})
        self.access_log_enabled = access_log_enabled
        self._metrics: dict[tuple[str, str, int], _Metric] = {}
        self._id_prefix = uuid.uuid4().hex[:8]
        self._ids = itertools.count(1)
        self._pid = os.getpid()
        self._templates: list[tuple[re.Pattern[str], str]] | None = None
        self._framework: frozenset[str] | None = None

    def _request_id(self) -> str:
        if os.getpid() != self._pid:  # forked worker: a fresh prefix so ids stay unique across processes
            self._pid = os.getpid()
            self._id_prefix = uuid.uuid4().hex[:8]
        return f"{self._id_prefix}-{next(self._ids):x}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http":
            if kind == "websocket":
                REQUEST_ID.set(self._request_id())
            await self.app(scope, receive, send)
            return
        request_id = ""
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        for name, value in headers:
            if name == b"x-request-id":
                request_id = value.decode("latin-1")[:64]
                break
        if not request_id:
            request_id = self._request_id()
        REQUEST_ID.set(request_id)
        rid = request_id.encode("latin-1")
        started = time.perf_counter()
        # the routing path: behind a path-prefix proxy (uvicorn --root-path /md) scope["path"] is
        # "/md/api/v1/..." and the routes match it with the root path stripped, so must auth and the fast routes
        path = route_path(scope)
        method: str = scope["method"]
        status = 500
        template: str | None = None
        response_started = False
        try:
            if path.startswith(_GUARDED_PREFIX):
                rejection = await self._guard(scope, headers)
                if rejection is not None:
                    status = rejection.status
                    template = self._template(scope, path)
                    await _send_error(send, rejection, rid)
                    return
                if method == "GET":
                    for prefix, (route, handler) in self.fast_routes.items():
                        if path.startswith(prefix) and "/" not in path[len(prefix) :]:
                            template = route
                            status = await self._fast(scope, send, handler, path[len(prefix) :], rid)
                            return

            async def send_with_id(message: Message) -> None:
                nonlocal status, response_started
                if message["type"] == "http.response.start":
                    status = message["status"]
                    response_started = True
                    message["headers"] = [*message.get("headers", ()), (b"x-request-id", rid)]
                await send(message)

            try:
                await self.app(scope, receive, send_with_id)
            except Exception:
                # here, not in Starlette's ServerErrorMiddleware (outside this middleware and CORS): the log line
                # and the 500 carry the request id, and CORS (wrapping this middleware) adds its headers
                if response_started:
                    # the status line is gone: only the connection can still tell the client. Logged here, once,
                    # and not re-raised: Starlette's error handler and uvicorn each logged it again, three tracebacks
                    # for one error. uvicorn closes a connection whose response the app left incomplete.
                    _log_unhandled(scope, rid)
                    status = 500
                    return
                status = await _answer_unhandled(scope, send, rid)
        finally:
            elapsed = time.perf_counter() - started
            if template is None:
                template = getattr(scope.get("route"), "path", None)
                if not isinstance(template, str):
                    # FastAPI's own pages (/docs, /openapi.json ...) are plain Starlette routes that leave no
                    # "route" in the scope: they are a fixed few and keep their path. Anything else answered
                    # without a route (404, or the 307 of redirect_slashes for ANY path with a trailing slash)
                    # shares one label whatever the status, never the raw path.
                    template = path if path in self._framework_paths(scope) else UNMATCHED
            key = (method, template, status)
            metric = self._metrics.get(key)
            if metric is None:
                code = str(status)
                metric = _Metric(REQUESTS.labels(method, template, code), LATENCY.labels(method, template, code))
                if len(self._metrics) < 10_000:  # bounded: methods x templates x statuses
                    self._metrics[key] = metric
            metric.count.inc()
            metric.latency.observe(elapsed)
            if self.access_log_enabled and access_log.isEnabledFor(logging.INFO):
                access_log.info(
                    "%s %s %s",
                    method,
                    scope["path"],
                    status,
                    extra={"route": template, "status": status, "ms": round(elapsed * 1000, 3)},
                )

    async def _guard(self, scope: Scope, headers: list[tuple[bytes, bytes]]) -> ApiError | None:
        """401 / 429 as an :class:`ApiError`, or None when the request may proceed."""
        state: AppState = scope["app"].state.md
        settings = state.settings
        limiter = state.limiter
        if not settings.auth_enabled and limiter is None:
            return None
        credential: str | None = None
        if settings.auth_enabled:
            wanted = {}
            for name, value in headers:
                if name in (b"x-api-key", b"authorization"):
                    wanted[name.decode("latin-1")] = value.decode("latin-1")
            query = scope.get("query_string", b"")
            params = dict(parse_qsl(query.decode("latin-1"))) if b"api_key=" in query else {}
            credential = credential_from(wanted, params)
        client = scope.get("client")
        return await admit(settings, limiter, credential, client[0] if client else "unknown", "http")

    def _framework_paths(self, scope: Scope) -> frozenset[str]:
        """The app's documentation pages (``docs_url``, ``redoc_url``, ``openapi_url``, the OAuth2 redirect)."""
        if self._framework is None:
            app = scope["app"]
            names = ("docs_url", "redoc_url", "openapi_url", "swagger_ui_oauth2_redirect_url")
            self._framework = frozenset(p for n in names if isinstance(p := getattr(app, n, None), str))
        return self._framework

    def _template(self, scope: Scope, path: str) -> str:
        """Route template of a request answered before routing (401/429), from the OpenAPI paths.

        ``path`` is the routing path (root path stripped)."""
        for prefix, (route, _) in self.fast_routes.items():
            if path.startswith(prefix) and "/" not in path[len(prefix) :]:
                return route
        if self._templates is None:
            # the public route list: FastAPI's included routers do not expose their paths, its OpenAPI does
            paths = scope["app"].openapi().get("paths", {})
            self._templates = [
                (re.compile("^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(t)) + "$"), t) for t in paths
            ]
        for pattern, template in self._templates:
            if pattern.match(path):
                return template
        return UNMATCHED

    async def _fast(self, scope: Scope, send: Send, handler: FastHandler, rest: str, rid: bytes) -> int:
        """Run a fast route; its errors become the usual envelopes (never a bare 500)."""
        state: AppState = scope["app"].state.md
        try:
            status, body, extra = await handler(state, rest)
        except ApiError as err:
            await _send_error(send, err, rid)
            return err.status
        except Exception:
            return await _answer_unhandled(scope, send, rid)
        await _send(send, status, body, [_JSON, (b"x-request-id", rid), *extra])
        return status


def _log_unhandled(scope: Scope, rid: bytes) -> None:
    """Log the exception being handled, with the request id."""
    request_id = rid.decode("latin-1")
    log.exception("unhandled error on %s %s", scope["method"], scope["path"], extra={"request_id": request_id})


async def _answer_unhandled(scope: Scope, send: Send, rid: bytes) -> int:
    """Log the exception being handled and answer the 500 envelope (never internals; the request id links them)."""
    _log_unhandled(scope, rid)
    await _send_error(send, ApiError(500, "internal_error", INTERNAL_MESSAGE), rid)
    return 500


async def _send(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _send_error(send: Send, err: ApiError, rid: bytes) -> None:
    extra: list[tuple[bytes, bytes]] = [(k.lower().encode(), v.encode("latin-1")) for k, v in err.headers.items()]
    body = orjson.dumps(error_body(err.code, err.message))
    await _send(send, err.status, body, [_JSON, (b"x-request-id", rid), *extra])
