"""Job rows in SQLite: what is in flight, its inputs and results, and where its Discord message is."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import replace
from typing import Any

import aiosqlite

from bot.domain.errors import BadInput, Refusal
from bot.domain.line import take_order
from bot.domain.ports import ImageRole
from bot.domain.tasks import (
    ImageBytes,
    Job,
    Route,
    Suggestion,
    TaskKind,
)
from bot.store.rows import (
    RUNNING,
    WAITING,
    column_values,
    job_from_row,
    route_values,
    suggestions_from_text,
    suggestions_to_text,
)
from bot.store.sqlite.database import Database

# When each member waiting for a provider last had a task leave its line.
_LAST_SERVED_SQL = (
    "SELECT user_id, MAX(dispatched_at) AS last FROM jobs WHERE provider = ? AND dispatched_at IS NOT NULL "  # noqa: S608
    f"AND user_id IN (SELECT user_id FROM jobs WHERE provider = ? AND {WAITING}) GROUP BY user_id"
)
# How many tasks each member waiting for a provider runs, at any provider.
_RUNNING_OF_WAITING_SQL = (
    f"SELECT user_id, COUNT(*) AS n FROM jobs WHERE {RUNNING} "  # noqa: S608
    f"AND user_id IN (SELECT user_id FROM jobs WHERE provider = ? AND {WAITING}) GROUP BY user_id"
)
# How rows are read: the database's own reads, or a connection's inside a transaction.
_Fetch = Callable[[str, tuple[Any, ...]], Awaitable[Iterable[aiosqlite.Row]]]


class SqliteJobRepository:
    """Intent-named reads and writes of jobs; each write is saved before the state is reported."""

    def __init__(self, db: Database, *, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock

    async def create(self, job: Job, inputs: Sequence[ImageBytes] = ()) -> None:
        """Save a new job and its input images in one transaction."""
        row = column_values(job)
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
        values = route_values(route)
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
        stored = column_values(updated)
        columns = list(changes) + (["result_text"] if "suggestions" in changes else [])
        assignments = ", ".join(f"{name} = ?" for name in columns)
        sql = f"UPDATE jobs SET {assignments} WHERE id = ?"  # noqa: S608 (column names are our own fields)
        return updated, sql, (*[stored[name] for name in columns], job.id)

    async def get(self, job_id: str) -> Job | None:
        row = await self._db.fetchone("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return job_from_row(row) if row else None

    async def find_by_task(self, provider: str, task_id: str) -> Job | None:
        row = await self._db.fetchone(
            "SELECT * FROM jobs WHERE provider = ? AND provider_task_id = ?", (provider, task_id)
        )
        return job_from_row(row) if row else None

    async def unfinished(self) -> list[Job]:
        """Return every job whose end has not been reported yet, oldest first."""
        rows = await self._db.fetchall("SELECT * FROM jobs WHERE finished_at IS NULL ORDER BY created_at")
        return [job_from_row(row) for row in rows]

    async def next_in_line(
        self, provider: str, *, max_running: int, max_running_per_member: int
    ) -> Job | None:
        """Take the next job from the provider's line and mark it dispatched, in one write transaction."""
        async with self._db.transaction() as conn:
            # The provider's own cap counts its tasks; a full provider or an empty line ends it here.
            (at_provider,) = next(
                iter(
                    await conn.execute_fetchall(
                        f"SELECT COUNT(*) FROM jobs WHERE provider = ? AND {RUNNING}",  # noqa: S608
                        (provider,),
                    )
                )
            )
            if int(at_provider) >= max_running:
                return None
            waiting, served = await self._line_of(conn.execute_fetchall, provider)
            if not waiting:
                return None
            # A member's running tasks count at every provider; only the waiting members' are needed.
            per_member = {
                int(row["user_id"]): int(row["n"])
                for row in await conn.execute_fetchall(_RUNNING_OF_WAITING_SQL, (provider,))
            }
            for job in take_order(waiting, served):
                if per_member.get(job.user_id, 0) >= max_running_per_member:
                    continue
                now = self._clock()
                await conn.execute(
                    "UPDATE jobs SET dispatched_at = ?, updated_at = ? WHERE id = ? AND dispatched_at IS NULL",
                    (now, now, job.id),
                )
                return replace(job, dispatched_at=now, updated_at=now)
            return None

    async def line(self, provider: str) -> list[Job]:
        waiting, served = await self._line_of(self._db.fetchall, provider)
        return [replace(job, place=place) for place, job in enumerate(take_order(waiting, served), start=1)]

    @staticmethod
    async def _line_of(fetch: _Fetch, provider: str) -> tuple[list[Job], dict[int, float]]:
        """Return the provider's waiting jobs, and when each of their members was last served by it."""
        rows = list(
            await fetch(
                f"SELECT * FROM jobs WHERE provider = ? AND {WAITING} ORDER BY created_at",  # noqa: S608
                (provider,),
            )
        )
        if not rows:
            return [], {}
        served = await fetch(_LAST_SERVED_SQL, (provider, provider))
        return [job_from_row(row) for row in rows], {int(r["user_id"]): float(r["last"]) for r in served}

    async def cancel_waiting(self, job_id: str) -> Job | None:
        now = self._clock()
        changed = await self._db.update(
            f"UPDATE jobs SET state = 'CANCELLED', updated_at = ? WHERE id = ? AND {WAITING}",  # noqa: S608
            (now, job_id),
        )
        return await self.get(job_id) if changed else None

    async def tasks_of(self, user_id: int, guild_id: int | None = None) -> tuple[int, int]:
        where, params = (
            ("user_id = ?", (user_id,))
            if guild_id is None
            else ("user_id = ? AND guild_id = ?", (user_id, guild_id))
        )
        row = await self._db.fetchone(
            f"SELECT SUM({RUNNING}) AS running, SUM({WAITING}) AS waiting FROM jobs "  # noqa: S608
            f"WHERE {where} AND finished_at IS NULL",
            params,
        )
        return (int(row["running"] or 0), int(row["waiting"] or 0)) if row else (0, 0)

    async def forget_member(self, guild_id: int, user_id: int) -> tuple[int, int, int]:
        """Delete the member's tasks in this server, their images, and the cached prompts of images they sent.

        Refuses (FORGET_WHILE_RUNNING) while any of those tasks runs or waits: its drive still needs it.
        Returns (tasks, images, prompts) deleted.
        """
        member = (guild_id, user_id)
        async with self._db.transaction() as conn:
            (unfinished,) = next(
                iter(
                    await conn.execute_fetchall(
                        "SELECT COUNT(*) FROM jobs WHERE guild_id = ? AND user_id = ? AND finished_at IS NULL",
                        member,
                    )
                )
            )
            if unfinished:
                raise BadInput(Refusal.FORGET_WHILE_RUNNING, count=int(unfinished))
            images = await conn.execute(
                "DELETE FROM job_images WHERE job_id IN (SELECT id FROM jobs WHERE guild_id = ? AND user_id = ?)",
                member,
            )
            prompts = await conn.execute(
                "DELETE FROM describe_cache WHERE image_hash IN (SELECT input_hash FROM jobs "
                "WHERE guild_id = ? AND user_id = ? AND kind = ? AND input_hash IS NOT NULL)",
                (*member, TaskKind.DESCRIBE.value),
            )
            tasks = await conn.execute("DELETE FROM jobs WHERE guild_id = ? AND user_id = ?", member)
            return tasks.rowcount, images.rowcount, prompts.rowcount

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

    async def request_cancel(self, job_id: str) -> bool:
        """No other process drives a job here: the runner cancels its own drives itself."""
        return False

    async def cancel_requested(self) -> set[str]:
        """Nobody else asks: see `request_cancel`."""
        return set()

    async def images(self, job_id: str, role: ImageRole) -> list[ImageBytes]:
        rows = await self._db.fetchall(
            "SELECT mime, data FROM job_images WHERE job_id = ? AND role = ? ORDER BY position",
            (job_id, role),
        )
        return [ImageBytes(data=bytes(row["data"]), mime=str(row["mime"])) for row in rows]

    async def cached_suggestions(
        self, image_hash: str, provider: str, variant: str, max_age_days: int
    ) -> tuple[Suggestion, ...] | None:
        """Return what this provider answered for the same image and request within the cache's lifetime."""
        if max_age_days <= 0:
            return None
        row = await self._db.fetchone(
            "SELECT suggestions FROM describe_cache WHERE image_hash = ? AND provider = ? AND variant = ? "
            "AND created_at > ?",
            (image_hash, provider, variant, self._clock() - max_age_days * 86400),
        )
        return suggestions_from_text(str(row["suggestions"])) if row else None

    async def cache_suggestions(
        self, image_hash: str, provider: str, variant: str, suggestions: tuple[Suggestion, ...]
    ) -> None:
        await self._db.execute(
            "INSERT INTO describe_cache (image_hash, provider, variant, suggestions, created_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (image_hash, provider, variant) DO UPDATE SET "
            "suggestions = excluded.suggestions, created_at = excluded.created_at",
            (image_hash, provider, variant, suggestions_to_text(suggestions), self._clock()),
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
