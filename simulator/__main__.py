"""Command line: ``python -m simulator run | backfill | export | report | universe``.

* ``run``: resume each ticker from its last tick in the ticks topic (``SIM_RESUME``) or, on an empty topic,
  backfill ``SIM_BACKFILL`` (default 2 days); either way as fast as possible up to now, then in real time.
* ``backfill --start --end``: simulated clock, as fast as possible, into Kafka.
* ``--inject TECH:jump:+8%@2026-01-05T10:00Z`` (repeatable, before the command): scheduled events, see events.py.
* ``export --start --end --interval tick|1s|1m|1d --format csv|parquet --out PATH``: files, no Kafka.
* ``report``: the realism report (stylized facts vs targets vs real data).
* ``universe --count N --out PATH``: write a generated universe YAML.

SIGINT/SIGTERM stop production cleanly: the current batch finishes, the producer flushes, counts are logged.
Bad options or settings (a time outside the tick contract's range, an unparsable event, a block too large for
``SIM_MAX_BLOCK_MB``, ...) are reported before anything connects to Kafka, with exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import math
import signal
import sys
import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from types import FrameType

import pydantic

from common.clock import from_ms, now_ms, to_ms
from common.errors import ConfigError, MarketDataError
from simulator.engine import TickEngine, time_range_problem
from simulator.events import EventSchedule, MarketEvent, parse_event
from simulator.resume import ResumeState
from simulator.session import Session, parse_time
from simulator.settings import SimulatorSettings
from simulator.universe import UniverseConfig, load_universe, universe_to_yaml

log = logging.getLogger("simulator")


def _session(settings: SimulatorSettings) -> Session:
    return Session(mode=settings.session_mode, timezone=settings.session_timezone)


def _install_stop() -> threading.Event:
    stop = threading.Event()

    def handler(signum: int, _frame: FrameType | None) -> None:
        log.warning("received %s: finishing the current batch and flushing", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


def _produce(
    settings: SimulatorSettings,
    start_ms: int,
    end_ms: int | None,
    realtime: bool,
    progress: bool,
    events: list[MarketEvent] | None = None,
    resume_window: timedelta | None = None,
) -> int:
    """Produce ``[start_ms, end_ms)`` to Kafka; with ``resume_window`` (``run``), ``start_ms`` is only used when
    the topic holds no tick of the universe, else each ticker continues from its last tick (the gap to the
    wall clock bounded by the window). Everything that can be checked without Kafka is checked first."""
    from simulator.metrics import SimulatorMetrics
    from simulator.producer import TickProducer
    from simulator.stream import stream

    universe = load_universe(settings.preset)
    settings.check_block_memory(len(universe))
    schedule = EventSchedule(events, universe.symbols) if events else None
    metrics = SimulatorMetrics()
    metrics.serve(settings.metrics_port)
    producer = TickProducer(settings, universe.symbols, metrics)
    stop = _install_stop()
    if not producer.wait_for_broker(stop=stop):
        return 0  # stopped before the broker answered: nothing was produced
    resume: ResumeState | None = None
    if resume_window is not None:
        from simulator.topic_tail import resume_from_topic

        max_gap_ms = resume_window // timedelta(milliseconds=1)
        plan = resume_from_topic(settings, universe, now_ms(), max_gap_ms, metrics)
        if plan is not None:
            start_ms, resume = plan.start_ms, plan.state
    engine = TickEngine(
        universe,
        _session(settings),
        settings.seed,
        start_ms,
        tick_ms=settings.tick_ms,
        threads=settings.threads,
        before_block=schedule,
        slice_ms=settings.effective_slice_ms,
        resume=resume,
    )
    log.info(
        "producing %d tickers at %.3g ticks/s each from %s (%s)",
        len(universe),
        settings.tick_rate,
        from_ms(engine.next_ts_ms()).isoformat(),  # the first tick: the first step at/after the start
        "real time" if realtime else "backfill",
    )
    try:
        sent = stream(
            engine,
            producer,
            metrics,
            stop,
            end_ms=end_ms,
            realtime=realtime,
            batch_ticks=settings.batch_ticks,
            progress=progress,
        )
    finally:
        engine.close()
        failed_at_flush = producer.flush()
    log.info("done: %d ticks produced, %d failed (%d at shutdown flush)", sent, producer.failed, failed_at_flush)
    return 1 if producer.failed else 0


def _hours(text: str) -> float:
    """``run --backfill``: a finite, non-negative number of hours."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        msg = f"hours must be a finite number >= 0, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _int_in(lo: int, hi: int) -> Callable[[str], int]:
    """An argparse type: an integer in ``[lo, hi]``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = lo - 1
        if not lo <= value <= hi:
            msg = f"must be an integer from {lo} to {hi:,}, got {text!r}"
            raise argparse.ArgumentTypeError(msg)
        return value

    return parse


def _check_tick_time(option: str, ms: int) -> None:
    """A time that ticks are stamped with must be in the tick contract's range; the error names the option."""
    problem = time_range_problem(option, ms)
    if problem is not None:
        raise ConfigError(problem)


