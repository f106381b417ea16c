"""Both stores behind one face, so that one contract test runs against SQLite and PostgreSQL alike."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.domain.ports import RulesRepository, TaskDurations
from bot.domain.quota import LedgerSettings
from bot.domain.tasks import TaskKind
from bot.store.postgres.database import PgDatabase
from bot.store.postgres.durations import PgTaskDurations
from bot.store.postgres.jobs import PgJobRepository
from bot.store.postgres.quotas import PgQuotaLedger
from bot.store.postgres.rules import PgRules
from bot.store.sqlite.database import Database
from bot.store.sqlite.durations import SqliteTaskDurations
from bot.store.sqlite.jobs import SqliteJobRepository
from bot.store.sqlite.quotas import SqliteQuotaLedger
from bot.store.sqlite.rules import SqliteRules

TTL = 900.0
_MARK = re.compile(r"\?")


@dataclass
class Backend:
    """One store under test: its database, and the repositories built on it as the bot builds them."""

    kind: str  # "sqlite" or "postgres"
    db: Database | PgDatabase
    where: Path | str  # the SQLite file, or the DATABASE_URL
    _opened: list[Database | PgDatabase] = field(default_factory=list)

    def ledger(
        self,
        clock: Callable[[], float],
        *,
        describe: int = 5,
        imagine: int = 3,
        per_provider: int = 10_000,
        queue: int = 0,
        ttl: float = TTL,
        db: Database | PgDatabase | None = None,
    ) -> SqliteQuotaLedger | PgQuotaLedger:
        database = db or self.db
        settings = LedgerSettings(
            defaults={TaskKind.DESCRIBE: describe, TaskKind.IMAGINE: imagine},
            max_inflight_per_provider=per_provider,
            max_queue_per_provider=queue,
            reservation_ttl=ttl,
        )
        if isinstance(database, Database):
            return SqliteQuotaLedger(database, **settings, clock=clock)
        return PgQuotaLedger(database, **settings, clock=clock)

    def jobs(
        self,
        clock: Callable[[], float],
        *,
        owner: str = "process-a",
        lease: float = 30.0,
        db: Database | PgDatabase | None = None,
    ) -> SqliteJobRepository | PgJobRepository:
        database = db or self.db
        if isinstance(database, Database):
            return SqliteJobRepository(database, clock=clock)
        return PgJobRepository(database, owner=owner, lease_seconds=lease, clock=clock)

    def rules(self, clock: Callable[[], float]) -> RulesRepository:
        if isinstance(self.db, Database):
            return SqliteRules(self.db, clock=clock)
        return PgRules(self.db, clock=clock)

    def durations(self, db: Database | PgDatabase | None = None) -> TaskDurations:
        database = db or self.db
        if isinstance(database, Database):
            return SqliteTaskDurations(database)
        return PgTaskDurations(database)

    async def another_connection(self) -> Database | PgDatabase:
        """Open the same store again, as a second process would (closed with the backend)."""
        if isinstance(self.db, Database):
            second: Database | PgDatabase = await Database.open(self.db.path)
        else:
            second = await PgDatabase.open(str(self.where))
        self._opened.append(second)
        return second

    async def rows(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        """Run a read written with ? placeholders on either store; return plain dicts."""
        return await query(self.db, sql, *params)

    async def value(self, sql: str, *params: Any) -> Any:
        rows = await self.rows(sql, *params)
        return next(iter(rows[0].values())) if rows else None

    async def write(self, sql: str, *params: Any) -> None:
        """Run a write written with ? placeholders on either store (a test's own setup)."""
        if isinstance(self.db, Database):
            await self.db.execute(sql, params)
            return
        counter = iter(range(1, len(params) + 1))
        await self.db.execute(_MARK.sub(lambda _: f"${next(counter)}", sql), *params)

    async def close(self) -> None:
        for db in self._opened:
            await db.close()
        await self.db.close()


async def query(db: Database | PgDatabase, sql: str, *params: Any) -> list[dict[str, Any]]:
    """Run a read written with ? placeholders on either store (a bot's `core.db`); return plain dicts."""
    if isinstance(db, Database):
        return [dict(row) for row in await db.fetchall(sql, params)]
    counter = iter(range(1, len(params) + 1))
    numbered = _MARK.sub(lambda _: f"${next(counter)}", sql)
    return [dict(row) for row in await db.fetch(numbered, *params)]


async def table_names(db: Database | PgDatabase) -> list[str]:
    """Return the names of every table of the bot's store (its own schema, on PostgreSQL)."""
    if isinstance(db, Database):
        rows = await db.fetchall("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        return [str(row["name"]) for row in rows]
    rows = await db.fetch("SELECT tablename FROM pg_tables WHERE schemaname = current_schema() ORDER BY 1")
    return [str(row["tablename"]) for row in rows]
