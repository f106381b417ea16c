"""How long each provider's tasks took lately (learned polling's memory), in SQLite."""

from __future__ import annotations

from collections.abc import Sequence

from bot.domain.tasks import TaskDuration, TaskKind
from bot.store.sqlite.database import Database


class SqliteTaskDurations:
    """The ends of the newest tasks (by start) of each provider and kind; older rows go as new ones come."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def record(
        self, provider: str, kind: TaskKind, durations: Sequence[TaskDuration], *, keep: int
    ) -> None:
        """Add these ends and delete all but the newest `keep` of this provider and kind, in one transaction."""
        if not durations:
            return
        async with self._db.transaction() as conn:
            await conn.executemany(
                "INSERT INTO task_durations (provider, kind, started_at, ran_for, ended_within) "
                "VALUES (?, ?, ?, ?, ?)",
                [(provider, kind.value, d.started_at, d.ran_for, d.ended_within) for d in durations],
            )
            await conn.execute(
                "DELETE FROM task_durations WHERE provider = ? AND kind = ? AND id NOT IN ("
                "SELECT id FROM task_durations WHERE provider = ? AND kind = ? "
                "ORDER BY started_at DESC, id DESC LIMIT ?)",
                (provider, kind.value, provider, kind.value, keep),
            )

    async def recent(self, provider: str, kind: TaskKind, limit: int) -> list[TaskDuration]:
        """Return the ends of the newest `limit` tasks (by start) of a provider and kind, oldest first."""
        rows = await self._db.fetchall(
            "SELECT started_at, ran_for, ended_within FROM task_durations WHERE provider = ? AND kind = ? "
            "ORDER BY started_at DESC, id DESC LIMIT ?",
            (provider, kind.value, limit),
        )
        return [
            TaskDuration(float(row["started_at"]), float(row["ran_for"]), float(row["ended_within"]))
            for row in reversed(rows)
        ]
