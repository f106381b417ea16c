"""Quotas: limits by server, role and user; reserve, commit and refund; the usage log and its report."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import aiosqlite

from bot.errors import QuotaExceeded, TooManyInFlight
from bot.providers.base import TaskKind
from bot.store.database import Database

UNLIMITED = -1
LimitScope = Literal["server", "role", "user"]
# A scope's precedence: a user override beats any role, a role beats the server's limit.
_SCOPES: tuple[LimitScope, ...] = ("user", "role", "server")


@dataclass(frozen=True, slots=True)
class Member:
    """Who asks: quotas are kept per server (guild 0 is direct messages)."""

    guild_id: int
    user_id: int
    role_ids: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Reservation:
    usage_id: int
    kind: TaskKind
    day: str


@dataclass(frozen=True, slots=True)
class KindStatus:
    """One kind's standing for a member today."""

    kind: TaskKind
    limit: int  # the resolved daily limit plus today's grants; UNLIMITED when there is none
    used: int
    renews_at: datetime
    source: str  # which rule gave the limit: user, role, server or default

    @property
    def left(self) -> int | None:
        return None if self.limit == UNLIMITED else max(0, self.limit - self.used)


@dataclass(frozen=True, slots=True)
class UsageLine:
    kind: str
    provider: str
    completed: int
    failed: int
    cached: int


@dataclass(frozen=True, slots=True)
class UsageReport:
    guild_id: int
    since: datetime
    until: datetime
    lines: list[UsageLine]
    top_members: list[tuple[int, int]]  # (user id, tasks spent)
    rows: list[dict[str, object]]  # every usage row of the period, for the CSV


def utc_day(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).date().isoformat()


def next_utc_midnight(timestamp: float) -> datetime:
    today = datetime.fromtimestamp(timestamp, UTC).date()
    return datetime.combine(today + timedelta(days=1), datetime.min.time(), tzinfo=UTC)


