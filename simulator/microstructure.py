"""From model log prices to quotes and trades: cent grid, bid/ask spread, sizes and volume.

* Trade price: the model mid rounded to whole cents (never clamped; at least 1 cent on the grid).
* Spread (cents, >= 1 tick): ``price * spread_bps * (sigma / 20 %) * sqrt($100 / price)`` per ticker and
  block, plus one extra tick with probability ``extra_tick_prob`` - wider with volatility, and wider relative
  to price for cheaper stocks. Upticks trade at the ask, downticks at the bid (bid-ask bounce).
* Volume: heavy-tailed (log-normal noise) around ``tick_volume``, scaled by the intraday U shape, by the
  current vol level (``activity``) and by the size of the tick's move, so volume correlates with |return|.
  A print is at least one share (a print of 0 shares is no trade) and at most the contract's ``volume`` limit.
* Bid/ask sizes: round lots (100 shares), heavy-tailed, scaled with the ticker's ``tick_volume``; the lot is
  capped at :data:`MAX_LOT_SHARES` so the largest size fits the contract's ``bid_size``/``ask_size`` limit
  (``MAX_INT32``) whatever ``tick_volume`` a volume event multiplies.

The per-tick randomness is one 64-bit word from the ``micro`` stream split into four 16-bit uniforms that
index fixed inverse-CDF tables (16 bits for volume noise, 8 bits for each quote size, 16 bits for the extra
spread tick): one draw per tick instead of four, which keeps tick generation fast.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, fields

import numpy as np
from numpy.typing import NDArray
from scipy.special import ndtri

from contracts.tick import MAX_INT32, MAX_VOLUME

I64 = NDArray[np.int64]
F64 = NDArray[np.float64]

_U16 = (np.arange(65536, dtype=np.float64) + 0.5) / 65536.0
_NORMAL_Q = ndtri(_U16)
#: log-normal volume noise with mean 1 (sigma 0.9: heavy right tail)
VOLUME_NOISE = np.exp(0.9 * _NORMAL_Q - 0.5 * 0.9**2)
_MEAN_ABS_Z = float(np.sqrt(2.0 / np.pi))
_TINY = 1e-12  # floor for a step's sd: the variance may touch zero (full truncation)


@dataclass(frozen=True)
class MicrostructureParams:
    """Spread and volume shape parameters (shared by all tickers of a universe)."""

    spread_bps: float = 2.0
    extra_tick_prob: float = 0.2
    volume_move_weight: float = 0.6
    activity_power: float = 1.5
    intraday_depth: float = 0.4


def base_spread_cents(price_cents: I64, sigma: F64, params: MicrostructureParams) -> I64:
    """Spread in cents per ticker (>= 1) from the current price and annualised vol."""
    px = np.maximum(price_cents, 1).astype(np.float64)
    bps = params.spread_bps * (sigma / 0.2) * np.sqrt(10_000.0 / px)
    return np.maximum(1, np.rint(px * bps * 1e-4)).astype(np.int64)


@dataclass
class Quotes:
    """Per-tick trade and quote columns, all ``[m, n]`` int64 (prices in cents); often views of a block."""

    price: I64
    bid: I64
    ask: I64
    bid_size: I64
    ask_size: I64
    volume: I64

    @classmethod
    def empty(cls, m: int, n: int) -> Quotes:
        """Uninitialised columns for ``m`` steps of ``n`` tickers."""
        return cls(*(np.empty((m, n), dtype=np.int64) for _ in range(6)))

    def view(self, rows: slice, cols: slice) -> Quotes:
        """The sub-block ``[rows, cols]`` of every column (views)."""
        return Quotes(*(getattr(self, k)[rows, cols] for k in QUOTE_COLUMNS))


#: the columns of :class:`Quotes`, in order
QUOTE_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(Quotes))


@dataclass(frozen=True)
class TickerMicro:
    """Per-ticker coefficients ``[n]`` for one block: spread, quote lot size and the volume model."""

    spread: I64
    lot_shares: I64
    vol_base: F64
    vol_move: F64

    def slice(self, cols: slice) -> TickerMicro:
        """Coefficients of a ticker group."""
        return TickerMicro(self.spread[cols], self.lot_shares[cols], self.vol_base[cols], self.vol_move[cols])


def ticker_micro(
    price_cents: I64,
    sigma: F64,
    sigma_step: F64,
    tick_volume: F64,
    activity: F64,
    params: MicrostructureParams,
) -> TickerMicro:
    """Block coefficients from the block-start price, the vol in force and the ticker's mean trade size."""
    w = params.volume_move_weight
    scale = tick_volume * activity**params.activity_power
    return TickerMicro(
        spread=base_spread_cents(price_cents, sigma, params),
        lot_shares=100 * np.clip(np.rint(tick_volume / 500.0), 1, MAX_LOT_SHARES // 100).astype(np.int64),
        vol_base=scale * (1.0 - w),
        vol_move=scale * (w / _MEAN_ABS_Z) / np.maximum(sigma_step, _TINY),
    )


def dress_into(
    out: Quotes,
    log_mid: F64,
    log_returns: F64,
    coef: TickerMicro,
    shape: F64 | None,
    rng: np.random.Generator,
    params: MicrostructureParams,
) -> None:
    """Fill ``out`` (``[c, k]`` views) with trades and quotes for log mids/returns ``[c, k]`` of one group.

    ``shape`` ``[c]`` is the intraday volume multiplier (None for flat).
    """
    c, k = log_mid.shape
    raw = rng.bit_generator.random_raw(c * k).reshape(c, k)
    # the 64 random bits are used as four fields: bits 0-15 volume noise, 16-23 bid size, 32-39 ask size,
    # 48-63 extra spread tick; read through narrow views instead of shifting and masking uint64 arrays
    w16 = raw.view(np.uint16).reshape(c, k, 4)
    b8 = raw.view(np.uint8).reshape(c, k, 8)
    tmp = np.exp(log_mid)
    tmp *= 100.0
    np.rint(tmp, out=tmp)
    price = out.price
    price[...] = tmp
    np.maximum(price, 1, out=price)
    spread = w16[:, :, _W_SPREAD] < np.uint16(int(params.extra_tick_prob * 65536))
    spread = spread + coef.spread  # bool + int64 -> int64
    bid = out.bid
    np.subtract(price, spread * (log_returns > 0.0), out=bid)  # upticks trade at the ask
    low = bid < 1
    if low.any():
        bid[low] = price[low]
    np.add(bid, spread, out=out.ask)
    np.multiply(SIZE_LOTS_INT[b8[:, :, _B_BID]], coef.lot_shares, out=out.bid_size)
    np.multiply(SIZE_LOTS_INT[b8[:, :, _B_ASK]], coef.lot_shares, out=out.ask_size)
    np.abs(log_returns, out=tmp)
    tmp *= coef.vol_move
    tmp += coef.vol_base
    tmp *= VOLUME_NOISE[w16[:, :, _W_NOISE]]
    if shape is not None:
        tmp *= shape[:, None]
    np.clip(tmp, _ONE, _MAX_VOLUME_F, out=tmp)  # at least one share; never past the contract's int64
    np.rint(tmp, out=tmp)
    out.volume[...] = tmp


# positions of the bit fields above in the little- or big-endian layout of a uint64
_LITTLE = sys.byteorder == "little"
_W_NOISE, _W_SPREAD = (0, 3) if _LITTLE else (3, 0)
_B_BID, _B_ASK = (2, 4) if _LITTLE else (5, 3)
#: quote size in lots for an 8-bit uniform: log-normal (median 3 lots), at least 1
SIZE_LOTS_INT = np.maximum(1, np.rint(np.exp(np.log(3.0) + 0.8 * ndtri((np.arange(256) + 0.5) / 256)))).astype(np.int64)
#: largest quote lot (a multiple of 100 shares): the largest size, ``SIZE_LOTS_INT.max()`` lots, fits ``MAX_INT32``
MAX_LOT_SHARES = MAX_INT32 // int(SIZE_LOTS_INT.max()) // 100 * 100
#: bounds of a print's volume before rounding: one share, and the contract's largest volume (2**53, exact in float64)
_ONE = np.float64(1.0)
_MAX_VOLUME_F = np.float64(MAX_VOLUME)


def bridge_high_low(log_open: F64, log_close: F64, var: F64, u_hi: F64, u_lo: F64) -> tuple[F64, F64]:
    """Max and min of a Brownian bridge from open to close with total variance ``var`` (exact sampling)."""
    d = log_close - log_open
    hi = 0.5 * (log_open + log_close + np.sqrt(d * d - 2.0 * var * np.log(u_hi)))
    lo = 0.5 * (log_open + log_close - np.sqrt(d * d - 2.0 * var * np.log(u_lo)))
    return hi, lo


def bar_volume(
    n_ticks: float,
    log_returns: F64,
    sigma_step: F64,
    tick_volume: F64,
    activity: F64,
    shape: F64 | None,
    u: F64,
    params: MicrostructureParams,
) -> I64:
    """Volume of bars simulated directly at a coarse step: expected tick volume times a move/noise factor."""
    w = params.volume_move_weight
    move = (1.0 - w) + (w / _MEAN_ABS_Z) * np.abs(log_returns) / np.maximum(sigma_step, _TINY)[None, :]
    # aggregated noise is less dispersed than per-tick noise: sigma 0.35 log-normal, mean 1
    noise = np.exp(0.35 * ndtri(u) - 0.5 * 0.35**2)
    vol = n_ticks * tick_volume[None, :] * (activity**params.activity_power)[None, :] * move * noise
    if shape is not None:
        vol *= shape[:, None]
    out: I64 = np.rint(vol).astype(np.int64)
    return out
