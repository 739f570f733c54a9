//! Scans `market-ticks` JSON values (contract v1) in their canonical layout into columns.
//!
//! The canonical layout is what `contracts.tick.encode_tick` (msgspec) and the simulator's batch encoder
//! write: the ten keys in contract order, no whitespace, no escapes, integers without sign, fraction or
//! exponent, prices as plain decimals. [`scan`] takes a value only when it has that layout and every field is
//! within the contract's range; it *declines* any other value, which the caller then decodes with msgspec (a
//! valid tick in another layout) or rejects with msgspec's reason. So this scanner never accepts a value
//! msgspec would reject, and yields the same numbers for the values it accepts (decimals correctly rounded to
//! `f64`: Clinger's fast path, else Rust's `str::parse`). `tests/unit/flows/test_tickscan.py` checks both
//! properties.
//!
//! Why: msgspec spends ~0.45-0.6 us per value here (a call, a struct, its fields), then NumPy columns cost as
//! much again; this scan yields the columns directly in ~0.2 us per value, with the GIL released. Declining
//! value by value (not the whole batch) keeps a batch with a few malformed values on the fast path.

use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyList, PyTuple};
use rustc_hash::FxHashMap;

/// Longest ticker in characters (`contracts.tick.MAX_TICKER_CHARS`).
const MAX_TICKER_CHARS: usize = 32;
/// Event-time bounds in epoch milliseconds (`contracts.tick._MIN_TS_MS`, `_MAX_TS_MS`).
const MIN_TS_MS: u64 = 1_000_000_000_000;
const MAX_TS_MS: u64 = 9_999_999_999_999;
/// Prices must be `0 < p < MAX_PRICE` (`contracts.tick.MAX_PRICE`).
const MAX_PRICE: f64 = 1e9;
/// `seq` bound (`contracts.tick.MAX_INT64`), bid/ask size bound (`MAX_INT32`), volume bound (`contracts.tick.MAX_VOLUME`).
const MAX_SEQ: u64 = i64::MAX as u64;
const MAX_QUOTE_SIZE: u64 = i32::MAX as u64;
const MAX_VOLUME: u64 = 1 << 53;

/// The powers of ten that are exact `f64`s; at most 19 digits leave at most 18 after the point.
const POW10: [f64; 19] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18,
];

/// A cursor over one value.
struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    /// Consumes `s` if the value continues with it.
    #[inline]
    fn literal(&mut self, s: &[u8]) -> Option<()> {
        if self.b.get(self.i..self.i + s.len())? == s {
            self.i += s.len();
            Some(())
        } else {
            None
        }
    }

    /// Consumes ASCII digits; returns how many.
    #[inline]
    fn digits(&mut self) -> usize {
        let start = self.i;
        while self.i < self.b.len() && self.b[self.i].is_ascii_digit() {
            self.i += 1;
        }
        self.i - start
    }

    /// A JSON integer without sign, fraction or exponent (`0` or `[1-9][0-9]*`) of at most 19 digits.
    #[inline]
    fn uint(&mut self) -> Option<u64> {
        let start = self.i;
        let n = self.digits();
        if n == 0 || n > 19 || (n > 1 && self.b[start] == b'0') {
            return None;
        }
        Some(
            self.b[start..self.i]
                .iter()
                .fold(0u64, |v, d| v * 10 + u64::from(d - b'0')),
        )
    }

    /// A JSON number without sign or exponent (`int` or `int.digits`), correctly rounded to `f64`.
    ///
    /// Up to 19 digits with a value of at most 2^53 as an integer (every price with cents below 90 trillion)
    /// take Clinger's fast path: the digits as an integer and the power of ten are both exact `f64`s, so one
    /// IEEE division is the correctly rounded quotient. Anything longer goes through `str::parse`.
    #[inline]
    fn decimal(&mut self) -> Option<f64> {
        let start = self.i;
        let n = self.digits();
        if n == 0 || (n > 1 && self.b[start] == b'0') {
            return None;
        }
        let mut fraction = 0;
        if self.b.get(self.i) == Some(&b'.') {
            self.i += 1;
            fraction = self.digits();
            if fraction == 0 {
                return None;
            }
        }
        let text = &self.b[start..self.i];
        if n + fraction <= 19 {
            let mantissa = text
                .iter()
                .filter(|d| **d != b'.')
                .fold(0u64, |v, d| v * 10 + u64::from(d - b'0'));
            if mantissa <= 1 << 53 {
                return Some(mantissa as f64 / POW10[fraction]);
            }
        }
        // only ASCII digits and one '.' were consumed, so this is valid UTF-8
        std::str::from_utf8(text).ok()?.parse::<f64>().ok()
    }

    /// The bytes of a string of printable ASCII without quotes or backslashes, up to the closing quote (not
    /// consumed).
    #[inline]
    fn plain_str(&mut self) -> Option<&'a [u8]> {
        let start = self.i;
        while self.i < self.b.len() && self.b[self.i] != b'"' {
            let c = self.b[self.i];
            if !(0x20..0x7f).contains(&c) || c == b'\\' {
                return None;
            }
            self.i += 1;
        }
        Some(&self.b[start..self.i])
    }
}

