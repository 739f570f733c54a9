"""Client CPU per bar of the flows' Redis bar writes: ``python bench/bench_redis_bars.py [--live N] [--final N]``.

Starts a private Redis (``benchstack.local_stack``), then writes the same live and final bars in pipelines of
``--chunk`` bars three ways, alternated over ``--rounds``: ``flows.sinks._write_bars`` (``MSET`` of the
finals, ``HSET`` per ticker, one Lua ``SET … EX`` call per 5,000 live bars), ``one command per bar``
(``set``/``hset`` per bar, the previous writer), and ``execute_command per bar`` (``MSET``/``HSET`` as now, but
one generic ``SET … EX`` per live bar). Prints µs of wall and client CPU per bar; the resulting keys (values,
hashes, which expire) are compared across writers.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from contracts import redis_keys
from contracts.bar import TIMEFRAMES as CONTRACT_TIMEFRAMES
from contracts.bar import Bar, Indicators, encode_bar, timeframe_ms
from flows.sinks import EncodedBar, _write_bars

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchstack import local_stack  # noqa: E402 -- bench/ is not a package

TIMEFRAMES = tuple(CONTRACT_TIMEFRAMES)


def make_bars(live: int, final: int, tickers: int) -> list[EncodedBar]:
    """``live`` live bars then ``final`` final bars, round-robin over tickers and timeframes."""
    out: list[EncodedBar] = []
    for i in range(live + final):
        tf = TIMEFRAMES[i % len(TIMEFRAMES)]
        length = timeframe_ms(tf)
        start = 1_700_000_000_000 // length * length
        is_final = i >= live
        bar = Bar(
            ticker=f"T{i % tickers:04d}", timeframe=tf, start=start, end=start + length, open=1.0, high=2.0,
            low=0.5, close=1.5, volume=10, vwap=1.2, trades=3, first_tick=start, last_tick=start + 1,
            final=is_final, indicators=Indicators(sma_20=1.4) if is_final else None,
        )  # fmt: skip
        out.append(EncodedBar(bar, encode_bar(bar)))
    return out


def one_command_per_bar(pipe: Any, bars: list[EncodedBar]) -> None:
    """The writer before session 5: ``set`` and ``hset`` per final bar, ``set(ex=)`` per live bar."""
    for bar, raw in bars:
        if bar.final:
            pipe.set(redis_keys.final_bar(bar.ticker, bar.timeframe), raw)
            pipe.hset(redis_keys.indicators(bar.ticker), bar.timeframe, raw)
        else:
            ttl = redis_keys.LIVE_BAR_TTL_S[bar.timeframe]
            pipe.set(redis_keys.live_bar(bar.ticker, bar.timeframe), raw, ex=ttl)


def execute_command_per_live_bar(pipe: Any, bars: list[EncodedBar]) -> None:
    """``MSET``/``HSET`` per ticker for the finals like now, one generic ``SET … EX`` per live bar."""
    finals: dict[str, bytes] = {}
    indicators: dict[str, list[Any]] = {}
    for bar, raw in bars:
        if bar.final:
            finals[redis_keys.final_bar(bar.ticker, bar.timeframe)] = raw
            indicators.setdefault(bar.ticker, []).extend((bar.timeframe, raw))
        else:
            ttl = redis_keys.LIVE_BAR_TTL_S[bar.timeframe]
            pipe.execute_command("SET", redis_keys.live_bar(bar.ticker, bar.timeframe), raw, "EX", ttl)
    if finals:
        pipe.execute_command("MSET", *itertools.chain.from_iterable(finals.items()))
    for ticker, fields in indicators.items():
        pipe.execute_command("HSET", redis_keys.indicators(ticker), *fields)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--live", type=int, default=35_000)
    parser.add_argument("--final", type=int, default=20_000)
    parser.add_argument("--tickers", type=int, default=1_000)
    parser.add_argument("--chunk", type=int, default=2_000, help="bars per pipeline (one sink write)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    bars = make_bars(args.live, args.final, args.tickers)
    chunks = [bars[i : i + args.chunk] for i in range(0, len(bars), args.chunk)]
    writers: dict[str, Callable[[Any, list[EncodedBar]], None]] = {
        "flows.sinks._write_bars": _write_bars,
        "one command per bar": one_command_per_bar,
        "execute_command per live bar": execute_command_per_live_bar,
    }
    with local_stack(kafka=False, postgres=False) as stack:
        client = redis.Redis.from_url(stack.redis_url)
        print(f"{len(bars):,} bars ({args.live:,} live, {args.final:,} final), pipelines of {args.chunk:,}")
        print("| round | writer | wall µs/bar | client CPU µs/bar |\n|---|---|---:|---:|")
        contents: dict[str, dict[bytes, tuple[object, bool]]] = {}
        for rnd in range(1, args.rounds + 1):
            for name, write in writers.items():
                client.flushall()
                wall, cpu = time.perf_counter(), time.process_time()
                for chunk in chunks:
                    pipe = client.pipeline(transaction=False)
                    write(pipe, chunk)
                    pipe.execute()
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                print(f"| {rnd} | {name} | {wall / len(bars) * 1e6:.2f} | {cpu / len(bars) * 1e6:.2f} |")
                contents[name] = {
                    key: (client.get(key), client.ttl(key) > 0)
                    if key.startswith(b"bar:")
                    else (client.hgetall(key), client.ttl(key) > 0)
                    for key in client.keys("*")
                }
        first = next(iter(contents.values()))
        same = all(c == first for c in contents.values())
        print(f"same keys, values and expiring keys from every writer: {same} ({len(first):,} keys)")
        client.close()


if __name__ == "__main__":
    main()
