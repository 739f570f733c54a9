"""Decoding a wire message with msgspec, every failure as one :class:`~common.errors.ContractError`.

msgspec reports bad input three ways: ``ValidationError`` (JSON, wrong shape), ``DecodeError`` (not JSON) and,
for a string that is not UTF-8, a plain ``UnicodeDecodeError``. A consumer must survive all of them, so every
contract's ``decode_*`` goes through :func:`decode_message`.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

from common.errors import ContractError

_T = TypeVar("_T")

#: what msgspec raises for a value that is not a valid message
DECODE_ERRORS = (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError)


def problem(err: Exception, what: str, version: int) -> str:
    """The reason text for a decode failure ``err`` of a ``what`` message (one wording everywhere)."""
    if isinstance(err, msgspec.ValidationError):
        return f"{what} does not match contract v{version}: {err}"
    if isinstance(err, UnicodeDecodeError):
        where = err.object[max(0, err.start - 16) : err.end + 16]
        return f"{what} is not valid JSON (contract v{version}): invalid UTF-8 in a string near {bytes(where)!r}"
    return f"{what} is not valid JSON (contract v{version}): {err}"


def decode_message(decoder: msgspec.json.Decoder[_T], raw: Any, what: str, version: int) -> _T:
    """``decoder.decode(raw)``; raises :class:`ContractError` with :func:`problem` 's reason."""
    try:
        return decoder.decode(raw)
    except DECODE_ERRORS as err:
        raise ContractError(problem(err, what, version)) from err