/// One tick as scanned, every field within the contract's range.
struct Tick<'a> {
    ticker: &'a [u8],
    seq: u64,
    timestamp: u64,
    price: f64,
    bid: f64,
    ask: f64,
    bid_size: u64,
    ask_size: u64,
    volume: u64,
}

#[inline]
fn price_ok(p: f64) -> bool {
    p > 0.0 && p < MAX_PRICE
}

/// One value in the canonical layout with every field in range, or None.
fn scan_one(b: &[u8]) -> Option<Tick<'_>> {
    let mut c = Cursor { b, i: 0 };
    c.literal(b"{\"ticker\":\"")?;
    let ticker = c.plain_str()?;
    c.literal(b"\",\"seq\":")?;
    let seq = c.uint()?;
    c.literal(b",\"timestamp\":")?;
    let timestamp = c.uint()?;
    c.literal(b",\"price\":")?;
    let price = c.decimal()?;
    c.literal(b",\"bid\":")?;
    let bid = c.decimal()?;
    c.literal(b",\"ask\":")?;
    let ask = c.decimal()?;
    c.literal(b",\"bid_size\":")?;
    let bid_size = c.uint()?;
    c.literal(b",\"ask_size\":")?;
    let ask_size = c.uint()?;
    c.literal(b",\"volume\":")?;
    let volume = c.uint()?;
    c.literal(b",\"version\":1}")?;
    let in_range = c.i == b.len()
        && !ticker.is_empty()
        && ticker.len() <= MAX_TICKER_CHARS
        && seq <= MAX_SEQ
        && (MIN_TS_MS..=MAX_TS_MS).contains(&timestamp)
        && price_ok(price)
        && price_ok(bid)
        && price_ok(ask)
        && bid_size <= MAX_QUOTE_SIZE
        && ask_size <= MAX_QUOTE_SIZE
        && volume <= MAX_VOLUME;
    in_range.then_some(Tick {
        ticker,
        seq,
        timestamp,
        price,
        bid,
        ask,
        bid_size,
        ask_size,
        volume,
    })
}

/// The columns of a batch; `codes` index `names` (first appearance order). A declined value's row holds
/// zeros (code -1) and its position is in `declined`.
#[derive(Default)]
struct Columns<'a> {
    names: Vec<&'a str>,
    declined: Vec<usize>,
    codes: Vec<i64>,
    seqs: Vec<i64>,
    timestamps: Vec<i64>,
    prices: Vec<f64>,
    bids: Vec<f64>,
    asks: Vec<f64>,
    bid_sizes: Vec<i64>,
    ask_sizes: Vec<i64>,
    volumes: Vec<i64>,
}

impl<'a> Columns<'a> {
    /// Appends one row.
    fn push(&mut self, code: i64, t: &Tick<'_>) {
        // every bound `scan_one` checks is <= i64::MAX, so these casts are exact
        self.codes.push(code);
        self.seqs.push(t.seq as i64);
        self.timestamps.push(t.timestamp as i64);
        self.prices.push(t.price);
        self.bids.push(t.bid);
        self.asks.push(t.ask);
        self.bid_sizes.push(t.bid_size as i64);
        self.ask_sizes.push(t.ask_size as i64);
        self.volumes.push(t.volume as i64);
    }
}

