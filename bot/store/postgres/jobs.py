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
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import fields, replace
from typing import Any

import asyncpg

from bot.domain.errors import LeaseLost
from bot.domain.ports import ImageRole
from bot.domain.tasks import Fault, ImageBytes, Job, JobState, Route, TaskKind
from bot.store.postgres.database import DB_NOW, PgDatabase
from bot.store.sqlite.jobs import notice_from_text, notice_to_text

# The job's own columns; its route is kept in the columns below (the same names as in SQLite).
_JOB_COLUMNS = tuple(f.name for f in fields(Job) if f.name != "route")
_ROUTE_COLUMNS = {
    "channel_id": "channel_id",
    "message_id": "message_id",
    "application_id": "application_id",
    "interaction_token": "interaction_token",
    "token_created_at": "token_created_at",
    "via": "report_via",
}
# Deliveries parked for another process and seen webhook ids live this long at most.
_WEBHOOK_ROWS_TTL = 86400.0


def _job_from_row(row: asyncpg.Record) -> Job:
    values = {name: row[name] for name in _JOB_COLUMNS}
    values["kind"] = TaskKind(values["kind"])
    values["state"] = JobState(values["state"])
    values["reported_state"] = JobState(values["reported_state"]) if values["reported_state"] else None
    values["fault"] = Fault(values["fault"]) if values["fault"] else None
    values["notice"] = notice_from_text(values["notice"])
    route = Route(**{field: row[column] for field, column in _ROUTE_COLUMNS.items()})
    return Job(route=route, **values)


def _column_values(job: Job) -> dict[str, Any]:
    values = {name: getattr(job, name) for name in _JOB_COLUMNS}
    values["notice"] = notice_to_text(job.notice)
    values |= {column: getattr(job.route, field) for field, column in _ROUTE_COLUMNS.items()}
    return values


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
        row = _column_values(job)
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
        values = {column: getattr(route, field) for field, column in _ROUTE_COLUMNS.items()}
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
        stored = _column_values(updated)
        assignments = ", ".join(f"{name} = ${i}" for i, name in enumerate(changes, start=1))
        n = len(changes)
        sql = f"UPDATE jobs SET {assignments} WHERE id = ${n + 1} AND owner = ${n + 2}"  # noqa: S608
        return updated, sql, (*[stored[name] for name in changes], job.id, self._owner)

    @staticmethod
    async def _fenced(conn: asyncpg.Connection, job_id: str, sql: str, params: tuple[Any, ...]) -> None:
        status = await conn.execute(sql, *params)
        if status == "UPDATE 0":
            raise LeaseLost(f"job {job_id} is no longer leased to this process")

    async def get(self, job_id: str) -> Job | None:
        row = await self._db.fetchrow("SELECT * FROM jobs WHERE id = $1", job_id)
        return _job_from_row(row) if row else None

    async def find_by_task(self, provider: str, task_id: str) -> Job | None:
        row = await self._db.fetchrow(
            "SELECT * FROM jobs WHERE provider = $1 AND provider_task_id = $2", provider, task_id
        )
        return _job_from_row(row) if row else None

    async def unfinished(self) -> list[Job]:
        """Return every job whose end has not been reported yet, oldest first (whoever drives it)."""
        rows = await self._db.fetch("SELECT * FROM jobs WHERE finished_at IS NULL ORDER BY created_at, id")
        return [_job_from_row(row) for row in rows]

    # --- leases ------------------------------------------------------------------------------------

    async def claim(self, limit: int) -> list[Job]:
        """Lease to this process up to `limit` unfinished jobs that no live process drives; oldest first.

        Claimable: no owner (never leased, or given back at a graceful stop) or a lease that ran out
        (its process died, or lost the database for longer than a lease). Rows another process is
        claiming at this moment are skipped, not waited for (SKIP LOCKED).
        """
        rows = await self._db.fetch(
            f"UPDATE jobs SET owner = $1, lease_expires_at = {DB_NOW} + $2 WHERE id IN ("  # noqa: S608
            "SELECT id FROM jobs WHERE finished_at IS NULL "
            f"AND (owner IS NULL OR lease_expires_at < {DB_NOW}) "
            "ORDER BY created_at, id LIMIT $3 FOR UPDATE SKIP LOCKED) RETURNING *",
            self._owner,
            self._lease,
            limit,
        )
        jobs = [_job_from_row(row) for row in rows]
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
        """Return in how many seconds the earliest lease of another process runs out (None: none)."""
        value = await self._db.fetchval(
            f"SELECT min(lease_expires_at) - {DB_NOW} FROM jobs "  # noqa: S608
            "WHERE finished_at IS NULL AND owner IS NOT NULL AND owner <> $1",
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

    async def cached_prompt(self, image_hash: str, provider: str, max_age_days: int) -> str | None:
        """Return a prompt this provider gave for the same image within the cache's lifetime."""
        if max_age_days <= 0:
            return None
        value = await self._db.fetchval(
            "SELECT prompt FROM describe_cache WHERE image_hash = $1 AND provider = $2 AND created_at > $3",
            image_hash,
            provider,
            self._clock() - max_age_days * 86400,
        )
        return None if value is None else str(value)

    async def cache_prompt(self, image_hash: str, provider: str, prompt: str) -> None:
        await self._db.execute(
            "INSERT INTO describe_cache (image_hash, provider, prompt, created_at) VALUES ($1, $2, $3, $4) "
            "ON CONFLICT (image_hash, provider) DO UPDATE SET prompt = excluded.prompt, "
            "created_at = excluded.created_at",
            image_hash,
            provider,
            prompt,
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
        return int(status.rsplit(" ", 1)[-1])


async def _insert_images(
    conn: asyncpg.Connection, job_id: str, role: ImageRole, images: Sequence[ImageBytes]
) -> None:
    if not images:
        return
    await conn.executemany(
        "INSERT INTO job_images (job_id, role, position, mime, data) VALUES ($1, $2, $3, $4, $5)",
        [(job_id, role, position, image.mime, image.data) for position, image in enumerate(images)],
    )
