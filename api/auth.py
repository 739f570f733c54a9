"""Optional API keys (``X-API-Key``, ``Authorization: Bearer``, ``?api_key=``) and the per-key rate limit.

Keys come only from settings (``API_KEYS``); with none configured authentication is off. Keys are compared in
constant time. :func:`admit` is the one check (authenticate, then rate-limit by key, or by client IP when
authentication is off): :class:`api.middleware.GatewayMiddleware` answers its error as 401/429, :mod:`api.ws`
as a close code.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import TYPE_CHECKING

from api.errors import ApiError
from api.settings import ApiSettings

if TYPE_CHECKING:
    from api.ratelimit import RateLimiter


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


async def admit(
    settings: ApiSettings, limiter: RateLimiter | None, credential: str | None, client_host: str, kind: str
) -> ApiError | None:
    """None when a request/connection may proceed, else the 401 (bad or missing key) or 429 :class:`ApiError`.

    ``credential`` is what :func:`credential_from` found (only looked at when authentication is on); the rate
    limit of ``kind`` (``"http"``/``"ws"``) is per key when authentication is on, per ``client_host`` otherwise.
    """
    if settings.auth_enabled and not key_is_valid(credential, settings):
        return ApiError(
            401,
            "unauthorized",
            "missing or invalid API key (X-API-Key header, Bearer token or api_key query parameter)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if limiter is not None:
        identity = credential if settings.auth_enabled and credential else client_host
        try:
            await limiter.check(identity, kind)
        except ApiError as err:
            return err
    return None
