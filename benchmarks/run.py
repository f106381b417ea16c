"""What the bot costs: `python -m benchmarks.run [--bursts 1,50,200,500] [--quick] [--profile DIR]`.

Starts a fake Discord and a fake Freepik (keeping Freepik's documented rate limits) on 127.0.0.1, runs the
real bot as its own process, fires bursts of simultaneous /describe commands from distinct members, and
does the same with a bare discord.py bot (the floor) in the same run. Two workloads: today's steady task
times, and long-tailed ones. It prints the targets with a verdict each and markdown tables; a full run also
writes them to docs/benchmarks.md with the date and the machine. It stops by itself (every wait is
bounded) and takes about five minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import logging
import pstats
import shlex
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.burst import BurstConfig, BurstResult, Mode, run_burst
from benchmarks.fakes import Workload
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
        help="simultaneous /describe commands per burst, steady workload (default 1,50,200,500)",
    )
    parser.add_argument(
        "--task-seconds",
        type=float,
        default=3.0,
        help="steady workload: how long each provider state (CREATED, IN_PROGRESS) lasts (default 3)",
    )
    parser.add_argument(
        "--jitter",
        type=float,
        default=0.25,
        help="steady workload: each state's length varies by up to this fraction, seeded (default 0.25)",
    )
    parser.add_argument(
        "--tail",
        type=lambda value: _numbers(value, float),
        default=(8.0, 40.0, 60.0),
        metavar="MEDIAN,P95,CUT",
        help="long-tail workload: log-normal task times with this median and p95, drawn again past CUT "
        "(default 8,40,60)",
    )
    parser.add_argument(
        "--tail-burst",
        type=int,
        default=100,
        help="long-tail workload: the measured burst (default 100; 0: none)",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=100,
        help="tasks each polling bot runs before its measured bursts, to learn from (default 100; 0: none)",
    )
    parser.add_argument(
        "--modes",
        default="polling,webhooks,floor",
        help="which bots to run: polling, webhooks, floor (default all three)",
    )
    parser.add_argument(
        "--no-limits", action="store_true", help="the fake Freepik never says 429 (no rate limits)"
    )
    parser.add_argument(
        "--quota-members", type=int, default=500, help="members reserving at once (default 500)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: bursts 1,20, 1.5 s states, a long tail of median 2 s and p95 10 s (20 tasks), "
        "warm-ups of 20, 100 quota members; writes no file unless --output",
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
        args.tail = (2.0, 10.0, 15.0)
        args.tail_burst = 20
        args.warmup = 20
        args.quota_members = 100
    modes = {mode.strip() for mode in args.modes.split(",") if mode.strip()}
    if not modes or not modes <= {"polling", "webhooks", "floor"}:
        parser.error("--modes takes polling, webhooks, floor, or several")
    args.modes = tuple(mode for mode in ("polling", "webhooks", "floor") if mode in modes)
    if not 0 <= args.jitter < 1:
        parser.error("--jitter must be at least 0 and below 1")
    if args.task_seconds <= 0:
        parser.error("--task-seconds must be positive")
    if len(args.tail) != 3 or not args.tail[0] < args.tail[1] < args.tail[2]:
        parser.error("--tail takes MEDIAN,P95,CUT in increasing order")
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


def runtime() -> str:
    """Say which JSON library discord.py uses in the bot process (orjson when installed: discord.py[speed])."""
    json = "orjson" if importlib.util.find_spec("orjson") else "the json module"
    return f"asyncio's own event loop, {json}"


class Series:
    """Bursts that share one bot database, as one bot restarted between them would; members never repeat."""

    def __init__(self, args: argparse.Namespace, mode: Mode, workload: Workload, folder: Path) -> None:
        self.args = args
        self.mode = mode
        self.workload = workload
        self.database = folder / f"bot-{mode}-{workload.name}.sqlite3" if mode != "floor" else None
        self.members = 0

    async def burst(self, size: int, *, warmup: bool = False) -> BurstResult:
        args = self.args
        profile_out = None
        if args.profile is not None and self.mode != "floor" and not warmup:
            args.profile.mkdir(parents=True, exist_ok=True)
            profile_out = args.profile.resolve() / f"bot-{self.mode}-{self.workload.name}-{size}.prof"
        config = BurstConfig(
            size=size,
            mode=self.mode,
            workload=self.workload,
            profile_out=profile_out,
            database=self.database,
            limits=not args.no_limits,
            warmup=warmup,
            first_member=self.members,
        )
        self.members += size
        what = "warm-up of" if warmup else "burst of"
        _say(f"{what} {size}, {self.workload.name} workload, {self.mode} bot ...")
        result = await run_burst(config, log_dir=args.logs)
        for problem in result.problems:
            _say(f"  problem: {problem}")
        _say(
            f"  {result.finished}/{size} ended in {result.wall_seconds:.1f} s; "
            f"bot CPU {result.cpu_seconds:.2f} s, fakes CPU {result.load_cpu_seconds:.2f} s"
        )
        if profile_out is not None:
            _print_profile(profile_out)
        return result


async def run(args: argparse.Namespace, command: str) -> Results:
    began = time.monotonic()
    machine = describe_machine()
    _say(f"benchmark on {machine.line()}; the bot runs on {runtime()}")
    steady = Workload.steady(args.task_seconds, args.jitter)
    tail = Workload.long_tail(*args.tail)
    bursts: list[BurstResult] = []
    with tempfile.TemporaryDirectory(prefix="bench-series-") as folder:
        series = {mode: Series(args, mode, steady, Path(folder)) for mode in args.modes}
        if "polling" in series and args.warmup:
            await series["polling"].burst(args.warmup, warmup=True)
        # Each size in turn for every bot, so that the machine's moods fall on all of them alike.
        for size in args.bursts:
            for mode in args.modes:
                bursts.append(await series[mode].burst(size))
        if "polling" in args.modes and args.tail_burst:
            long_tail = Series(args, "polling", tail, Path(folder))
            if args.warmup:
                await long_tail.burst(args.warmup, warmup=True)
            bursts.append(await long_tail.burst(args.tail_burst))
    quotas: list[QuotaResult] = []
    for processes in (1, 2):
        _say(f"quota reservations, {processes} process(es) ...")
        quotas.append(await run_quota(args.quota_members, 4, processes))
    settings = RunSettings(
        command=command,
        bursts=tuple(args.bursts),
        workloads=(f"steady, {steady.line()}", f"long tail, {tail.line()}"),
        edit_coalesce=1.0,
        limits=not args.no_limits,
        runtime=runtime(),
        tail_burst=args.tail_burst,
    )
    return Results(machine, settings, bursts, quotas, time.monotonic() - began)


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