class QuotaStore:
    """Exact under concurrency: every check-and-write is one SQLite write transaction."""

    def __init__(
        self,
        db: Database,
        *,
        defaults: Mapping[TaskKind, int],
        max_inflight_per_user: int,
        max_inflight_per_provider: int,
        reservation_ttl: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._db = db
        self._defaults = dict(defaults)
        self._max_user = max_inflight_per_user
        self._max_provider = max_inflight_per_provider
        # A reservation older than this belongs to a task that can no longer be running (the bot died
        # and its job was never resumed): it stops counting as in flight and is settled by `expire`.
        self._ttl = reservation_ttl
        self._clock = clock

    # --- the member's side -------------------------------------------------------------------

    async def reserve(self, member: Member, kind: TaskKind, provider: str) -> Reservation:
        """Hold one task for the member, or raise QuotaExceeded or TooManyInFlight."""
        now = self._clock()
        day = utc_day(now)
        async with self._db.transaction() as conn:
            live_since = now - self._ttl
            running_user = await _scalar(
                conn,
                "SELECT COUNT(*) FROM usage WHERE user_id = ? AND state = 'reserved' AND started_at > ?",
                (member.user_id, live_since),
            )
            if running_user >= self._max_user:
                raise TooManyInFlight("user", self._max_user)
            running_provider = await _scalar(
                conn,
                "SELECT COUNT(*) FROM usage WHERE provider = ? AND state = 'reserved' AND started_at > ?",
                (provider, live_since),
            )
            if running_provider >= self._max_provider:
                raise TooManyInFlight("provider", self._max_provider)
            status = await self._status(conn, member, kind, now)
            if status.left is not None and status.left <= 0:
                raise QuotaExceeded(kind.value, status.limit, status.renews_at)
            cursor = await conn.execute(
                "INSERT INTO usage (guild_id, user_id, kind, provider, state, day, started_at) "
                "VALUES (?, ?, ?, ?, 'reserved', ?, ?)",
                (member.guild_id, member.user_id, kind.value, provider, day, now),
            )
            return Reservation(usage_id=cursor.lastrowid or 0, kind=kind, day=day)

    async def commit(self, usage_id: int, *, outcome: str = "COMPLETED") -> bool:
        """Spend a reservation; False when it was already settled."""
        return await self._settle(usage_id, "committed", outcome)

    async def refund(self, usage_id: int, *, outcome: str) -> bool:
        """Give a reservation back; False when it was already settled."""
        return await self._settle(usage_id, "refunded", outcome)

    async def move(self, usage_id: int, provider: str) -> None:
        """Record that a reserved task went to another provider (a fallback)."""
        await self._db.execute(
            "UPDATE usage SET provider = ? WHERE id = ? AND state = 'reserved'", (provider, usage_id)
        )

    async def record_task_id(self, usage_id: int, task_id: str) -> None:
        await self._db.execute("UPDATE usage SET provider_task_id = ? WHERE id = ?", (task_id, usage_id))

    async def record_cached(self, member: Member, kind: TaskKind, provider: str) -> None:
        """Log a task answered from the cache: it costs the member nothing."""
        now = self._clock()
        await self._db.execute(
            "INSERT INTO usage (guild_id, user_id, kind, provider, state, outcome, day, started_at, ended_at) "
            "VALUES (?, ?, ?, ?, 'cached', 'COMPLETED', ?, ?, ?)",
            (member.guild_id, member.user_id, kind.value, provider, utc_day(now), now, now),
        )

    async def status(self, member: Member) -> list[KindStatus]:
        """Return each kind's limit, use and renewal for the member today."""
        now = self._clock()
        async with self._db.transaction() as conn:
            return [await self._status(conn, member, kind, now) for kind in TaskKind]

    async def running(self, user_id: int) -> int:
        """Return how many of the member's tasks are running."""
        row = await self._db.fetchone(
            "SELECT COUNT(*) FROM usage WHERE user_id = ? AND state = 'reserved' AND started_at > ?",
            (user_id, self._clock() - self._ttl),
        )
        return int(row[0]) if row else 0

    async def expire(self) -> int:
        """Refund reservations older than the task lifetime (their task cannot still be running)."""
        now = self._clock()
        cutoff = now - self._ttl
        async with self._db.transaction() as conn:
            cursor = await conn.execute(
                "UPDATE usage SET state = 'refunded', outcome = 'EXPIRED', ended_at = ? "
                "WHERE state = 'reserved' AND started_at <= ?",
                (now, cutoff),
            )
            return cursor.rowcount

    # --- the admin's side --------------------------------------------------------------------

    async def set_limit(
        self,
        guild_id: int,
        scope: LimitScope,
        target_id: int,
        kind: TaskKind,
        limit: int | None,
        actor_id: int,
    ) -> None:
        """Set (or with None remove) a daily limit for a server, a role or a user."""
        async with self._db.transaction() as conn:
            if limit is None:
                await conn.execute(
                    "DELETE FROM quota_limits WHERE guild_id = ? AND scope = ? AND target_id = ? AND kind = ?",
                    (guild_id, scope, target_id, kind.value),
                )
            else:
                await conn.execute(
                    "INSERT INTO quota_limits (guild_id, scope, target_id, kind, daily_limit) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (guild_id, scope, target_id, kind) "
                    "DO UPDATE SET daily_limit = excluded.daily_limit",
                    (guild_id, scope, target_id, kind.value, limit),
                )
            await self._audit(
                conn,
                guild_id,
                actor_id,
                "set",
                {"scope": scope, "target_id": target_id, "kind": kind.value, "limit": limit},
            )

    async def grant(self, guild_id: int, user_id: int, kind: TaskKind, amount: int, actor_id: int) -> None:
        """Give a member extra tasks for today (UTC)."""
        now = self._clock()
        async with self._db.transaction() as conn:
            await conn.execute(
                "INSERT INTO quota_grants (guild_id, user_id, kind, day, amount) VALUES (?, ?, ?, ?, ?)",
                (guild_id, user_id, kind.value, utc_day(now), amount),
            )
            await self._audit(
                conn, guild_id, actor_id, "grant", {"user_id": user_id, "kind": kind.value, "amount": amount}
            )

    async def reset_today(self, guild_id: int, user_id: int, kind: TaskKind | None, actor_id: int) -> int:
        """Forgive a member's spent tasks today (all kinds when kind is None); return how many."""
        now = self._clock()
        kinds = [kind.value] if kind else [k.value for k in TaskKind]
        marks = ",".join("?" * len(kinds))
        async with self._db.transaction() as conn:
            cursor = await conn.execute(
                f"UPDATE usage SET forgiven = 1 WHERE guild_id = ? AND user_id = ? AND day = ? "  # noqa: S608
                f"AND state = 'committed' AND forgiven = 0 AND kind IN ({marks})",
                (guild_id, user_id, utc_day(now), *kinds),
            )
            await self._audit(
                conn,
                guild_id,
                actor_id,
                "reset",
                {"user_id": user_id, "kind": kind.value if kind else "all", "forgiven": cursor.rowcount},
            )
            return cursor.rowcount

    async def usage_report(self, guild_id: int, days: int, *, top: int = 10) -> UsageReport:
        """Summarise a server's usage over the last `days` UTC days (today included)."""
        now = self._clock()
        until = datetime.fromtimestamp(now, UTC)
        first_day = until.date() - timedelta(days=days - 1)
        since = datetime.combine(first_day, datetime.min.time(), tzinfo=UTC)
        params = (guild_id, first_day.isoformat())
        lines = [
            UsageLine(row["kind"], row["provider"], row["completed"], row["failed"], row["cached"])
            for row in await self._db.fetchall(
                "SELECT kind, provider, "
                "SUM(state = 'committed') AS completed, SUM(state = 'refunded') AS failed, "
                "SUM(state = 'cached') AS cached "
                "FROM usage WHERE guild_id = ? AND day >= ? GROUP BY kind, provider ORDER BY kind, provider",
                params,
            )
        ]
        top_members = [
            (int(row["user_id"]), int(row["spent"]))
            for row in await self._db.fetchall(
                "SELECT user_id, COUNT(*) AS spent FROM usage WHERE guild_id = ? AND day >= ? "
                "AND state = 'committed' GROUP BY user_id ORDER BY spent DESC, user_id LIMIT ?",
                (*params, top),
            )
        ]
        rows = [
            dict(row)
            for row in await self._db.fetchall(
                "SELECT id, day, user_id, kind, provider, provider_task_id, state, outcome, started_at, ended_at "
                "FROM usage WHERE guild_id = ? AND day >= ? ORDER BY id",
                params,
            )
        ]
        return UsageReport(guild_id, since, until, lines, top_members, rows)

    async def prune(self, retention_days: int) -> int:
        """Delete usage rows older than the retention; return how many went."""
        cutoff = (
            datetime.fromtimestamp(self._clock(), UTC).date() - timedelta(days=retention_days)
        ).isoformat()
        async with self._db.transaction() as conn:
            cursor = await conn.execute(
                "DELETE FROM usage WHERE day < ? AND state != 'reserved' "
                "AND id NOT IN (SELECT usage_id FROM jobs WHERE usage_id IS NOT NULL AND finished_at IS NULL)",
                (cutoff,),
            )
            await conn.execute("DELETE FROM quota_grants WHERE day < ?", (cutoff,))
            return cursor.rowcount

    # --- inside ------------------------------------------------------------------------------

    async def _settle(self, usage_id: int, state: str, outcome: str) -> bool:
        async with self._db.transaction() as conn:
            cursor = await conn.execute(
                "UPDATE usage SET state = ?, outcome = ?, ended_at = ? WHERE id = ? AND state = 'reserved'",
                (state, outcome, self._clock(), usage_id),
            )
            return cursor.rowcount == 1

    async def _status(
        self, conn: aiosqlite.Connection, member: Member, kind: TaskKind, now: float
    ) -> KindStatus:
        day = utc_day(now)
        limit, source = await self._resolve_limit(conn, member, kind)
        used = await _scalar(
            conn,
            "SELECT COUNT(*) FROM usage WHERE guild_id = ? AND user_id = ? AND kind = ? AND day = ? "
            "AND state IN ('reserved', 'committed') AND forgiven = 0",
            (member.guild_id, member.user_id, kind.value, day),
        )
        if limit != UNLIMITED:
            limit += await _scalar(
                conn,
                "SELECT COALESCE(SUM(amount), 0) FROM quota_grants "
                "WHERE guild_id = ? AND user_id = ? AND kind = ? AND day = ?",
                (member.guild_id, member.user_id, kind.value, day),
            )
        return KindStatus(kind, limit, used, next_utc_midnight(now), source)

    async def _resolve_limit(
        self, conn: aiosqlite.Connection, member: Member, kind: TaskKind
    ) -> tuple[int, str]:
        """Return the member's daily limit and its source: user, else the best role, else server, else default."""
        cursor = await conn.execute(
            "SELECT scope, target_id, daily_limit FROM quota_limits WHERE guild_id = ? AND kind = ?",
            (member.guild_id, kind.value),
        )
        by_scope: dict[str, list[int]] = {scope: [] for scope in _SCOPES}
        for row in await cursor.fetchall():
            scope, target, value = row["scope"], int(row["target_id"]), int(row["daily_limit"])
            if (
                (scope == "user" and target == member.user_id)
                or (scope == "role" and target in member.role_ids)
                or (scope == "server" and target == member.guild_id)
            ):
                by_scope[scope].append(value)
        for scope in _SCOPES:
            values = by_scope[scope]
            if values:
                # Among several roles the most generous wins; unlimited beats any number.
                return (UNLIMITED if UNLIMITED in values else max(values)), scope
        return self._defaults[kind], "default"

    async def _audit(
        self, conn: aiosqlite.Connection, guild_id: int, actor_id: int, action: str, detail: dict[str, object]
    ) -> None:
        await conn.execute(
            "INSERT INTO audit (guild_id, actor_id, action, detail, at) VALUES (?, ?, ?, ?, ?)",
            (guild_id, actor_id, action, json.dumps(detail, sort_keys=True), self._clock()),
        )

    async def audit_log(self, guild_id: int, limit: int = 50) -> list[dict[str, object]]:
        rows = await self._db.fetchall(
            "SELECT actor_id, action, detail, at FROM audit WHERE guild_id = ? ORDER BY id DESC LIMIT ?",
            (guild_id, limit),
        )
        return [dict(row) for row in rows]


async def _scalar(conn: aiosqlite.Connection, sql: str, params: Sequence[object]) -> int:
    cursor = await conn.execute(sql, tuple(params))
    row = await cursor.fetchone()
    return int(row[0]) if row and row[0] is not None else 0
