"""Decoding ``market-ticks`` batches: ``python bench/bench_decode.py [--ticks N] [--other DIR]``.

Times, per tick, over batches of ``FLOW_BATCH_SIZE`` canonical values (1,000 tickers): the Rust scanner alone
(``tickscan.scan``), the bars flow's whole decoder (``flows.decode.decode_batch``: scan, checks, cents, the
columns), and msgspec decoding the same values into ``WireTick`` structs (what the scanner replaced). With
``--other DIR`` (a directory holding another build of the ``tickscan`` package, e.g. a copy of
``.venv/lib/python3.11/site-packages/tickscan`` taken before a change) every row is also run with that build,
alternating in child processes for ``--rounds`` rounds, and the ratio of the medians is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_flow_bars import Scenario, make_values  # noqa: E402 -- bench/ is not a package

ROWS = ("tickscan.scan", "decode_batch", "msgspec WireTick")


def measure(ticks: int, batch: int, repeat: int) -> dict[str, float]:
    """Best-of-``repeat`` nanoseconds per tick of each row."""
    import tickscan  # noqa: PLC0415 -- imported here so that a child's PYTHONPATH picks the build

    from flows.decode import WireTick, decode_batch  # noqa: PLC0415

    values = make_values(ticks, Scenario(1_000, 1.0, live=False))
    batches = [values[i : i + batch] for i in range(0, len(values), batch)]
    decoder = msgspec.json.Decoder(WireTick)
    rows = {
        "tickscan.scan": lambda b: tickscan.scan(b),
        "decode_batch": lambda b: decode_batch(b),
        "msgspec WireTick": lambda b: [decoder.decode(v) for v in b],
    }
    out = {}
    for name, fn in rows.items():
        best = float("inf")
        for _ in range(repeat):
            start = time.perf_counter()
            for b in batches:
                fn(b)
            best = min(best, time.perf_counter() - start)
        out[name] = best / ticks * 1e9
    return out


def child(args: argparse.Namespace, path: str | None) -> dict[str, float]:
    env = dict(os.environ)
    if path:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [path, env.get("PYTHONPATH", "")]))
    command = [sys.executable, __file__, "--child", "--ticks", str(args.ticks), "--batch", str(args.batch)]
    proc = subprocess.run(command, env=env, check=True, capture_output=True, text=True)  # noqa: S603
    result: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    from flows.settings import FlowSettings  # noqa: PLC0415

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=500_000)
    parser.add_argument("--batch", type=int, default=FlowSettings.model_fields["batch_size"].default)
    parser.add_argument("--repeat", type=int, default=5, help="best of this many passes per row")
    parser.add_argument("--other", default="", help="a directory holding another tickscan build to compare")
    parser.add_argument("--rounds", type=int, default=3, help="with --other: child runs of each build")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.ticks, args.batch, args.repeat)))
        return
    print(f"decoding {args.ticks:,} canonical ticks (1,000 tickers) in batches of {args.batch:,}; ns per tick")
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    if not args.other:
        result = measure(args.ticks, args.batch, args.repeat)
        for name in ROWS:
            print(f"{name:<18} {result[name]:>8.0f}")
        return
    runs: dict[str, list[dict[str, float]]] = {"installed": [], "other": []}
    for round_ in range(args.rounds):
        order = [("installed", None), ("other", args.other)]
        for label, path in order if round_ % 2 == 0 else order[::-1]:
            runs[label].append(child(args, path))
    print(f"{'row':<18} {'other (rounds)':>28} {'installed (rounds)':>28} {'installed / other':>18}")
    for name in ROWS:
        other = [r[name] for r in runs["other"]]
        mine = [r[name] for r in runs["installed"]]
        ratio = statistics.median(mine) / statistics.median(other)
        print(
            f"{name:<18} {' / '.join(f'{v:.0f}' for v in other):>28} {' / '.join(f'{v:.0f}' for v in mine):>28} "
            f"{ratio:>17.2f}x"
        )
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
