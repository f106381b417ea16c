"""Several processes on one PostgreSQL: `python -m benchmarks.scale [--members 500] [--leases 5,30] [--no-write]`.

Two measurements, written to their own section of docs/benchmarks.md (between the scale markers; the rest
of the file, which `python -m benchmarks.run` writes, is left as it is):

1. Quota reservations per second with 1, 2 and 4 processes on PostgreSQL, beside 1 and 2 processes on one
   SQLite file in the same run (`benchmarks.quota`, unchanged). Each process opens the store as the bot does
   and fires its share of members x 4 reservations at once, after all of them race for one member's last
   25 units (exactly 25 must be granted, whatever the number of processes).
2. Takeover: two real bot processes (`python -m bot`, shards 0 and 1 of 2) on PostgreSQL and a fake Discord
   and Freepik; tasks in flight on the first; `kill -9` of it; the time until the second has claimed every
   task (its "taking over job" lines) and until every end is on its original message; creates per task and
   the quota rows (each settled once).

Needs a PostgreSQL server: BENCH_DATABASE_URL, else TEST_DATABASE_URL, else postgres@127.0.0.1:5432/test
(each measurement in a fresh schema, dropped after).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.fakes import BenchDiscord, TimedFreepik, Workload
from benchmarks.machine import describe_machine
from benchmarks.quota import (
    SHARED_LIMIT,
    QuotaResult,
    combined,
    ledger_settings,
    race_then_burst,
    run_quota,
    run_workers,
    worker_arguments,
)
from bot.store.postgres.database import PgDatabase
from bot.store.postgres.quotas import PgQuotaLedger
from tests.conftest import png_bytes
from tests.fakes.providers import DEFAULT_FREEPIK_KEY
from tests.postgres import fresh_schema, server_url
from tests.processes import BotProcess, process_env

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = ROOT / "docs" / "benchmarks.md"
SECTION_START = "<!-- scale:start -->"
SECTION_END = "<!-- scale:end -->"
GUILD_ON_SHARD_0 = 222222222222222222 & ~(1 << 22)
DONE = "Image to prompt · Done"


def database_url() -> str:
    return os.environ.get("BENCH_DATABASE_URL") or server_url()


# --- reservations per second ---------------------------------------------------------------------------


def _ledger(db: PgDatabase, limit: int) -> PgQuotaLedger:
    return PgQuotaLedger(db, **ledger_settings(limit))


async def _reserve_all(
    url: str, members: int, per_member: int, first_user: int, start_at: float, shared_attempts: int
) -> dict[str, float]:
    """One process's share, as benchmarks.quota does it on SQLite: the race first, then the burst."""
    db = await PgDatabase.open(url, migrate=False)
    try:
        return await race_then_burst(
            _ledger(db, -1),
            _ledger(db, SHARED_LIMIT),
            members,
            per_member,
            first_user,
            start_at,
            shared_attempts,
        )
    finally:
        await db.close()


async def run_pg_quota(members: int, per_member: int, processes: int) -> QuotaResult:
    """Reserve members x per_member units in total, split over `processes` processes on one database."""
    async with fresh_schema(database_url()) as url:
        await (await PgDatabase.open(url)).close()  # migrate once, before the race
        start_at = time.time() + 1.0 + 0.5 * processes
        reports = await run_workers(
            ["benchmarks.scale", "reserve", url], members, per_member, processes, start_at
        )
    return combined(reports, processes)


# --- takeover after kill -9 -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Takeover:
    lease: float
    tasks: int
    first_claim: float  # seconds from the kill to the first "taking over job"
    last_claim: float  # ... to the last one
    all_done: float  # ... to the last end shown on its message
    creates: int
    committed: int
    problems: tuple[str, ...] = ()


