"""Optional API keys (``X-API-Key``, ``Authorization: Bearer``, ``?api_key=``) and the per-key rate limit.

Keys come only from settings (``API_KEYS``); with none configured authentication is off. Keys are compared in
constant time. :func:`admit` is the one check (rate-limit by key, or by client IP when authentication is off
or the request has no valid key, then authenticate): :class:`api.middleware.GatewayMiddleware` answers its
error as 401/429, :mod:`api.ws` as a close code. The limiter (so Redis key names) only ever sees a digest of a
key, never the key itself.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from functools import lru_cache
from typing import TYPE_CHECKING

from api.errors import ApiError
from api.settings import ApiSettings

if TYPE_CHECKING:
    from api.ratelimit import RateLimiter


def credential_from(headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
    """The key a client presented, from the header, the bearer token or the query string.

    Only HTTP's blanks (space, tab) around a bearer token are dropped: ``str.strip()`` would also drop Unicode
    ones (a Latin-1 header byte 0xA0 or 0x85), and a token that is a key plus such a byte is not that key.
    """
    key = headers.get("x-api-key")
    if key:
        return key
    auth = headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    token = token.strip(" \t")
    if scheme.lower() == "bearer" and token:
        return token
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


@lru_cache(maxsize=256)
def key_identity(key: str) -> str:
    """The rate-limit identity of a (valid) key: ``k:`` + 16 hex digits of its SHA-256, never the key itself.

    Only configured keys reach it (after :func:`key_is_valid`), so the cache is bounded by the key list.
    """
    return "k:" + hashlib.sha256(key.encode()).hexdigest()[:16]


async def admit(
    settings: ApiSettings, limiter: RateLimiter | None, credential: str | None, client_host: str, kind: str
) -> ApiError | None:
    """None when a request/connection may proceed, else the 401 (bad or missing key) or 429 :class:`ApiError`.

    ``credential`` is what :func:`credential_from` found (only looked at when authentication is on). The rate
    limit of ``kind`` (``"http"``/``"ws"``) is per key (its :func:`key_identity`) for a valid key, per
    ``client_host`` otherwise: authentication off, or a missing or invalid key, which is limited by its client
    IP first (429 once over the limit, so key guessing is throttled) and only then refused with 401.
    """
    valid = settings.auth_enabled and key_is_valid(credential, settings)
    if limiter is not None:
        identity = key_identity(credential) if valid and credential else client_host
        try:
            await limiter.check(identity, kind)
        except ApiError as err:
            return err
    if settings.auth_enabled and not valid:
        return ApiError(
            401,
            "unauthorized",
            "missing or invalid API key (X-API-Key header, Bearer token or api_key query parameter)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return None
