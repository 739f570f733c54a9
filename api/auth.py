"""Optional API keys (``X-API-Key``, ``Authorization: Bearer``, ``?api_key=``) and the per-key rate limit.

Keys come only from settings (``API_KEYS``); with none configured authentication is off. Keys are compared in
constant time. The REST guard is one dependency on the ``/api/v1`` router: authenticate, then rate-limit by key
(or by client IP when authentication is off).
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from fastapi import Request

from api.deps import state_of
from api.errors import ApiError
from api.settings import ApiSettings


def credential_from(headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
    """The key a client presented, from the header, the bearer token or the query string."""
    key = headers.get("x-api-key")
    if key:
        return key
    auth = headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return query.get("api_key") or None


def key_is_valid(candidate: str | None, settings: ApiSettings) -> bool:
    """True when ``candidate`` equals one configured key (constant-time comparison)."""
    if not candidate:
        return False
    given = candidate.encode()
    ok = False
    for key in settings.keys:
        ok |= hmac.compare_digest(given, key.get_secret_value().encode())
    return ok


async def guard(request: Request) -> None:
    """Authenticate (when keys are configured) and apply the rate limit; 401 / 429 otherwise."""
    state = state_of(request)
    credential = credential_from(request.headers, request.query_params)
    if state.settings.auth_enabled and not key_is_valid(credential, state.settings):
        raise ApiError(
            401,
            "unauthorized",
            "missing or invalid API key (X-API-Key header, Bearer token or api_key query parameter)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if state.limiter is not None:
        identity = credential if state.settings.auth_enabled and credential else _client_ip(request)
        await state.limiter.check(identity, "http")


def _client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"