async def run_takeover(lease: float, tasks: int, seconds_per_state: float = 1.0) -> Takeover:
    """Kill -9 the process driving `tasks` tasks; time the other's takeover and the tasks' ends."""
    discord = BenchDiscord(
        guild_ids=(GUILD_ON_SHARD_0, GUILD_ON_SHARD_0 | (1 << 22)), validate_requests=False
    )
    freepik = TimedFreepik(workload=Workload.steady(seconds_per_state, jitter=0))
    await discord.start()
    await freepik.start()
    processes: list[BotProcess] = []
    try:
        async with fresh_schema(database_url()) as url, _workdir() as folder:
            for shard in (0, 1):
                workdir = folder / f"bot-{shard}"
                workdir.mkdir()
                env = process_env(
                    DISCORD_TOKEN="fake-token",
                    FAKE_DISCORD_URL=discord.base_url,
                    DATABASE_URL=url,
                    DATABASE_PATH=str(workdir / "bot.sqlite3"),
                    FREEPIK_API_KEY=DEFAULT_FREEPIK_KEY,
                    FREEPIK_BASE_URL=freepik.base_url,
                    NOVITA_API_KEY="",
                    MAX_INFLIGHT_PER_USER="1000",
                    QUOTA_DESCRIBE_PER_DAY="100000",
                    EDIT_COALESCE_SECONDS="0",
                    JOB_LEASE_SECONDS=str(lease),
                    SHARD_COUNT="2",
                    SHARD_IDS=str(shard),
                    LOG_LEVEL="INFO",
                )
                processes.append(await BotProcess.start("run", env=env, cwd=workdir))
            await discord.wait_shards([0, 1], timeout=60)
            first, second = processes
            tokens = []
            for index in range(tasks):
                attachment = discord.add_attachment(
                    png_bytes(colour=(index * 7 % 256, 255 - index, 90)), "photo.png", "image/png"
                )
                payload = discord.slash(
                    "describe",
                    None,
                    attachments={"image": attachment},
                    guild_id=GUILD_ON_SHARD_0,
                    channel_id=discord.guild_channel_id(GUILD_ON_SHARD_0),
                )
                await discord.send_interaction(payload)
                tokens.append(str(payload["token"]))
            for token in tokens:  # every task created and shown, driven by the first process
                await discord.wait_for_call(
                    lambda c, t=token: c.method == "PATCH" and t in c.path, timeout=60
                )

            first.process.send_signal(signal.SIGKILL)
            killed = time.monotonic()
            await first.process.wait()
            claims: list[float] = []  # seconds from the kill to each "taking over job" line
            while len(claims) < tasks:
                lines = await second.wait_for_lines(
                    r"taking over job", count=len(claims) + 1, timeout=4 * lease + 60
                )
                claims += [time.monotonic() - killed] * (len(lines) - len(claims))
            async with asyncio.timeout(60):
                while not all(_title(discord, token) == DONE for token in tokens):
                    await discord.wait_for_call(lambda c: True, since=len(discord.calls), timeout=30)
            done = time.monotonic() - killed
            states = await _usage_states(url)
    finally:
        for process in processes:
            await process.kill()
        await freepik.close()
        await discord.close()
    problems = []
    if freepik.count("POST") != tasks:
        problems.append(f"{freepik.count('POST')} creates for {tasks} tasks")
    if states != ["committed"] * tasks:
        problems.append(f"usage rows {states}")
    return Takeover(
        lease=lease,
        tasks=tasks,
        first_claim=min(claims),
        last_claim=max(claims),
        all_done=done,
        creates=freepik.count("POST"),
        committed=states.count("committed"),
        problems=tuple(problems),
    )


def _title(discord: BenchDiscord, token: str) -> str:
    message = discord.original_message(token)
    if not message or not message.get("embeds"):
        return ""
    return str(message["embeds"][0]["title"])


async def _usage_states(url: str) -> list[str]:
    db = await PgDatabase.open(url, migrate=False)
    try:
        return [str(row["state"]) for row in await db.fetch("SELECT state FROM usage ORDER BY id")]
    finally:
        await db.close()


class _workdir:
    async def __aenter__(self) -> Path:
        self._folder = tempfile.TemporaryDirectory(prefix="bench-scale-")
        return Path(self._folder.name)

    async def __aexit__(self, *exc: object) -> None:
        self._folder.cleanup()


# --- the section --------------------------------------------------------------------------------------


