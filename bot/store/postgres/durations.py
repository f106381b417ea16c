"""How long each provider's tasks took lately (learned polling's memory), in PostgreSQL, shared by the processes."""

from __future__ import annotations

from collections.abc import Sequence

from bot.domain.tasks import TaskDuration, TaskKind
from bot.store.postgres.database import PgDatabase


class PgTaskDurations:
    """The ends of the newest tasks (by start) of each provider and kind; older rows go as new ones come.

    Every process adds the ends it saw and reads the newest of all of them, so a process that starts learns
    from what the others saw.
    """

    def __init__(self, db: PgDatabase) -> None:
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
                "VALUES ($1, $2, $3, $4, $5)",
                [(provider, kind.value, d.started_at, d.ran_for, d.ended_within) for d in durations],
            )
            await conn.execute(
                "DELETE FROM task_durations WHERE provider = $1 AND kind = $2 AND id NOT IN ("
                "SELECT id FROM task_durations WHERE provider = $1 AND kind = $2 "
                "ORDER BY started_at DESC, id DESC LIMIT $3)",
                provider,
                kind.value,
                keep,
            )

    async def recent(self, provider: str, kind: TaskKind, limit: int) -> list[TaskDuration]:
        """Return the ends of the newest `limit` tasks (by start) of a provider and kind, oldest first."""
        rows = await self._db.fetch(
            "SELECT started_at, ran_for, ended_within FROM task_durations WHERE provider = $1 AND kind = $2 "
            "ORDER BY started_at DESC, id DESC LIMIT $3",
            provider,
            kind.value,
            limit,
        )
        return [
            TaskDuration(float(row["started_at"]), float(row["ran_for"]), float(row["ended_within"]))
            for row in reversed(rows)
        ]
