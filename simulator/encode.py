"""Vectorised JSON encoding of tick batches, byte-identical to :func:`contracts.tick.encode_tick`.

Encoding ticks one by one through the contract's msgspec Struct costs microseconds per tick (construction
validates every invariant). Here a whole batch is written at once with NumPy into a ``[rows, width]`` byte
matrix: every field as right-aligned ASCII digits with NUL for leading zeros, literal fragments as constant
columns; dropping the NULs in one pass gives one ``bytes`` buffer plus offsets. Prices are integer cents,
written the way msgspec writes the float ``cents / 100`` (shortest round-trip form: ``150.0``, ``152.3``,
``152.34``). Tests compare the output with ``encode_tick`` on the same ticks byte for byte.

The digit writer only knows non-negative numbers (a negative one would come out as garbage, e.g. a timestamp
before 1970 as ``0``), so every chunk's columns are range-checked first against the contract: ``seq``,
sizes and volume >= 0, sizes <= ``MAX_INT32``, prices >= 1 cent, timestamps in the contract's epoch-ms range
(13 digits). A value outside raises :class:`ContractError` naming the field instead of producing a message
the contract rejects.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from common.errors import ContractError
from contracts.tick import (
    MAX_INT32,
    MAX_INT64,
    MAX_PRICE,
    MAX_TIMESTAMP_MS,
    MAX_VOLUME,
    MIN_TIMESTAMP_MS,
    SYMBOL_RE,
    TICK_SCHEMA_VERSION,
)
from simulator.engine import TickBatch

U8 = NDArray[np.uint8]
#: the constant parts of a tick after its first field (same every chunk)
_FIELDS = ("timestamp", "price", "bid", "ask", "bid_size", "ask_size", "volume")
_LITS = [f',"{name}":'.encode("ascii") for name in _FIELDS]
_TAIL = f',"version":{TICK_SCHEMA_VERSION}}}'.encode("ascii")
_CONST_LEN = sum(map(len, _LITS)) + len(_TAIL)


def _put_digits(out: U8, col: int, values: NDArray[np.int64]) -> int:
    """Right-aligned decimal digits of non-negative ints into ``out[:, col:col + w]``, leading zeros as NUL.

    Returns ``w`` (digits of the largest value). NUL bytes are dropped when the rows are packed.
    """
    v = np.asarray(values, dtype=np.int64)  # never written: each step makes new arrays
    top = int(v.max()) if v.size else 0
    w = len(str(top))
    for k in range(w - 1, -1, -1):  # division by a scalar is fast (libdivide)
        q = v // 10
        d = v - q * 10 + 48
        if k < w - 1:
            d *= v > 0  # a leading zero: nothing is written here
        out[:, col + k] = d
        v = q
    return w


_TENS = 10 ** np.arange(1, 19, dtype=np.int64)


def _ndigits(values: NDArray[np.int64]) -> NDArray[np.intp]:
    """Decimal digits of each non-negative int (0 has one)."""
    return np.searchsorted(_TENS, values, side="right") + 1


def _digit_width(values: NDArray[np.int64]) -> int:
    return len(str(int(values.max()))) if values.size else 1


#: the largest price in cents the contract allows (prices are below ``MAX_PRICE`` dollars)
_MAX_CENTS = round(MAX_PRICE * 100) - 1


def _check_range(name: str, values: NDArray[np.int64], lo: int, hi: int) -> None:
    """Raise :class:`ContractError` when a value of ``values`` is outside ``[lo, hi]``."""
    if values.size and (int(values.min()) < lo or int(values.max()) > hi):
        bad = int(values[(values < lo) | (values > hi)][0])
        msg = f"tick batch cannot be encoded: {name} {bad!r} is outside the contract's range [{lo}, {hi}]"
        raise ContractError(msg)


def _runs(values: NDArray[np.int64]) -> tuple[NDArray[np.int64], NDArray[np.intp]]:
    """(distinct consecutive values, index of each row's run)."""
    change = np.flatnonzero(np.diff(values)) + 1
    starts = np.concatenate(([0], change))
    idx = np.repeat(np.arange(starts.size), np.diff(np.concatenate((starts, [values.size]))))
    return values[starts], idx


class BatchEncoder:
    """Encodes :class:`TickBatch` rows of one universe; ticker prefixes are precomputed once."""

    def __init__(self, symbols: list[str], chunk_rows: int = 4096) -> None:
        self.chunk_rows = max(1, chunk_rows)
        for s in symbols:
            if not SYMBOL_RE.match(s):  # guarantees no JSON escaping is needed
                msg = f"ticker {s!r} cannot be encoded without escaping"
                raise ContractError(msg)
        prefixes = [f'{{"ticker":"{s}","seq":'.encode("ascii") for s in symbols]
        w = max(len(p) for p in prefixes)
        self._pre = np.zeros((len(symbols), w), dtype=np.uint8)
        self._pre_len = np.array([len(p) for p in prefixes], dtype=np.int64)
        for i, p in enumerate(prefixes):
            self._pre[i, : len(p)] = np.frombuffer(p, dtype=np.uint8)
        self.keys = [s.encode("ascii") for s in symbols]

    def encode(self, b: TickBatch) -> tuple[bytes, NDArray[np.int64]]:
        """(buffer, offsets ``[n + 1]``): message ``i`` is ``buffer[offsets[i]:offsets[i + 1]]``.

        All fields are written into a ``[rows, width]`` byte matrix, right-aligned digits with NUL for leading
        zeros, and the NULs are dropped in one pass (JSON text never contains a NUL byte). Rows go in chunks
        of :attr:`chunk_rows` so the column-wise writes stay in the CPU cache.
        """
        n = len(b)
        offsets = np.zeros(n + 1, dtype=np.int64)
        if n == 0:
            return b"", offsets
        bufs: list[bytes] = []
        for r0 in range(0, n, self.chunk_rows):
            r1 = min(n, r0 + self.chunk_rows)
            buf, length = self._encode_rows(b.take(r0, r1))
            bufs.append(buf)
            offsets[r0 + 1 : r1 + 1] = length
        np.cumsum(offsets, out=offsets)
        data = b"".join(bufs)
        if offsets[-1] != len(data):  # cannot happen for valid columns (negative values would break it)
            msg = f"tick batch encoding inconsistent: {len(data)} bytes for computed {int(offsets[-1])}"
            raise ContractError(msg)
        return data, offsets

    def _encode_rows(self, b: TickBatch) -> tuple[bytes, NDArray[np.int64]]:
        n = len(b)
        # seq and timestamp repeat for a whole step (or slice): digits of each run once, then repeated
        runs = [_runs(b.seq), _runs(b.stamp_ms)]
        _check_range("seq", runs[0][0], 0, MAX_INT64)
        _check_range("timestamp", runs[1][0], MIN_TIMESTAMP_MS, MAX_TIMESTAMP_MS)
        for name in ("price", "bid", "ask"):
            _check_range(name, getattr(b, name), 1, _MAX_CENTS)
        _check_range("bid_size", b.bid_size, 0, MAX_INT32)
        _check_range("ask_size", b.ask_size, 0, MAX_INT32)
        _check_range("volume", b.volume, 0, MAX_VOLUME)
        prices = [np.divmod(c, 100) for c in (b.price, b.bid, b.ask)]
        ints = (b.bid_size, b.ask_size, b.volume)
        lits, tail = _LITS, _TAIL
        width = (
            self._pre.shape[1]
            + sum(_digit_width(r[0]) for r in runs)
            + sum(_digit_width(w) + 3 for w, _ in prices)
            + sum(_digit_width(v) for v in ints)
            + _CONST_LEN
        )
        out = np.empty((n, width), dtype=np.uint8)
        c = self._pre.shape[1]
        out[:, :c] = self._pre[b.ticker]

        def lit(text: bytes) -> None:
            nonlocal c
            out[:, c : c + len(text)] = np.frombuffer(text, dtype=np.uint8)
            c += len(text)

        # message lengths, counted alongside: constant parts, then each variable field's digits
        length = self._pre_len[b.ticker] + (_CONST_LEN + 2 * len(prices))
        for k, (values, idx) in enumerate(runs):
            if k:
                lit(lits[0])
            small = np.zeros((values.size, _digit_width(values)), dtype=np.uint8)
            w = _put_digits(small, 0, values)
            out[:, c : c + w] = small[idx]
            length += _ndigits(values)[idx]
            c += w
        for text, (whole, frac) in zip(lits[1:4], prices, strict=True):
            lit(text)
            c += _put_digits(out, c, whole)
            length += _ndigits(whole)
            d1 = frac // 10
            d2 = frac - d1 * 10
            out[:, c] = 46  # '.'
            out[:, c + 1] = d1 + 48
            nz = d2 != 0
            out[:, c + 2] = (d2 + 48) * nz  # msgspec writes 152.3, not 152.30
            length += nz
            c += 3
        for text, values in zip(lits[4:], ints, strict=True):
            lit(text)
            c += _put_digits(out, c, values)
            length += _ndigits(values)
        lit(tail)
        return out.tobytes().replace(b"\x00", b""), length  # memchr speed; JSON has no NUL of its own

    def messages(self, b: TickBatch) -> list[bytes]:
        """One ``bytes`` value per tick (for producers and tests)."""
        buf, off = self.encode(b)
        o = off.tolist()
        return [buf[o[i] : o[i + 1]] for i in range(len(b))]