def section(
    sqlite: list[QuotaResult], postgres: list[QuotaResult], takeovers: list[Takeover], command: str
) -> str:
    machine = describe_machine()
    rows = [
        "| store | processes | reservations | seconds | reservations/s | errors | one member raced by all, limit 25: granted |",
        "|---|---|---|---|---|---|---|",
    ]
    for store, results in (("SQLite (one file)", sqlite), ("PostgreSQL 15", postgres)):
        rows += [
            f"| {store} | {r.processes} | {r.reservations} | {r.seconds:.2f} | {r.per_second:.0f} | {r.errors} | "
            f"{r.shared_granted} of {SHARED_LIMIT} |"
            for r in results
        ]
    takeover_rows = [
        "| JOB_LEASE_SECONDS | tasks in flight | kill -9 to first takeover | to last takeover | to every end shown | creates per task | quota rows committed |",
        "|---|---|---|---|---|---|---|",
    ]
    takeover_rows += [
        f"| {t.lease:g} | {t.tasks} | {t.first_claim:.2f} s | {t.last_claim:.2f} s | {t.all_done:.2f} s | "
        f"{t.creates / t.tasks:.2f} | {t.committed} of {t.tasks} |"
        for t in takeovers
    ]
    return "\n".join(
        [
            SECTION_START,
            "## Several processes on PostgreSQL",
            "",
            "Generated by `python -m benchmarks.scale` (see the module's docstring); kept when `python -m "
            "benchmarks.run` rewrites the rest of this file.",
            "",
            f"- Date: {machine.date}",
            f"- Machine: {machine.line()}; PostgreSQL at 127.0.0.1 on the same machine",
            f"- Command: `{command}`",
            "",
            "### Quota reservations per second: PostgreSQL beside SQLite, in one run",
            "",
            *rows,
            "",
            "Every reservation of one provider passes one lock, in PostgreSQL (the provider's advisory lock, held "
            "for its count and its insert) as in SQLite (the file's write lock): more processes do not make "
            "reservations of one provider faster, they share the same rate; what they add is shards and "
            "survival. Each figure is one run; they move by a few hundred per second from run to run here.",
            "",
            "### Takeover after kill -9",
            "",
            "Two bot processes (shards 0 and 1 of 2); every task of the run on the first, which is killed once they "
            "are all created; the second claims them as their leases run out. A process renews its leases every "
            "third of a lease and the others look just after the next one runs out, so a takeover comes between "
            "two thirds of a lease and one lease after the kill; the ends follow at the takeover's first poll.",
            "",
            *takeover_rows,
            SECTION_END,
        ]
    )


def kept_section(path: Path) -> str:
    """Return this benchmark's section of an existing document (with its markers), or ''.

    `python -m benchmarks.run` calls this before it rewrites the file, and puts the section back after.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return ""
    start, end = text.find(SECTION_START), text.find(SECTION_END)
    if start < 0 or end < start:
        return ""
    return text[start : end + len(SECTION_END)]


def write_section(path: Path, new: str) -> None:
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    old = kept_section(path)
    text = text.replace(old, new) if old else text.rstrip("\n") + "\n\n" + new + "\n"
    path.write_text(text, encoding="utf-8")


# --- entry ----------------------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> tuple[list[QuotaResult], list[QuotaResult], list[Takeover]]:
    sqlite: list[QuotaResult] = []
    postgres: list[QuotaResult] = []
    for processes in (1, 2):
        print(f"quota reservations, SQLite, {processes} process(es) ...", file=sys.stderr)
        sqlite.append(await run_quota(args.members, 4, processes))
    for processes in (1, 2, 4):
        print(f"quota reservations, PostgreSQL, {processes} process(es) ...", file=sys.stderr)
        postgres.append(await run_pg_quota(args.members, 4, processes))
    takeovers = []
    for lease in args.leases:
        print(f"takeover after kill -9, lease {lease:g} s, {args.tasks} tasks ...", file=sys.stderr)
        result = await run_takeover(lease, args.tasks)
        for problem in result.problems:
            print(f"  problem: {problem}", file=sys.stderr)
        takeovers.append(result)
    return sqlite, postgres, takeovers


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "reserve":
        return _worker(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=500, help="members reserving at once (default 500)")
    parser.add_argument(
        "--leases",
        type=lambda value: tuple(float(part) for part in value.split(",")),
        default=(5.0, 30.0),
        help="JOB_LEASE_SECONDS values to time the takeover with (default 5,30; 30 is the default setting)",
    )
    parser.add_argument("--tasks", type=int, default=20, help="tasks in flight at the kill (default 20)")
    parser.add_argument("--no-write", action="store_true", help="print the section only")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    sqlite, postgres, takeovers = asyncio.run(run(args))
    command = " ".join(["python", "-m", "benchmarks.scale", *argv])
    text = section(sqlite, postgres, takeovers, command)
    print(text)
    if not args.no_write:
        write_section(args.output, text)
        print(f"written to {args.output}", file=sys.stderr)
    bad = [t for t in takeovers if t.problems] + [
        r for r in sqlite + postgres if r.shared_granted != SHARED_LIMIT
    ]
    return 1 if bad else 0


def _worker(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="one process of the PostgreSQL quota benchmark")
    parser.add_argument("url")
    args = worker_arguments(parser).parse_args(argv)
    report = asyncio.run(
        _reserve_all(
            args.url, args.members, args.per_member, args.first_user, args.start_at, args.shared_attempts
        )
    )
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
