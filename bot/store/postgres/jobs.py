"""Job rows in PostgreSQL: the same repository as SQLite's, plus the leases that give each job one driver.

Several processes share the jobs table. Each unfinished job is driven by the one process holding its
lease (`owner`, `lease_expires_at` on the database server's clock):

- a process saves the jobs it creates with its own lease (`create`);
- it renews every lease it holds while it lives (`renew`, every third of the lease);
- `claim` takes jobs with no owner, or whose owner's lease ran out (the owner died, or lost the database
  for longer than a lease): `FOR UPDATE SKIP LOCKED` lets two processes claim at the same moment without
  ever taking the same job;
- every write of the driver is fenced by the lease (`... WHERE id = $1 AND owner = $me`): a process that
  lost a job (its lease ran out and another claimed it) finds nothing to update, gets LeaseLost and stops
  driving it, so a job never has two drivers writing its state, even for a moment;
- a graceful stop gives the leases back (`release`), so another process carries the jobs on at once.

The lines are shared too. A job waiting in line is no process's to drive: `claim` never hands one out.
Whichever process sees an end dispatches the next (`next_in_line`), under a transaction-scoped advisory lock
on the provider, so two processes never dispatch past its cap, and the job it takes is leased to it. A
member who cancels a task another process drives leaves a request on the job (`request_cancel`); the
driver finds it at its next renewal (`cancel_requested`).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import asyncpg

from bot.domain.errors import BadInput, LeaseLost, Refusal
from bot.domain.line import take_order
from bot.domain.ports import ImageRole
from bot.domain.tasks import ImageBytes, Job, Route, Suggestion, TaskKind
from bot.store.postgres.database import DB_NOW, PgDatabase, row_count
from bot.store.rows import (
    RUNNING,
    WAITING,
    column_values,
    job_from_row,
    route_values,
    suggestions_from_text,
    suggestions_to_text,
)

# When each member waiting for a provider last had a task leave its line.
_LAST_SERVED_SQL = (
    "SELECT user_id, max(dispatched_at) AS last FROM jobs WHERE provider = $1 AND dispatched_at IS NOT NULL "  # noqa: S608
    f"AND user_id IN (SELECT user_id FROM jobs WHERE provider = $1 AND {WAITING}) GROUP BY user_id"
)
# One dispatcher at a time per provider, whatever the process; a member's running tasks (counted at every
# provider) are decided under the member's own lock, taken without waiting (see `next_in_line`).
_LINE_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended(current_schema() || ':line:' || $1::text, 0))"
_LINE_MEMBER_LOCK = (
    "SELECT pg_try_advisory_xact_lock(hashtextextended(current_schema() || ':line-member:' || $1::bigint, 0))"
)
# A dispatch that found a member's lock held by another dispatch (of another provider) tries again up to
# this many times, after a wait between these bounds (seconds): the other one decides within milliseconds.
_CONTENDED_TRIES = 50
_CONTENDED_WAIT = (0.002, 0.02)
# Deliveries parked for another process and seen webhook ids live this long at most.
_WEBHOOK_ROWS_TTL = 86400.0


class PgJobRepository:
    """Intent-named reads and writes of jobs, each write fenced by this process's lease on the job."""

    def __init__(
        self,
        db: PgDatabase,
        *,
        owner: str,
        lease_seconds: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._db = db
        self._owner = owner
        self._lease = lease_seconds
        self._clock = clock

    @property
    def shared(self) -> bool:
        return True

    @property
    def owner(self) -> str:
        """The name this process's leases carry (host, pid and a random part)."""
        return self._owner

    async def create(self, job: Job, inputs: Sequence[ImageBytes] = ()) -> None:
        """Save a new job (leased to this process) and its input images in one transaction."""
        row = column_values(job)
        columns = ", ".join([*row, "owner", "lease_expires_at"])
        marks = ", ".join(f"${i}" for i in range(1, len(row) + 2))
        lease = f"{DB_NOW} + ${len(row) + 2}"
        async with self._db.transaction() as conn:
            await conn.execute(
                f"INSERT INTO jobs ({columns}) VALUES ({marks}, {lease})",  # noqa: S608 (our own columns)
                *row.values(),
                self._owner,
                self._lease,
            )
            await _insert_images(conn, job.id, "input", inputs)

    async def update(self, job: Job, **changes: Any) -> Job:
        """Save the given fields of a job this process drives; raise LeaseLost if it drives it no more."""
        updated, sql, params = self._update_statement(job, changes)
        async with self._db.connection() as conn:
            await self._fenced(conn, job.id, sql, params)
        return updated

    async def save_outputs(self, job: Job, images: Sequence[ImageBytes], **changes: Any) -> Job:
        """Save generated images and the job's new fields together (fenced as `update`)."""
        updated, sql, params = self._update_statement(job, changes)
        async with self._db.transaction() as conn:
            await self._fenced(conn, job.id, sql, params)
            await _insert_images(conn, job.id, "output", images)
        return updated

    async def finish(self, job: Job) -> Job:
        """Close a job whose end was reported: note when, drop its interaction token and its lease."""
        now = self._clock()
        await self._db.execute(
            "UPDATE jobs SET finished_at = $1, updated_at = $1, interaction_token = NULL, owner = NULL, "
            "lease_expires_at = NULL WHERE id = $2 AND (owner = $3 OR owner IS NULL) AND finished_at IS NULL",
            now,
            job.id,
            self._owner,
        )
        return replace(job, finished_at=now, updated_at=now, route=replace(job.route, interaction_token=None))

    async def save_route(self, job_id: str, route: Route) -> None:
        values = route_values(route)
        assignments = ", ".join(f"{column} = ${i}" for i, column in enumerate(values, start=1))
        n = len(values)
        await self._db.execute(
            f"UPDATE jobs SET {assignments}, updated_at = ${n + 1} WHERE id = ${n + 2}",  # noqa: S608
            *values.values(),
            self._clock(),
            job_id,
        )

    def _update_statement(self, job: Job, changes: dict[str, Any]) -> tuple[Job, str, tuple[Any, ...]]:
        if "route" in changes:
            raise ValueError("a job's route is saved with save_route")
        changes["updated_at"] = self._clock()
        updated = replace(job, **changes)
        stored = column_values(updated)
        columns = list(changes) + (["result_text"] if "suggestions" in changes else [])
        assignments = ", ".join(f"{name} = ${i}" for i, name in enumerate(columns, start=1))
        n = len(columns)
        sql = f"UPDATE jobs SET {assignments} WHERE id = ${n + 1} AND owner = ${n + 2}"  # noqa: S608
        return updated, sql, (*[stored[name] for name in columns], job.id, self._owner)

    @staticmethod
    async def _fenced(conn: asyncpg.Connection, job_id: str, sql: str, params: tuple[Any, ...]) -> None:
        status = await conn.execute(sql, *params)
        if status == "UPDATE 0":
            raise LeaseLost(f"job {job_id} is no longer leased to this process")

    async def get(self, job_id: str) -> Job | None:
        row = await self._db.fetchrow("SELECT * FROM jobs WHERE id = $1", job_id)
        return job_from_row(row) if row else None

    async def find_by_task(self, provider: str, task_id: str) -> Job | None:
        row = await self._db.fetchrow(
            "SELECT * FROM jobs WHERE provider = $1 AND provider_task_id = $2", provider, task_id
        )
        return job_from_row(row) if row else None

    async def unfinished(self) -> list[Job]:
        """Return every job whose end has not been reported yet, oldest first (whoever drives it)."""
        rows = await self._db.fetch("SELECT * FROM jobs WHERE finished_at IS NULL ORDER BY created_at, id")
        return [job_from_row(row) for row in rows]

    # --- the line ----------------------------------------------------------------------------------

    async def next_in_line(
        self, provider: str, *, max_running: int, max_running_per_member: int
    ) -> Job | None:
        """Take the next job from the provider's line, mark it dispatched and lease it to this process.

        One transaction under the provider's advisory lock (transaction-scoped): dispatches of one provider
        queue there, whichever process runs them, and each counts the provider's running jobs only once
        the one before it committed, so no two ever dispatch past MAX_INFLIGHT_PER_PROVIDER. A member's
        running tasks count at every provider, so dispatches of two providers may weigh the same member at
        once: the member's count is read under the member's own lock, taken without waiting (two dispatches
        waiting for each other's members could deadlock). When another dispatch holds it, this member's turn
        cannot be decided yet and no one behind them may go first: the step ends without a job and is
        tried again a few milliseconds later (after a random wait, so two dispatches that hold each other's
        members do not meet again), once the other one has committed.
        """
        for _ in range(_CONTENDED_TRIES):
            contended, job = await self._dispatch_one(provider, max_running, max_running_per_member)
            if not contended:
                return job
            await asyncio.sleep(random.uniform(*_CONTENDED_WAIT))  # noqa: S311 (a wait, not a secret)
        return None  # the next end, submit or renewal moves the line on

    async def _dispatch_one(
        self, provider: str, max_running: int, max_running_per_member: int
    ) -> tuple[bool, Job | None]:
        """Return (whether a member's lock was held by another dispatch, the job taken)."""
        async with self._db.transaction() as conn:
            await conn.execute(_LINE_LOCK, provider)
            at_provider = await conn.fetchval(
                f"SELECT count(*) FROM jobs WHERE provider = $1 AND {RUNNING}",  # noqa: S608
                provider,
            )
            if int(at_provider) >= max_running:
                return False, None
            waiting, served = await self._line_of(conn, provider)
            passed_over: set[int] = set()  # members at their cap
            weighed: set[int] = set()
            for job in take_order(waiting, served):
                member = job.user_id
                if member in passed_over:
                    continue
                if member not in weighed:
                    if not await conn.fetchval(_LINE_MEMBER_LOCK, member):
                        return True, None  # another dispatch is deciding on this member right now
                    weighed.add(member)
                    running = await conn.fetchval(
                        f"SELECT count(*) FROM jobs WHERE user_id = $1 AND {RUNNING}",  # noqa: S608
                        member,
                    )
                    if int(running) >= max_running_per_member:
                        passed_over.add(member)
                        continue
                now = self._clock()
                row = await conn.fetchrow(
                    f"UPDATE jobs SET dispatched_at = $1, updated_at = $1, owner = $2, "  # noqa: S608
                    f"lease_expires_at = {DB_NOW} + $3 WHERE id = $4 AND {WAITING} RETURNING *",
                    now,
                    self._owner,
                    self._lease,
                    job.id,
                )
                if row is not None:  # else it was cancelled a moment ago: the next one
                    return False, job_from_row(row)
            return False, None

    async def line(self, provider: str) -> list[Job]:
        """Return the jobs waiting for the provider, in the order they will be taken, with their `place`."""
        async with self._db.connection() as conn:
            waiting, served = await self._line_of(conn, provider)
        return [replace(job, place=place) for place, job in enumerate(take_order(waiting, served), start=1)]

    @staticmethod
    async def _line_of(conn: asyncpg.Connection, provider: str) -> tuple[list[Job], dict[int, float]]:
        """Return the provider's waiting jobs, and when each of their members was last served by it."""
        rows = await conn.fetch(
            f"SELECT * FROM jobs WHERE provider = $1 AND {WAITING} ORDER BY created_at, id",  # noqa: S608
            provider,
        )
        if not rows:
            return [], {}
        served = await conn.fetch(_LAST_SERVED_SQL, provider)
        return [job_from_row(row) for row in rows], {int(r["user_id"]): float(r["last"]) for r in served}

    async def cancel_waiting(self, job_id: str) -> Job | None:
        """End a job that still waits in line as CANCELLED, atomically; None when it is no longer waiting.

        The job is leased to this process with it (whichever process created it): this one shows its end
        and closes it.
        """
        row = await self._db.fetchrow(
            f"UPDATE jobs SET state = 'CANCELLED', updated_at = $1, owner = $2, "  # noqa: S608
            f"lease_expires_at = {DB_NOW} + $3 WHERE id = $4 AND {WAITING} RETURNING *",
            self._clock(),
            self._owner,
            self._lease,
            job_id,
        )
        return job_from_row(row) if row is not None else None

    async def request_cancel(self, job_id: str) -> bool:
        """Ask the process that drives a job to cancel it; False when the job no longer runs."""
        status = await self._db.execute(
            f"UPDATE jobs SET cancel_requested_at = $1 WHERE id = $2 AND {RUNNING}",  # noqa: S608
            self._clock(),
            job_id,
        )
        return row_count(status) == 1

    async def cancel_requested(self) -> set[str]:
        """Return the ids of the unfinished jobs this process holds that a member asked to cancel."""
        rows = await self._db.fetch(
            "SELECT id FROM jobs WHERE owner = $1 AND finished_at IS NULL AND cancel_requested_at IS NOT NULL",
            self._owner,
        )
        return {str(row["id"]) for row in rows}

    async def tasks_of(self, user_id: int, guild_id: int | None = None) -> tuple[int, int]:
        """Return how many of the member's tasks run at a provider, and how many wait in line."""
        row = await self._db.fetchrow(
            f"SELECT count(*) FILTER (WHERE {RUNNING}) AS running, "  # noqa: S608
            f"count(*) FILTER (WHERE {WAITING}) AS waiting FROM jobs "
            "WHERE user_id = $1 AND ($2::bigint IS NULL OR guild_id = $2) AND finished_at IS NULL",
            user_id,
            guild_id,
        )
        return (int(row["running"]), int(row["waiting"])) if row else (0, 0)

    async def forget_member(self, guild_id: int, user_id: int) -> tuple[int, int, int]:
        """Delete the member's tasks in this server, their images, and the cached prompts of images they sent.

        Refuses (FORGET_WHILE_RUNNING) while any of those tasks runs or waits: its drive still needs it.
        Returns (tasks, images, prompts) deleted. The member's jobs are locked first (FOR UPDATE), so a task
        ending in another process at the same moment is either counted as unfinished or deleted ended.
        """
        async with self._db.transaction() as conn:
            rows = await conn.fetch(
                "SELECT id, finished_at FROM jobs WHERE guild_id = $1 AND user_id = $2 FOR UPDATE",
                guild_id,
                user_id,
            )
            unfinished = sum(1 for row in rows if row["finished_at"] is None)
            if unfinished:
                raise BadInput(Refusal.FORGET_WHILE_RUNNING, count=unfinished)
            ids = [str(row["id"]) for row in rows]
            images = await conn.execute("DELETE FROM job_images WHERE job_id = ANY($1::text[])", ids)
            prompts = await conn.execute(
                "DELETE FROM describe_cache WHERE image_hash IN (SELECT input_hash FROM jobs "
                "WHERE id = ANY($1::text[]) AND kind = $2 AND input_hash IS NOT NULL)",
                ids,
                TaskKind.DESCRIBE.value,
            )
            tasks = await conn.execute("DELETE FROM jobs WHERE id = ANY($1::text[])", ids)
            return row_count(tasks), row_count(images), row_count(prompts)

    # --- leases ------------------------------------------------------------------------------------

    async def claim(self, limit: int) -> list[Job]:
        """Lease to this process up to `limit` unfinished jobs that no live process drives; oldest first.

        Claimable: no owner (never leased, or given back at a graceful stop) or a lease that ran out
        (its process died, or lost the database for longer than a lease). Rows another process is
        claiming at this moment are skipped, not waited for (SKIP LOCKED). A job waiting in line is not
        handed out: it is dispatched (`next_in_line`) by whichever process sees an end, and leased then.
        """
        rows = await self._db.fetch(
            f"UPDATE jobs SET owner = $1, lease_expires_at = {DB_NOW} + $2 WHERE id IN ("  # noqa: S608
            f"SELECT id FROM jobs WHERE finished_at IS NULL AND NOT ({WAITING}) "
            f"AND (owner IS NULL OR lease_expires_at < {DB_NOW}) "
            "ORDER BY created_at, id LIMIT $3 FOR UPDATE SKIP LOCKED) RETURNING *",
            self._owner,
            self._lease,
            limit,
        )
        jobs = [job_from_row(row) for row in rows]
        return sorted(jobs, key=lambda job: (job.created_at, job.id))

    async def renew(self) -> set[str]:
        """Extend every lease this process holds; return the ids of the unfinished jobs it holds."""
        rows = await self._db.fetch(
            f"UPDATE jobs SET lease_expires_at = {DB_NOW} + $2 "  # noqa: S608
            "WHERE owner = $1 AND finished_at IS NULL RETURNING id",
            self._owner,
            self._lease,
        )
        return {str(row["id"]) for row in rows}

    async def next_expiry(self) -> float | None:
        """Return in how many seconds the earliest lease of another process runs out (None: none).

        Leases on jobs waiting in line do not count: nobody claims those (they leave the line by dispatch).
        """
        value = await self._db.fetchval(
            f"SELECT min(lease_expires_at) - {DB_NOW} FROM jobs "  # noqa: S608
            f"WHERE finished_at IS NULL AND owner IS NOT NULL AND owner <> $1 AND NOT ({WAITING})",
            self._owner,
        )
        return None if value is None else float(value)

    async def release(self) -> None:
        """Give back every lease this process holds (a graceful stop): others may claim the jobs at once."""
        await self._db.execute(
            "UPDATE jobs SET owner = NULL, lease_expires_at = NULL WHERE owner = $1 AND finished_at IS NULL",
            self._owner,
        )

    # --- images, cache, upkeep ---------------------------------------------------------------------

    async def images(self, job_id: str, role: ImageRole) -> list[ImageBytes]:
        rows = await self._db.fetch(
            "SELECT mime, data FROM job_images WHERE job_id = $1 AND role = $2 ORDER BY position",
            job_id,
            role,
        )
        return [ImageBytes(data=bytes(row["data"]), mime=str(row["mime"])) for row in rows]

    async def cached_suggestions(
        self, image_hash: str, provider: str, variant: str, max_age_days: int
    ) -> tuple[Suggestion, ...] | None:
        """Return what this provider answered for the same image and request within the cache's lifetime."""
        if max_age_days <= 0:
            return None
        value = await self._db.fetchval(
            "SELECT suggestions FROM describe_cache WHERE image_hash = $1 AND provider = $2 AND variant = $3 "
            "AND created_at > $4",
            image_hash,
            provider,
            variant,
            self._clock() - max_age_days * 86400,
        )
        return None if value is None else suggestions_from_text(str(value))

    async def cache_suggestions(
        self, image_hash: str, provider: str, variant: str, suggestions: tuple[Suggestion, ...]
    ) -> None:
        await self._db.execute(
            "INSERT INTO describe_cache (image_hash, provider, variant, suggestions, created_at) "
            "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (image_hash, provider, variant) DO UPDATE SET "
            "suggestions = excluded.suggestions, created_at = excluded.created_at",
            image_hash,
            provider,
            variant,
            suggestions_to_text(suggestions),
            self._clock(),
        )

    async def prune(self, retention_days: int) -> int:
        """Delete finished jobs (and their images) older than the retention; return how many went.

        Webhook rows shared by the processes (parked deliveries, seen ids) older than a day go too.
        """
        now = self._clock()
        cutoff = now - retention_days * 86400
        async with self._db.transaction() as conn:
            status = await conn.execute(
                "DELETE FROM jobs WHERE finished_at IS NOT NULL AND finished_at < $1", cutoff
            )
            await conn.execute("DELETE FROM describe_cache WHERE created_at < $1", cutoff)
            await conn.execute("DELETE FROM webhook_inbox WHERE received_at < $1", now - _WEBHOOK_ROWS_TTL)
            await conn.execute("DELETE FROM webhook_seen WHERE seen_at < $1", now - _WEBHOOK_ROWS_TTL)
        return row_count(status)


async def _insert_images(
    conn: asyncpg.Connection, job_id: str, role: ImageRole, images: Sequence[ImageBytes]
) -> None:
    if not images:
        return
    await conn.executemany(
        "INSERT INTO job_images (job_id, role, position, mime, data) VALUES ($1, $2, $3, $4, $5)",
        [(job_id, role, position, image.mime, image.data) for position, image in enumerate(images)],
    )
