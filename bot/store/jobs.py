"""Job rows: what is in flight, its inputs and results, and where its Discord message is."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

import aiosqlite

from bot.errors import ProviderFault
from bot.providers.base import GeneratedImage, InputImage, TaskKind, TaskState
from bot.store.database import Database

ImageRole = Literal["input", "output"]
ReportVia = Literal["interaction", "channel"]


@dataclass(frozen=True, slots=True)
class Job:
    """One member's request, as saved: the runner drives it, the reporter shows it."""

    id: str
    kind: TaskKind
    provider: str
    state: TaskState
    guild_id: int
    user_id: int
    created_at: float
    updated_at: float
    provider_task_id: str | None = None
    reported_state: TaskState | None = None
    fault: ProviderFault | None = None
    usage_id: int | None = None
    channel_id: int | None = None
    message_id: int | None = None
    application_id: int | None = None
    interaction_token: str | None = field(default=None, repr=False)
    token_created_at: float | None = None
    report_via: ReportVia = "interaction"
    input_hash: str | None = None
    prompt: str | None = None
    result_text: str | None = None
    notice: str | None = None
    started_at: float | None = None
    finished_at: float | None = None

    @classmethod
    def new(
        cls,
        *,
        kind: TaskKind,
        provider: str,
        guild_id: int,
        user_id: int,
        clock: Callable[[], float] = time.time,
        **extra: Any,
    ) -> Job:
        now = clock()
        return cls(
            id=uuid.uuid4().hex,
            kind=kind,
            provider=provider,
            state=TaskState.QUEUED,
            guild_id=guild_id,
            user_id=user_id,
            created_at=now,
            updated_at=now,
            **extra,
        )

    @property
    def finished(self) -> bool:
        return self.state.finished


_COLUMNS = tuple(f.name for f in fields(Job))


def _job_from_row(row: aiosqlite.Row) -> Job:
    values = dict(row)
    values["kind"] = TaskKind(values["kind"])
    values["state"] = TaskState(values["state"])
    values["reported_state"] = TaskState(values["reported_state"]) if values["reported_state"] else None
    values["fault"] = ProviderFault(values["fault"]) if values["fault"] else None
    return Job(**{name: values[name] for name in _COLUMNS})


def _as_row(job: Job) -> dict[str, Any]:
    return {name: getattr(job, name) for name in _COLUMNS}


class JobStore:
    """Intent-named reads and writes of jobs; each write is saved before the state is reported."""

    def __init__(self, db: Database, *, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock

    async def create(self, job: Job, inputs: Sequence[InputImage] = ()) -> None:
        """Save a new job and its input images in one transaction."""
        row = _as_row(job)
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

    async def save_outputs(
        self, job: Job, images: Sequence[InputImage | GeneratedImage], **changes: Any
    ) -> Job:
        """Save generated images and the job's new fields together."""
        updated, sql, params = self._update_statement(job, changes)
        async with self._db.transaction() as conn:
            await _insert_images(conn, job.id, "output", images)
            await conn.execute(sql, params)
        return updated

    def _update_statement(self, job: Job, changes: dict[str, Any]) -> tuple[Job, str, tuple[Any, ...]]:
        changes["updated_at"] = self._clock()
        updated = replace(job, **changes)
        assignments = ", ".join(f"{name} = ?" for name in changes)
        sql = f"UPDATE jobs SET {assignments} WHERE id = ?"  # noqa: S608 (column names are our own fields)
        return updated, sql, (*[getattr(updated, name) for name in changes], job.id)

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

    async def images(self, job_id: str, role: ImageRole) -> list[InputImage]:
        rows = await self._db.fetchall(
            "SELECT mime, data FROM job_images WHERE job_id = ? AND role = ? ORDER BY position",
            (job_id, role),
        )
        return [InputImage(data=bytes(row["data"]), mime=str(row["mime"])) for row in rows]

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
    conn: aiosqlite.Connection, job_id: str, role: ImageRole, images: Sequence[InputImage | GeneratedImage]
) -> None:
    await conn.executemany(
        "INSERT INTO job_images (job_id, role, position, mime, data) VALUES (?, ?, ?, ?, ?)",
        [(job_id, role, position, image.mime, image.data) for position, image in enumerate(images)],
    )