/// The zeros a declined value's row holds.
const DECLINED: Tick<'static> = Tick {
    ticker: b"",
    seq: 0,
    timestamp: 0,
    price: 0.0,
    bid: 0.0,
    ask: 0.0,
    bid_size: 0,
    ask_size: 0,
    volume: 0,
};

fn scan_all<'a>(values: &[Option<&'a [u8]>]) -> Columns<'a> {
    let n = values.len();
    let mut cols = Columns {
        codes: Vec::with_capacity(n),
        seqs: Vec::with_capacity(n),
        timestamps: Vec::with_capacity(n),
        prices: Vec::with_capacity(n),
        bids: Vec::with_capacity(n),
        asks: Vec::with_capacity(n),
        bid_sizes: Vec::with_capacity(n),
        ask_sizes: Vec::with_capacity(n),
        volumes: Vec::with_capacity(n),
        ..Columns::default()
    };
    let mut index: FxHashMap<&'a [u8], i64> = FxHashMap::default();
    for (row, value) in values.iter().enumerate() {
        let Some(t) = value.and_then(scan_one) else {
            cols.declined.push(row);
            cols.push(-1, &DECLINED);
            continue;
        };
        let code = if let Some(&code) = index.get(t.ticker) {
            code
        } else {
            // printable ASCII (`plain_str`), so this never declines
            let Ok(name) = std::str::from_utf8(t.ticker) else {
                cols.declined.push(row);
                cols.push(-1, &DECLINED);
                continue;
            };
            let code = cols.names.len() as i64;
            index.insert(t.ticker, code);
            cols.names.push(name);
            code
        };
        cols.push(code, &t);
    }
    cols
}

/// A column's native bytes as a (writable) `bytearray`, for `numpy.frombuffer`.
fn column<'py, T: Copy>(py: Python<'py>, values: &[T]) -> Bound<'py, PyByteArray> {
    // SAFETY: `T` is i64 or f64 here: plain data without padding, so its bytes are initialised.
    let bytes = unsafe { std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), std::mem::size_of_val(values)) };
    PyByteArray::new(py, bytes)
}

/// Scans `values` (a list; anything but `bytes` is declined).
///
/// Returns `(names, declined, codes, seqs, timestamps, prices, bids, asks, bid_sizes, ask_sizes, volumes)`:
/// `names` the distinct tickers of the accepted values in order of first appearance, `declined` the positions
/// of the values not taken (ascending), the rest `bytearray`s of native int64 (`codes` index `names`, -1 on a
/// declined row) or float64, one element per value. The scan runs with the GIL released.
#[pyfunction]
fn scan<'py>(py: Python<'py>, values: &Bound<'py, PyList>) -> PyResult<Bound<'py, PyTuple>> {
    let held: Vec<Option<Bound<'py, PyBytes>>> = values.iter().map(|v| v.cast_into::<PyBytes>().ok()).collect();
    let raws: Vec<Option<&[u8]>> = held.iter().map(|b| b.as_ref().map(|b| b.as_bytes())).collect();
    let cols = py.detach(|| scan_all(&raws));
    let out = (
        PyList::new(py, &cols.names)?,
        PyList::new(py, &cols.declined)?,
        column(py, &cols.codes),
        column(py, &cols.seqs),
        column(py, &cols.timestamps),
        column(py, &cols.prices),
        column(py, &cols.bids),
        column(py, &cols.asks),
        column(py, &cols.bid_sizes),
        column(py, &cols.ask_sizes),
        column(py, &cols.volumes),
    );
    out.into_pyobject(py)
}

#[pymodule]
fn tickscan(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(scan, m)?)?;
    let limits = PyDict::new(m.py());
    limits.set_item("max_ticker_chars", MAX_TICKER_CHARS)?;
    limits.set_item("min_ts_ms", MIN_TS_MS)?;
    limits.set_item("max_ts_ms", MAX_TS_MS)?;
    limits.set_item("max_price", MAX_PRICE)?;
    limits.set_item("max_seq", MAX_SEQ)?;
    limits.set_item("max_quote_size", MAX_QUOTE_SIZE)?;
    limits.set_item("max_volume", MAX_VOLUME)?;
    m.add("LIMITS", limits)?;
    Ok(())
}
