"""Which rows a page of ``/history`` or ``/bars`` holds, and the opaque cursors that continue it.

Two ways to walk a time range, both answering in ascending time order:

* **newest first** (no ``start``): the newest ``limit`` rows of ``[end - default span, end]``, the way vendor
  APIs answer "the latest N bars". ``meta.prev_cursor`` continues with the page immediately older, down to the
  window start of the first page. That window start travels inside the cursor, so paging back does not drift
  with the clock (``end`` defaults to now on every request).
* **oldest first** (``start`` given, or a ``next`` cursor): rows from ``start`` on; ``meta.next_cursor``
  continues after the last row, with or without ``start`` resent (without it, the page starts at the cursor).
  This is the behaviour clients relying on ``start`` always had.

A page from a cursor is one ``LIMIT``-bounded index scan from the cursor's row, so cursors are not held to the
maximum range of ``start``/``end`` (a walk back with the default ``end``, now, would otherwise age out of it).

A cursor is base64 of ``kind:epoch_us:seq:scope`` (next) or ``kind<:epoch_us:seq:floor_us:scope`` (previous):
``kind`` names the endpoint (``h`` ticks, ``b`` bars), the position is the last (next) or first (previous) row
served, with ``seq`` breaking ties between ticks of one timestamp (bars are unique per start and carry 0), and
``scope`` is a short hash of the listing it belongs to (ticker, and timeframe for bars): a cursor handed to
another ticker or timeframe is a 422 naming ``cursor`` instead of a page that starts at an unrelated position.
Cursors of the earlier formats (without ``scope``) stay valid. Only what an encoder wrote is a cursor: numbers in
ASCII digits without sign, blanks, underscores or leading zeros (Python's ``int()`` takes ``"+1_000"`` and Arabic-
Indic digits), unpadded base64 without stray characters; any other spelling of a position is a 422.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated

from fastapi import Query

from api.cache import ticker_symbol
from api.deps import MAX_TIME, epoch_us, time_range
from api.errors import invalid
from common.clock import EPOCH

StartQuery = Annotated[
    datetime | None,
    Query(
        description=(
            "ISO-8601 start (UTC when no offset is given). Given: rows oldest first from `start`, continued by"
            " `meta.next_cursor`. Omitted: the newest `limit` rows of the default window before `end`"
            " (still in ascending order), continued backwards by `meta.prev_cursor`"
        ),
        examples=["2025-10-02T14:00:00Z"],
    ),
]
EndQuery = Annotated[datetime | None, Query(description="ISO-8601 end, inclusive (default: now)")]
CursorQuery = Annotated[
    str | None,
    Query(
        description=(
            "`meta.next_cursor` (the next newer page) or `meta.prev_cursor` (the next older page) of the previous"
            " answer of this endpoint, with the same ticker (and timeframe) and `end`; a `prev_cursor` cannot"
            " be combined with `start`"
        ),
        max_length=120,
    ),
]


#: a number of a cursor as the encoders write it (``str`` of a non-negative int): ASCII digits, no sign, no blanks,
#: no underscores, no leading zero
_NUMBER = re.compile(r"0|[1-9][0-9]*")


@dataclass(frozen=True, slots=True)
class Cursor:
    """A decoded cursor: where the previous page stopped and in which direction to go on."""

    older: bool
    at: datetime
    seq: int
    floor: datetime | None = None  # older cursors: the window start of the first page


def scope_of(*names: str) -> str:
    """The cursor scope of a listing: 8 hex digits of a hash of its ticker (and timeframe)."""
    return hashlib.blake2b("/".join(names).encode(), digest_size=4).hexdigest()


def ticker_scope(ticker: str, *rest: str) -> str:
    """:func:`scope_of` the listing of ``ticker`` as a client wrote it, spelt as the ticker lookup spells it (so a
    route can plan its page, and answer a bad cursor's 422, before it looks the ticker up)."""
    return scope_of(ticker_symbol(ticker) or ticker, *rest)


def encode_next(kind: str, scope: str, at: datetime, seq: int = 0) -> str:
    """Cursor of the page after the row at ``(at, seq)`` of the listing ``scope``."""
    return _b64(f"{kind}:{epoch_us(at)}:{seq}:{scope}")


def encode_prev(kind: str, scope: str, at: datetime, seq: int, floor: datetime) -> str:
    """Cursor of the page before the row at ``(at, seq)`` of the listing ``scope``, down to ``floor``."""
    return _b64(f"{kind}<:{epoch_us(at)}:{seq}:{epoch_us(floor)}:{scope}")


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _time(us: str) -> datetime:
    at = EPOCH + timedelta(microseconds=int(us))
    if not EPOCH <= at <= MAX_TIME:
        raise ValueError(us)
    return at


def decode_cursor(kind: str, scope: str, cursor: str) -> Cursor:
    """The cursor made by :func:`encode_next`/:func:`encode_prev` for ``kind`` and ``scope``; 422 naming
    ``cursor`` otherwise (garbage, a cursor of another endpoint, or of another ticker or timeframe, or one spelt
    otherwise than the encoder spells it)."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if _b64(text) != cursor:  # padding, characters base64 skips, other spellings of the same bytes
            raise ValueError(cursor)
        fields = text.split(":")
        older = fields[0] == kind + "<"
        if fields[0] not in (kind, kind + "<") or not 3 + older <= len(fields) <= 4 + older:
            raise ValueError(fields[0])
        if not all(_NUMBER.fullmatch(number) for number in fields[1 : 3 + older]):  # position (and floor)
            raise ValueError(cursor)
        at, seq = _time(fields[1]), int(fields[2])
        floor = _time(fields[3]) if older else None
        if seq < 0 or (floor is not None and floor > at):
            raise ValueError(cursor)
    except (ValueError, binascii.Error, UnicodeDecodeError, OverflowError) as err:
        raise invalid(parameter="cursor", message="not a cursor returned by this endpoint") from err
    if len(fields) == 4 + older and fields[-1] != scope:  # the earlier formats carry no scope
        raise invalid(
            parameter="cursor", message="this cursor continues another listing: keep the ticker and timeframe"
        )
    return Cursor(older, at, seq, floor)


@dataclass(frozen=True, slots=True)
class PagePlan:
    """The rows one request asks for: ``[start, end]``, newest first (before ``before``) or oldest first
    (after ``after``)."""

    newest: bool
    start: datetime
    end: datetime
    scope: str  # of the listing, for the cursors of the answer
    after: tuple[datetime, int] | None = None
    before: tuple[datetime, int] | None = None


def plan_page(
    kind: str,
    scope: str,
    start: datetime | None,
    end: datetime | None,
    cursor: str | None,
    default_span: timedelta,
    max_span: timedelta,
) -> PagePlan:
    """Validate ``start``/``end``/``cursor`` (422 naming the parameter) and choose the direction."""
    decoded = decode_cursor(kind, scope, cursor) if cursor else None
    if decoded is not None and decoded.older and start is not None:
        raise invalid(
            parameter="cursor",
            message="a prev_cursor continues a newest-first listing (no start); drop start or use next_cursor",
        )
    rng = time_range(start, end, default_span, max_span)
    if decoded is None:
        return PagePlan(newest=start is None, start=rng.start, end=rng.end, scope=scope)
    # a page from a cursor is one LIMIT-bounded index scan from the cursor's row: no range cap needed (with the
    # default end, now, a walk back through a long range would otherwise age out of the maximum)
    if not decoded.older:
        if start is None:  # the rows after the cursor, not a default window before end (that skipped rows)
            if decoded.at > rng.end:
                raise invalid(
                    parameter="cursor",
                    message="this cursor's row is after end; keep the first page's end",
                    code="invalid_range",
                )
            return PagePlan(False, decoded.at, rng.end, scope, after=(decoded.at, decoded.seq))
        return PagePlan(False, rng.start, rng.end, scope, after=(decoded.at, decoded.seq))
    assert decoded.floor is not None  # decode_cursor sets it on every older cursor
    if decoded.floor > rng.end:
        raise invalid(parameter="cursor", message="this cursor's window starts after end; keep the first page's end")
    return PagePlan(True, decoded.floor, rng.end, scope, before=(decoded.at, decoded.seq))
