"""Job rows in SQLite: what is in flight, its inputs and results, and where its Discord message is."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import fields, replace
from typing import Any

import aiosqlite

from bot.domain.ports import ImageRole
from bot.domain.tasks import Fault, ImageBytes, Job, JobState, Notice, NoticeCode, Route, TaskKind
from bot.store.sqlite.database import Database

# The job's own columns; its route is kept in the columns below.
_JOB_COLUMNS = tuple(f.name for f in fields(Job) if f.name != "route")
_ROUTE_COLUMNS = {
    "channel_id": "channel_id",
    "message_id": "message_id",
    "application_id": "application_id",
    "interaction_token": "interaction_token",
    "token_created_at": "token_created_at",
    "via": "report_via",
}


def notice_to_text(notice: Notice | None) -> str | None:
    """Store a notice as its code and parameters (JSON), never as a sentence."""
    if notice is None:
        return None
    return json.dumps({"code": notice.code.value, **notice.params}, sort_keys=True)


def notice_from_text(text: str | None) -> Notice | None:
    if not text:
        return None
    data = json.loads(text)
    code = NoticeCode(data.pop("code"))
    return Notice(code, data)


def _job_from_row(row: aiosqlite.Row) -> Job:
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


class SqliteJobRepository:
    """Intent-named reads and writes of jobs; each write is saved before the state is reported."""

    def __init__(self, db: Database, *, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock

    async def create(self, job: Job, inputs: Sequence[ImageBytes] = ()) -> None:
        """Save a new job and its input images in one transaction."""
        row = _column_values(job)
        columns = ", ".join(row)
        marks = ", ".join("?" * len(row))
        async with self._db.transaction() as conn:
            await conn.execute(f"INSERT INTO jobs ({columns}) VALUES ({marks})", tuple(row.values()))  # noqa: S608
            await _insert_images(conn, job.id, "input", inputs)

    async def update(self, job: Job, **changes: Any) -> Job:
        """Save the given fields of a job and return the job as it now is."""
        updated, sql, params = self._update_statement(job, changes)
        await self._db.execute(sql, params)
        return updated

    async def save_outputs(self, job: Job, images: Sequence[ImageBytes], **changes: Any) -> Job:
        """Save generated images and the job's new fields together."""
        updated, sql, params = self._update_statement(job, changes)
        async with self._db.transaction() as conn:
            await _insert_images(conn, job.id, "output", images)
            await conn.execute(sql, params)
        return updated

    async def finish(self, job: Job) -> Job:
        """Close a job whose end was reported: note when, and drop its interaction token (no longer needed)."""
        now = self._clock()
        await self._db.execute(
            "UPDATE jobs SET finished_at = ?, updated_at = ?, interaction_token = NULL WHERE id = ?",
            (now, now, job.id),
        )
        return replace(job, finished_at=now, updated_at=now, route=replace(job.route, interaction_token=None))

    async def save_route(self, job_id: str, route: Route) -> None:
        values = {column: getattr(route, field) for field, column in _ROUTE_COLUMNS.items()}
        assignments = ", ".join(f"{column} = ?" for column in values)
        await self._db.execute(
            f"UPDATE jobs SET {assignments}, updated_at = ? WHERE id = ?",  # noqa: S608 (our own column names)
            (*values.values(), self._clock(), job_id),
        )

    def _update_statement(self, job: Job, changes: dict[str, Any]) -> tuple[Job, str, tuple[Any, ...]]:
        if "route" in changes:
            raise ValueError("a job's route is saved with save_route")
        changes["updated_at"] = self._clock()
        updated = replace(job, **changes)
        stored = _column_values(updated)
        assignments = ", ".join(f"{name} = ?" for name in changes)
        sql = f"UPDATE jobs SET {assignments} WHERE id = ?"  # noqa: S608 (column names are our own fields)
        return updated, sql, (*[stored[name] for name in changes], job.id)

    async def get(self, job_id: str) -> Job | None:
        row = await self._db.fetchone("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return _job_from_row(row) if row else None

    async def find_by_task(self, provider: str, task_id: str) -> Job | None:
        row = await self._db.fetchone(
            "SELECT * FROM jobs WHERE provider = ? AND provider_task_id = ?", (provider, task_id)
        )
        return _job_from_row(row) if row else None

    async def unfinished(self) -> list[Job]:
        """Return every job whose end has not been reported yet, oldest first."""
        rows = await self._db.fetchall("SELECT * FROM jobs WHERE finished_at IS NULL ORDER BY created_at")
        return [_job_from_row(row) for row in rows]

    # One process uses an SQLite file: it drives every job, claims them all at once and never loses one.

    @property
    def shared(self) -> bool:
        return False

    async def claim(self, limit: int) -> list[Job]:
        """Return every unfinished job (one process drives them all; `limit` does not apply)."""
        return await self.unfinished()

    async def renew(self) -> set[str]:
        """Return every unfinished job's id: nothing is leased, so nothing is ever lost."""
        rows = await self._db.fetchall("SELECT id FROM jobs WHERE finished_at IS NULL")
        return {str(row["id"]) for row in rows}

    async def next_expiry(self) -> float | None:
        """No other process, no lease of its to run out."""
        return None

    async def release(self) -> None:
        """Nothing to give back: the next start carries every unfinished job on."""

    async def images(self, job_id: str, role: ImageRole) -> list[ImageBytes]:
        rows = await self._db.fetchall(
            "SELECT mime, data FROM job_images WHERE job_id = ? AND role = ? ORDER BY position",
            (job_id, role),
        )
        return [ImageBytes(data=bytes(row["data"]), mime=str(row["mime"])) for row in rows]

    async def cached_prompt(self, image_hash: str, provider: str, max_age_days: int) -> str | None:
        """Return a prompt this provider gave for the same image within the cache's lifetime."""
        if max_age_days <= 0:
            return None
        row = await self._db.fetchone(
            "SELECT prompt FROM describe_cache WHERE image_hash = ? AND provider = ? AND created_at > ?",
            (image_hash, provider, self._clock() - max_age_days * 86400),
        )
        return str(row["prompt"]) if row else None

    async def cache_prompt(self, image_hash: str, provider: str, prompt: str) -> None:
        await self._db.execute(
            "INSERT INTO describe_cache (image_hash, provider, prompt, created_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (image_hash, provider) DO UPDATE SET prompt = excluded.prompt, "
            "created_at = excluded.created_at",
            (image_hash, provider, prompt, self._clock()),
        )

    async def prune(self, retention_days: int) -> int:
        """Delete finished jobs (and their images) older than the retention; return how many went."""
        cutoff = self._clock() - retention_days * 86400
        async with self._db.transaction() as conn:
            cursor = await conn.execute(
                "DELETE FROM jobs WHERE finished_at IS NOT NULL AND finished_at < ?", (cutoff,)
            )
            await conn.execute("DELETE FROM describe_cache WHERE created_at < ?", (cutoff,))
            return cursor.rowcount


async def _insert_images(
    conn: aiosqlite.Connection, job_id: str, role: ImageRole, images: Sequence[ImageBytes]
) -> None:
    await conn.executemany(
        "INSERT INTO job_images (job_id, role, position, mime, data) VALUES (?, ?, ?, ?, ?)",
        [(job_id, role, position, image.mime, image.data) for position, image in enumerate(images)],
    )
