"""Hand heap memory the process has freed back to the operating system (glibc's ``malloc_trim``).

librdkafka's fetcher threads allocate every prefetched message in their own malloc arenas; the messages are freed
by the thread that consumes them, and the arenas keep the freed pages. A flow that read a large backlog kept
~0.6 GB of such free pages resident for as long as it ran (measured: RSS 760 MB before a trim, 157 MB after;
docs/benchmarks.md, session 15). Other C libraries (musl, macOS) have no ``malloc_trim``; then this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable


def _load_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        trim = libc.malloc_trim
    except (OSError, AttributeError, TypeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_TRIM = _load_trim()


def release_free_memory() -> bool:
    """Return free heap pages of every malloc arena to the OS; False where the C library cannot (not glibc)."""
    if _TRIM is None:
        return False
    _TRIM(0)
    return True
