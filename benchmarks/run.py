"""What the bot costs: `python -m benchmarks.run [--bursts 1,50,200,500] [--task-seconds 3] [--quick]`.

Starts a fake Discord and a fake Freepik on 127.0.0.1, runs the real bot as its own process, fires bursts
of simultaneous /describe commands from distinct members, and prints markdown tables; a full run also
writes them to docs/benchmarks.md with the date and the machine. It stops by itself (every wait is bounded)
and takes about two and a half minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import pstats
import shlex
import sys
import time
from pathlib import Path

from benchmarks.baseline import PollerResult, run_pollers
from benchmarks.burst import BurstConfig, BurstResult, run_burst
from benchmarks.machine import describe_machine
from benchmarks.quota import QuotaResult, run_quota
from benchmarks.report import Results, RunSettings, document, kept_notes, tables
from benchmarks.scale import kept_section as kept_scale_section

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = ROOT / "docs" / "benchmarks.md"


def _numbers(value: str, kind: type[int] | type[float]) -> tuple[float, ...]:
    try:
        numbers = tuple(kind(part) for part in value.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of numbers: {value!r}") from None
    if not numbers or any(number <= 0 for number in numbers):
        raise argparse.ArgumentTypeError(f"numbers must be positive: {value!r}")
    return numbers


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--bursts",
        type=lambda value: tuple(int(n) for n in _numbers(value, int)),
        default=(1, 50, 200, 500),
        help="simultaneous /describe commands per burst (default 1,50,200,500)",
    )
    parser.add_argument(
        "--task-seconds",
        type=float,
        default=3.0,
        help="how long each provider state (CREATED, IN_PROGRESS) lasts (default 3)",
    )
    parser.add_argument(
        "--jitter",
        type=float,
        default=0.25,
        help="each task's state length varies by up to this fraction, seeded (default 0.25; 0: exact)",
    )
    parser.add_argument(
        "--modes",
        default="polling,webhooks",
        help="which bot configurations to run: polling, webhooks or both (default both)",
    )
    parser.add_argument(
        "--pollers",
        type=lambda value: () if value == "none" else _numbers(value, float),
        default=(2.0, 5.0),
        help="intervals of the fixed-interval pollers to compare with, in seconds (default 2,5; none)",
    )
    parser.add_argument(
        "--quota-members", type=int, default=500, help="members reserving at once (default 500)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: bursts 1,20, 1.5 s states, 100 quota members; writes no file unless --output",
    )
    parser.add_argument("--output", type=Path, help=f"where to write the document (default {DEFAULT_OUTPUT})")
    parser.add_argument("--no-write", action="store_true", help="print the tables only")
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="run the bot under cProfile during each burst; write DIR/bot-MODE-N.prof and print the top",
    )
    parser.add_argument("--logs", type=Path, metavar="DIR", help="keep each bot process's output here")
    args = parser.parse_args(argv)
    if args.quick:
        args.bursts = (1, 20)
        args.task_seconds = 1.5
        args.quota_members = 100
    modes = {mode.strip() for mode in args.modes.split(",") if mode.strip()}
    if not modes or not modes <= {"polling", "webhooks"}:
        parser.error("--modes takes polling, webhooks or both")
    args.modes = tuple(mode for mode in ("polling", "webhooks") if mode in modes)
    if not 0 <= args.jitter < 1:
        parser.error("--jitter must be at least 0 and below 1")
    if args.task_seconds <= 0:
        parser.error("--task-seconds must be positive")
    return args


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _print_profile(path: Path) -> None:
    if not path.exists():
        _say(f"  (no profile written to {path})")
        return
    _say(f"  profile {path}: top 25 by own time")
    stats = pstats.Stats(str(path), stream=sys.stderr)
    stats.sort_stats("tottime").print_stats(25)


async def run(args: argparse.Namespace, command: str) -> Results:
    began = time.monotonic()
    machine = describe_machine()
    _say(f"benchmark on {machine.line()}")
    bursts: list[BurstResult] = []
    pollers: list[PollerResult] = []
    for size in args.bursts:
        for mode in args.modes:
            profile_out = None
            if args.profile is not None:
                args.profile.mkdir(parents=True, exist_ok=True)
                profile_out = args.profile.resolve() / f"bot-{mode}-{size}.prof"
            config = BurstConfig(
                size=size,
                webhooks=mode == "webhooks",
                seconds_per_state=args.task_seconds,
                jitter=args.jitter,
                profile_out=profile_out,
            )
            _say(f"burst of {size}, bot with {mode} ...")
            result = await run_burst(config, log_dir=args.logs)
            bursts.append(result)
            for problem in result.problems:
                _say(f"  problem: {problem}")
            _say(
                f"  {result.finished}/{size} ended in {result.wall_seconds:.1f} s; "
                f"bot CPU {result.cpu_seconds:.2f} s, fakes CPU {result.load_cpu_seconds:.2f} s"
            )
            if profile_out is not None:
                _print_profile(profile_out)
        if args.pollers:
            _say(f"burst of {size}, fixed pollers every {', '.join(f'{i:g}' for i in args.pollers)} s ...")
            pollers += await run_pollers(
                size, tuple(args.pollers), seconds_per_state=args.task_seconds, jitter=args.jitter
            )
    quotas: list[QuotaResult] = []
    for processes in (1, 2):
        _say(f"quota reservations, {processes} process(es) ...")
        quotas.append(await run_quota(args.quota_members, 4, processes))
    settings = RunSettings(
        command=command,
        bursts=tuple(args.bursts),
        seconds_per_state=args.task_seconds,
        jitter=args.jitter,
        edit_coalesce=1.0,
        intervals=tuple(args.pollers),
    )
    return Results(machine, settings, bursts, pollers, quotas, time.monotonic() - began)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    command = shlex.join(["python", "-m", "benchmarks.run", *(sys.argv[1:] if argv is None else argv)])
    results = asyncio.run(run(args, command))
    print(tables(results))
    write = not args.no_write and (args.output is not None or not args.quick)
    if write:
        output: Path = args.output or DEFAULT_OUTPUT
        output.parent.mkdir(parents=True, exist_ok=True)
        # The several-processes section (`python -m benchmarks.scale`) is its own: kept as it is.
        scale = kept_scale_section(output)
        text = document(results, kept_notes(output))
        output.write_text(text + (f"\n{scale}\n" if scale else ""), encoding="utf-8")
        _say(f"written to {output}")
    problems = [problem for burst in results.bursts for problem in burst.problems]
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