def _backfill_start(settings: SimulatorSettings, hours: float | None) -> tuple[int, timedelta]:
    """``run``: (start of the backfill window in epoch ms, the window), checked against the contract's range."""
    option = "--backfill" if hours is not None else "SIM_BACKFILL"
    window_ms = round(hours * 3_600_000) if hours is not None else settings.backfill // timedelta(milliseconds=1)
    start = now_ms() - window_ms
    problem = time_range_problem(f"the start of the {option} window", start)
    if problem is not None:
        msg = f"{option} of {window_ms / 3_600_000:g} hours is too long: {problem}"
        raise ConfigError(msg)
    return start, timedelta(milliseconds=window_ms)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    p = argparse.ArgumentParser(prog="python -m simulator", description=__doc__.splitlines()[0])
    p.add_argument("--preset", help="universe preset name or YAML path (default: SIM_PRESET)")
    p.add_argument("--seed", type=int, help="random seed (default: SIM_SEED)")
    p.add_argument("--session", choices=["24/7", "exchange"], help="session mode (default: SIM_SESSION_MODE)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--inject",
        action="append",
        metavar="EVENT",
        help="scheduled event TICKER:jump|volume|regime|delay:VALUE@ISO-TIME[/DURATION],"
        " e.g. TECH:jump:+8%%@2026-01-05T10:00Z (repeatable; see simulator/events.py)",
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser(
        "run", help="resume from the topic's last ticks (or backfill the configured window), then real time into Kafka"
    )
    r.add_argument("--backfill", type=_hours, help="hours of history first (default: SIM_BACKFILL)")
    b = sub.add_parser("backfill", help="[start, end) into Kafka as fast as possible")
    e = sub.add_parser("export", help="ticks or bars to CSV/Parquet")
    for q in (b, e):
        q.add_argument("--start", required=True, type=parse_time, help="ISO time (UTC if no offset)")
        q.add_argument("--end", required=True, type=parse_time)
    e.add_argument("--interval", choices=["tick", "1s", "1m", "1d"], default="1m")
    e.add_argument("--format", choices=["csv", "parquet"], default="parquet")
    e.add_argument("--out", required=True, type=Path)
    rep = sub.add_parser("report", help="stylized facts vs targets vs real data")
    rep.add_argument("--paths", type=_int_in(1, 10_000), default=16)
    rep.add_argument("--years", type=_int_in(1, 1_000), default=20)
    rep.add_argument("--intraday-days", type=_int_in(1, 3_650), default=30)
    u = sub.add_parser("universe", help="write a generated universe YAML")
    u.add_argument("--count", type=int, required=True)
    u.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    overrides = {
        k: v for k, v in (("preset", args.preset), ("seed", args.seed), ("session_mode", args.session)) if v is not None
    }
    try:
        settings = SimulatorSettings(**overrides)
        progress = not args.no_progress
        # events are parsed first: a bad one is reported at once, before anything connects to Kafka
        events = [parse_event(e) for e in args.inject or []]
        if events and args.cmd in ("report", "universe"):
            msg = f"--inject acts on run, backfill and tick exports, not on {args.cmd}"
            raise ConfigError(msg)
        if args.cmd in ("backfill", "export"):
            start_ms, end_ms = to_ms(args.start), to_ms(args.end)
            if end_ms <= start_ms:
                msg = f"--end {args.end.isoformat()} must be after --start {args.start.isoformat()}"
                raise ConfigError(msg)
            if args.cmd == "backfill" or args.interval == "tick":  # ticks carry the contract's timestamps
                _check_tick_time("--start", start_ms)
                _check_tick_time("--end", end_ms)
        if args.cmd == "run":
            start, window = _backfill_start(settings, args.backfill)
            return _produce(
                settings,
                start,
                None,
                realtime=True,
                progress=progress,
                events=events,
                resume_window=window if settings.resume else None,
            )
        if args.cmd == "backfill":
            return _produce(settings, start_ms, end_ms, realtime=False, progress=progress, events=events)
        if args.cmd == "export":
            from simulator.export import export

            universe = load_universe(settings.preset)
            if args.interval == "tick":
                settings.check_block_memory(len(universe))
            rows = export(
                universe,
                _session(settings),
                settings.seed,
                start_ms,
                end_ms,
                args.interval,
                args.format,
                args.out,
                tick_ms=settings.tick_ms,
                threads=settings.threads,
                progress=progress,
                slice_ms=settings.effective_slice_ms,
                events=EventSchedule(events, universe.symbols) if events else None,
            )
            log.info("wrote %d rows to %s", rows, args.out)
            return 0
        if args.cmd == "report":
            from simulator.report import build_report

            # daily facts are defined on trading days: the report uses the exchange calendar unless told otherwise
            session = Session(mode=args.session or "exchange", timezone=settings.session_timezone)
            print(
                build_report(
                    load_universe(settings.preset), session, settings.seed, args.paths, args.years, args.intraday_days
                )
            )
            return 0
        cfg = UniverseConfig(
            name=f"generated-{args.count}",
            factors=["market", "technology", "finance", "energy", "healthcare"],
            generate={"count": args.count, "seed": settings.seed},
        )
        args.out.write_text(universe_to_yaml(cfg), encoding="utf-8")
        return 0
    except MarketDataError as err:
        log.error("%s", err)
        return 2
    except pydantic.ValidationError as err:  # settings: show the field, not a traceback
        log.error("invalid settings: %s", err)
        return 2


if __name__ == "__main__":
    sys.exit(main())
