"""Optional API keys (``X-API-Key``, ``Authorization: Bearer``, ``?api_key=``) and the per-key rate limit.

Keys come only from settings (``API_KEYS``); with none configured authentication is off. Keys are compared in
constant time. REST requests are checked in :class:`api.middleware.GatewayMiddleware` (authenticate, then
rate-limit by key, or by client IP when authentication is off); WebSocket connections in :mod:`api.ws`.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping

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
