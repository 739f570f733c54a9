"""Freed heap pages go back to the operating system when asked (glibc's ``malloc_trim``)."""

from __future__ import annotations

import ctypes
import ctypes.util
import platform
from pathlib import Path

import pytest

import common.heap as heap
from common.heap import release_free_memory

CHUNK, COUNT = 1_700, 60_000  # ~100 MB in chunks below glibc's mmap threshold: they come from the heap


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's; elsewhere this is a no-op")
def test_freed_heap_below_a_live_chunk_is_returned() -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    chunks = [libc.malloc(CHUNK) for _ in range(COUNT)]
    for c in chunks:
        ctypes.memset(c, 1, CHUNK)  # resident
    pin = libc.malloc(CHUNK)  # keeps the freed chunks below the top of the heap: free() alone cannot return them
    for c in chunks:
        libc.free(c)
    try:
        held = _rss_mb()
        assert release_free_memory() is True
        released = held - _rss_mb()
    finally:
        libc.free(pin)
    assert released > 0.5 * CHUNK * COUNT / 2**20, f"only {released:.0f} MB of ~{CHUNK * COUNT / 2**20:.0f} MB returned"


def test_without_malloc_trim_it_does_nothing_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(heap, "_TRIM", None)  # musl, macOS: the C library has no malloc_trim
    assert release_free_memory() is False
