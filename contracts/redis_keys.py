"""Redis key layout shared by the writers (flows) and the reader (gateway).

Values are the same JSON bytes as on Kafka (``contracts.tick`` / ``contracts.bar``), so the gateway can pass
them through without re-encoding.

=================================  ======================================================  ================
key                                value                                                   TTL
=================================  ======================================================  ================
``latest_price:{ticker}``          newest tick JSON (latest quote and last price)          none
``bar:{ticker}:{timeframe}:live``  the open bar JSON, ``final: false``, throttled updates  2 x timeframe
``bar:{ticker}:{timeframe}:final`` the newest final bar JSON (with indicators)             none
``indicators:{ticker}``            hash: field = timeframe, value = newest final bar JSON  none
=================================  ======================================================  ================

Keys without a TTL hold one value per ticker (bounded by the universe); live bars expire so a stopped flow
leaves no stale "open" bar behind. The live key is not removed when its window closes: a ticker that goes quiet
keeps its last live bar until the TTL, next to the final bar of the same window. A reader takes the live bar as
current only when its ``start`` is after the final key's (the gateway's ``/bars`` leaves out a live bar whose
window has a final row in the database).

Seed 002's ``aggregated:{symbol}:{window}`` is served by the gateway from ``bar:{ticker}:{timeframe}:final``
(window ``1min`` = timeframe ``1m``), not stored twice.
"""

from __future__ import annotations

from typing import Final

from contracts.bar import TIMEFRAMES

#: seed 002 window names -> timeframes
WINDOW_TO_TIMEFRAME: Final[dict[str, str]] = {"1min": "1m", "5min": "5m", "15min": "15m", "1h": "1h", "1d": "1d"}


def latest_price(ticker: str) -> str:
    """Key of the newest tick of ``ticker``."""
    return f"latest_price:{ticker}"


def live_bar(ticker: str, timeframe: str) -> str:
    """Key of the open (non-final) bar."""
    return f"bar:{ticker}:{timeframe}:live"


def final_bar(ticker: str, timeframe: str) -> str:
    """Key of the newest final bar."""
    return f"bar:{ticker}:{timeframe}:final"


def indicators(ticker: str) -> str:
    """Hash of the newest final bar (with indicators) per timeframe."""
    return f"indicators:{ticker}"


def live_bar_ttl_s(timeframe_ms: int) -> int:
    """TTL of a live bar key: two windows, at least 2 minutes."""
    return max(120, 2 * timeframe_ms // 1000)


#: :func:`live_bar_ttl_s` of every contract timeframe, by name (the writers look it up per live bar)
LIVE_BAR_TTL_S: Final[dict[str, int]] = {tf: live_bar_ttl_s(ms) for tf, ms in TIMEFRAMES.items()}
