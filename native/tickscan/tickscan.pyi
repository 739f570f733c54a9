"""Scans ``market-ticks`` JSON values in their canonical layout into columns (Rust; see ``src/lib.rs``)."""

#: the contract's bounds compiled into the scanner (a test pins them to the Python constants)
LIMITS: dict[str, int | float]

def scan(
    values: list[bytes],
) -> tuple[
    list[str],
    list[int],
    bytearray,
    bytearray,
    bytearray,
    bytearray,
    bytearray,
    bytearray,
    bytearray,
    bytearray,
    bytearray,
]:
    """``(names, declined, codes, seqs, timestamps, prices, bids, asks, bid_sizes, ask_sizes, volumes)``.

    A value is taken only if it is ``bytes`` in the canonical layout with every field in range; ``declined``
    lists the positions of the others (their rows hold zeros, code -1). The columns are native int64 (``codes``
    index ``names``, first appearance order) or float64 (the three prices), one element per value.
    """
