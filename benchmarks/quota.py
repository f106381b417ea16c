"""Quota reservations per second under contention: many members, one SQLite file, one or two processes.

Each process opens the file as the bot does (`Database.open`: WAL, busy timeout) and fires every
reservation at once; `SqliteQuotaLedger.reserve` is one write transaction each. A second part has both
processes race for one member's last units: exactly the limit must be granted, never more.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from bot.domain.errors import QuotaExceeded
from bot.domain.quota import LedgerSettings, Member
from bot.domain.tasks import TaskKind
from bot.store.sqlite.database import Database
from bot.store.sqlite.quotas import SqliteQuotaLedger

ROOT = Path(__file__).resolve().parent.parent
SHARED_MEMBER = 1
SHARED_LIMIT = 25


@dataclass(frozen=True, slots=True)
class QuotaResult:
    processes: int
    reservations: int
    seconds: float
    errors: int
    shared_granted: int  # of the one member with a limit of SHARED_LIMIT, raced by every process

    @property
    def per_second(self) -> float:
        return self.reservations / self.seconds if self.seconds > 0 else 0.0


class Ledger(Protocol):
    async def reserve(self, member: Member, kind: TaskKind, provider: str) -> object: ...


def _store(db: Database, limit: int) -> SqliteQuotaLedger:
    return SqliteQuotaLedger(db, **ledger_settings(limit))


def ledger_settings(limit: int) -> LedgerSettings:
    """A ledger's settings in these benchmarks: `limit` a day for everyone, and no in-flight cap in the way."""
    return LedgerSettings(
        defaults={TaskKind.DESCRIBE: limit, TaskKind.IMAGINE: limit},
        max_inflight_per_provider=1_000_000,
        reservation_ttl=3600.0,
    )


async def race_then_burst(
    store: Ledger,
    shared: Ledger,
    members: int,
    per_member: int,
    first_user: int,
    start_at: float,
    shared_attempts: int,
) -> dict[str, float]:
    """One process's share: at `start_at`, race every process for the shared member's last units, then fire
    `per_member` reservations for each of its own members at once, timed."""
    everyone = [Member(guild_id=1, user_id=first_user + index) for index in range(members)]
    await asyncio.sleep(max(0.0, start_at - time.time()))
    raced = await asyncio.gather(
        *(
            shared.reserve(Member(guild_id=1, user_id=SHARED_MEMBER), TaskKind.DESCRIBE, "freepik")
            for _ in range(shared_attempts)
        ),
        return_exceptions=True,
    )
    started = time.time()
    outcomes = await asyncio.gather(
        *(store.reserve(member, TaskKind.DESCRIBE, "freepik") for member in everyone * per_member),
        return_exceptions=True,
    )
    ended = time.time()
    errors = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
    unexpected = [o for o in raced if isinstance(o, BaseException) and not isinstance(o, QuotaExceeded)]
    return {
        "reserved": len(outcomes) - len(errors),
        "errors": len(errors) + len(unexpected),
        "started": started,
        "ended": ended,
        "shared_granted": sum(1 for outcome in raced if not isinstance(outcome, BaseException)),
    }


async def _reserve_all(
    path: Path, members: int, per_member: int, first_user: int, start_at: float, shared_attempts: int
) -> dict[str, float]:
    db = await Database.open(path)
    try:
        return await race_then_burst(
            _store(db, -1),
            _store(db, SHARED_LIMIT),
            members,
            per_member,
            first_user,
            start_at,
            shared_attempts,
        )
    finally:
        await db.close()


async def run_workers(
    command: Sequence[str], members: int, per_member: int, processes: int, start_at: float
) -> list[dict[str, Any]]:
    """Run `python -m COMMAND` once per process, each with its share of the members; return their reports."""
    share = members // processes
    workers = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            *command,
            f"--members={share}",
            f"--per-member={per_member}",
            f"--first-user={1000 + index * share}",
            f"--start-at={start_at}",
            f"--shared-attempts={2 * SHARED_LIMIT}",
            stdout=asyncio.subprocess.PIPE,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        for index in range(processes)
    ]
    outputs = [await asyncio.wait_for(worker.communicate(), 300) for worker in workers]
    return [json.loads(out.decode().strip().splitlines()[-1]) for out, _ in outputs]


def combined(reports: Sequence[dict[str, Any]], processes: int) -> QuotaResult:
    """The processes' reports as one result: the rate from the first start to the last end."""
    return QuotaResult(
        processes=processes,
        reservations=int(sum(report["reserved"] for report in reports)),
        seconds=max(report["ended"] for report in reports) - min(report["started"] for report in reports),
        errors=int(sum(report["errors"] for report in reports)),
        shared_granted=int(sum(report["shared_granted"] for report in reports)),
    )


async def run_quota(members: int, per_member: int, processes: int) -> QuotaResult:
    """Reserve members x per_member units in total, split over `processes` processes on one file."""
    with tempfile.TemporaryDirectory(prefix="bench-quota-") as folder:
        path = Path(folder) / "quota.sqlite3"
        await (await Database.open(path)).close()  # migrate once, before the race
        start_at = time.time() + 1.0 + 0.5 * processes
        if processes == 1:
            reports = [await _reserve_all(path, members, per_member, 1000, start_at, 2 * SHARED_LIMIT)]
        else:
            reports = await run_workers(
                ["benchmarks.quota", str(path)], members, per_member, processes, start_at
            )
    return combined(reports, processes)


def worker_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options `run_workers` gives each worker process."""
    parser.add_argument("--members", type=int, required=True)
    parser.add_argument("--per-member", type=int, required=True)
    parser.add_argument("--first-user", type=int, required=True)
    parser.add_argument("--start-at", type=float, required=True)
    parser.add_argument("--shared-attempts", type=int, required=True)
    return parser


def main() -> None:
    parser = argparse.ArgumentParser(description="one process of the quota contention benchmark")
    parser.add_argument("path", type=Path)
    args = worker_arguments(parser).parse_args()
    report = asyncio.run(
        _reserve_all(
            args.path, args.members, args.per_member, args.first_user, args.start_at, args.shared_attempts
        )
    )
    print(json.dumps(report))


if __name__ == "__main__":
    main()
