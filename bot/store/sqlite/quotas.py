"""Quotas in SQLite: limits by server, role and user; reserve, commit and refund; the usage log and its report."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta

import aiosqlite

from bot.domain.errors import LineFull, QuotaExceeded
from bot.domain.privacy import FORGOTTEN
from bot.domain.quota import (
    USAGE_COLUMNS,
    KindStatus,
    LimitScope,
    Member,
    Reservation,
    UsageReport,
    check_limit,
    kind_status,
    resolve_limit,
    utc_day,
)
from bot.domain.tasks import TaskKind
from bot.store.rows import (
    PSEUDONYM_KEY,
    MemberIds,
    forget_in_detail,
    limit_target,
    member_ids,
    usage_line_from_row,
)
from bot.store.sqlite.database import Database


class SqliteQuotaLedger:
    """Exact under concurrency: every check-and-write is one SQLite write transaction (BEGIN IMMEDIATE
    takes the file's write lock first), so two reservations can never both count the same last unit."""

    def __init__(
        self,
        db: Database,
        *,
        defaults: Mapping[TaskKind, int],
        max_inflight_per_provider: int,
        reservation_ttl: float,
        max_queue_per_provider: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._db = db
        self._defaults = dict(defaults)
        self._max_inflight_per_provider = max_inflight_per_provider
        self._max_queue_per_provider = max_queue_per_provider
        self._secret: bytes | None = None  # the key of forgotten members' stand-in ids, read once
        # A reservation older than this belongs to a task that can no longer be running (the bot died
        # and its job was never resumed): it stops counting as used or in flight, and `expire` settles it.
        self._ttl = reservation_ttl
        self._clock = clock

    # --- the member's side -------------------------------------------------------------------

    async def reserve(self, member: Member, kind: TaskKind, provider: str) -> Reservation:
        """Hold one task for the member, or raise QuotaExceeded or LineFull.

        The task then runs or waits in its provider's line; a full line (MAX_INFLIGHT_PER_PROVIDER running
        and MAX_QUEUE_PER_PROVIDER waiting) is counted in this same write transaction, so it is exact.
        """
        ids = await self._ids(member)
        async with self._db.transaction() as conn:
            # The clock is read once the write lock is held: a request that waited in line counts
            # against the day (and the in-flight window) it is granted in, not the one it arrived in.
            now = self._clock()
            day = utc_day(now)
            limit, source = await self._resolve_limit(conn, member, kind, ids)
            counts = await _row(
                conn,
                _RESERVE_COUNTS_SQL,
                (
                    *self._member_day(ids, kind, day, now),
                    *self._member_day(ids, kind, day),
                    provider,
                    now - self._ttl,
                ),
            )
            status = kind_status(kind, limit, source, int(counts["used"]), int(counts["granted"]), now)
            # The quota first: when none is left, waiting for a running task would not help.
            if status.left == 0:
                raise QuotaExceeded(kind, status.limit, status.renews_at)
            if counts["held_provider"] >= self._max_inflight_per_provider + self._max_queue_per_provider:
                raise LineFull(provider, self._max_queue_per_provider)
            cursor = await conn.execute(
                "INSERT INTO usage (guild_id, user_id, kind, provider, state, day, started_at) "
                "VALUES (?, ?, ?, ?, 'reserved', ?, ?)",
                (member.guild_id, member.user_id, kind.value, provider, day, now),
            )
            if cursor.lastrowid is None:
                raise RuntimeError("SQLite gave no id for the reservation")
            return Reservation(usage_id=cursor.lastrowid)

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
        ids = await self._ids(member)
        async with self._db.transaction() as conn:
            now = self._clock()
            day = utc_day(now)
            statuses = []
            for kind in TaskKind:
                limit, source = await self._resolve_limit(conn, member, kind, ids)
                counts = await _row(
                    conn,
                    _STATUS_COUNTS_SQL,
                    (*self._member_day(ids, kind, day, now), *self._member_day(ids, kind, day)),
                )
                statuses.append(
                    kind_status(kind, limit, source, int(counts["used"]), int(counts["granted"]), now)
                )
            return statuses

    async def expire(self) -> int:
        """Refund reservations older than the task lifetime (their task cannot still be running)."""
        async with self._db.transaction() as conn:
            now = self._clock()
            # A reservation whose job is unfinished is left to that job: the runner resumed it at start
            # and settles it (a job that completed just before the bot died is charged, not forgiven).
            cursor = await conn.execute(
                "UPDATE usage SET state = 'refunded', outcome = 'EXPIRED', ended_at = ? "
                "WHERE state = 'reserved' AND started_at <= ? AND id NOT IN "
                "(SELECT usage_id FROM jobs WHERE usage_id IS NOT NULL AND finished_at IS NULL)",
                (now, now - self._ttl),
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
        check_limit(scope, limit)
        # A forgotten member's limit was kept under their stand-in id: the new rule replaces it.
        stand_in = (
            (await self._ids(Member(guild_id=guild_id, user_id=target_id))).pseudonym
            if scope == "user"
            else None
        )
        async with self._db.transaction() as conn:
            if stand_in is not None:
                await conn.execute(
                    "DELETE FROM quota_limits WHERE guild_id = ? AND scope = 'user' AND target_id = ? AND kind = ?",
                    (guild_id, stand_in, kind.value),
                )
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
        if amount <= 0:
            raise ValueError(f"a grant is one task or more, not {amount}")
        async with self._db.transaction() as conn:
            day = utc_day(self._clock())
            await conn.execute(
                "INSERT INTO quota_grants (guild_id, user_id, kind, day, amount) VALUES (?, ?, ?, ?, ?)",
                (guild_id, user_id, kind.value, day, amount),
            )
            await self._audit(
                conn,
                guild_id,
                actor_id,
                "grant",
                {"user_id": user_id, "kind": kind.value, "amount": amount, "day": day},
            )

    async def reset_today(self, guild_id: int, user_id: int, kind: TaskKind | None, actor_id: int) -> int:
        """Forgive a member's spent tasks today (all kinds when kind is None); return how many."""
        kinds = [kind.value] if kind else [k.value for k in TaskKind]
        marks = ",".join("?" * len(kinds))
        async with self._db.transaction() as conn:
            day = utc_day(self._clock())
            # Running tasks are not forgiven: they are still in flight and may yet be refunded.
            cursor = await conn.execute(
                f"UPDATE usage SET forgiven = 1 WHERE guild_id = ? AND user_id = ? AND day = ? "  # noqa: S608
                f"AND state = 'committed' AND forgiven = 0 AND kind IN ({marks})",
                (guild_id, user_id, day, *kinds),
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
        if days < 1:
            raise ValueError(f"a report covers one day or more, not {days}")
        async with self._db.transaction() as conn:
            until = datetime.fromtimestamp(self._clock(), UTC)
            first_day = until.date() - timedelta(days=days - 1)
            since = datetime.combine(first_day, datetime.min.time(), tzinfo=UTC)
            params = (guild_id, first_day.isoformat())
            lines = [
                usage_line_from_row(row)
                for row in await conn.execute_fetchall(
                    "SELECT kind, provider, "
                    "SUM(state = 'committed' AND outcome = 'COMPLETED') AS completed, "
                    "SUM(state IN ('committed', 'refunded') AND COALESCE(outcome, '') != 'COMPLETED') "
                    "AS failed, "
                    "SUM(state = 'refunded') AS refunded, SUM(state = 'cached') AS cached, "
                    "SUM(state = 'reserved') AS running "
                    "FROM usage WHERE guild_id = ? AND day >= ? GROUP BY kind, provider ORDER BY kind, provider",
                    params,
                )
            ]
            top_members = [
                (int(row["user_id"]), int(row["spent"]))
                for row in await conn.execute_fetchall(
                    "SELECT user_id, COUNT(*) AS spent FROM usage WHERE guild_id = ? AND day >= ? "
                    "AND state = 'committed' GROUP BY user_id ORDER BY spent DESC, user_id LIMIT ?",
                    (*params, top),
                )
            ]
            rows = [
                dict(row)
                for row in await conn.execute_fetchall(
                    f"SELECT {', '.join(USAGE_COLUMNS)} FROM usage "  # noqa: S608 (fixed column names)
                    "WHERE guild_id = ? AND day >= ? ORDER BY id",
                    params,
                )
            ]
        return UsageReport(guild_id, since, until, lines, top_members, rows)

    async def prune(self, retention_days: int) -> int:
        """Delete usage rows older than the retention; return how many went."""
        async with self._db.transaction() as conn:
            cutoff = (
                datetime.fromtimestamp(self._clock(), UTC).date() - timedelta(days=retention_days)
            ).isoformat()
            # A row a job still points at (jobs.usage_id is a foreign key) stays until that job is
            # pruned; it goes at the next round.
            cursor = await conn.execute(
                "DELETE FROM usage WHERE day < ? AND state != 'reserved' "
                "AND id NOT IN (SELECT usage_id FROM jobs WHERE usage_id IS NOT NULL)",
                (cutoff,),
            )
            await conn.execute("DELETE FROM quota_grants WHERE day < ?", (cutoff,))
            # A forgotten member's stand-in id is only needed while their day's quota runs.
            today = utc_day(self._clock())
            await conn.execute(
                "UPDATE usage SET user_id = ? WHERE user_id < 0 AND day < ?", (FORGOTTEN, today)
            )
            await conn.execute(
                "UPDATE quota_grants SET user_id = ? WHERE user_id < 0 AND day < ?", (FORGOTTEN, today)
            )
            return cursor.rowcount

    async def forget_member(self, guild_id: int, user_id: int) -> int:
        """Take the member's id off their usage rows, grants, limits and audit lines in this server.

        Rows of today take the member's stand-in id, so today's use still counts toward today's quota (and
        a limit an admin set for them still holds); older rows keep no id at all. Returns how many usage
        rows changed.
        """
        stand_in = (await self._ids(Member(guild_id=guild_id, user_id=user_id))).pseudonym
        async with self._db.transaction() as conn:
            today = utc_day(self._clock())
            member = (guild_id, user_id)
            changed = 0
            for table in ("usage", "quota_grants"):
                for condition, new_id in (("day = ?", stand_in), ("day != ?", FORGOTTEN)):
                    cursor = await conn.execute(
                        f"UPDATE {table} SET user_id = ? WHERE guild_id = ? AND user_id = ? AND {condition}",  # noqa: S608
                        (new_id, *member, today),
                    )
                    changed += cursor.rowcount if table == "usage" else 0
            await conn.execute(
                "UPDATE quota_limits SET target_id = ? WHERE guild_id = ? AND scope = 'user' AND target_id = ?",
                (stand_in, *member),
            )
            await conn.execute(
                "UPDATE audit SET actor_id = ? WHERE guild_id = ? AND actor_id = ?", (stand_in, *member)
            )
            for row in await conn.execute_fetchall(
                "SELECT id, detail FROM audit WHERE guild_id = ? AND detail LIKE ?",
                (guild_id, f"%{user_id}%"),
            ):
                await conn.execute(
                    "UPDATE audit SET detail = ? WHERE id = ?",
                    (forget_in_detail(str(row["detail"]), user_id, stand_in), row["id"]),
                )
            return changed

    async def audit_log(self, guild_id: int, limit: int = 50) -> list[dict[str, object]]:
        """Return the server's latest admin changes, newest first."""
        rows = await self._db.fetchall(
            "SELECT actor_id, action, detail, at FROM audit WHERE guild_id = ? ORDER BY id DESC LIMIT ?",
            (guild_id, limit),
        )
        return [dict(row) for row in rows]

    # --- inside ------------------------------------------------------------------------------

    async def _settle(self, usage_id: int, state: str, outcome: str) -> bool:
        # One statement is atomic on its own: the state guard makes settling happen once.
        changed = await self._db.update(
            "UPDATE usage SET state = ?, outcome = ?, ended_at = ? WHERE id = ? AND state = 'reserved'",
            (state, outcome, self._clock(), usage_id),
        )
        return changed == 1

    def _member_day(
        self, ids: MemberIds, kind: TaskKind, day: str, now: float | None = None
    ) -> tuple[object, ...]:
        """Return the parameters of _USED_SQL (with `now`) or _GRANTED_SQL (without)."""
        base = (ids.guild_id, ids.user_id, ids.pseudonym, kind.value, day)
        return base if now is None else (*base, now - self._ttl)

    async def _ids(self, member: Member) -> MemberIds:
        """Return the member's id and the stand-in id their rows took if they asked to be forgotten today."""
        if self._secret is None:
            # The first key written stands (two tasks may get here at once): both read back that one.
            await self._db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
                (PSEUDONYM_KEY, secrets.token_hex(32)),
            )
            stored = await self._db.get_meta(PSEUDONYM_KEY)
            if stored is None:
                raise RuntimeError("the database kept no pseudonym key")
            self._secret = bytes.fromhex(stored)
        return member_ids(self._secret, member)

    async def _resolve_limit(
        self, conn: aiosqlite.Connection, member: Member, kind: TaskKind, ids: MemberIds
    ) -> tuple[int, str]:
        """Return the member's daily limit and its source: user, else the best role, else server, else default."""
        rows = await conn.execute_fetchall(
            "SELECT scope, target_id, daily_limit FROM quota_limits WHERE guild_id = ? AND kind = ?",
            (member.guild_id, kind.value),
        )
        return resolve_limit(
            ((str(r["scope"]), limit_target(r, ids), int(r["daily_limit"])) for r in rows),
            member,
            self._defaults[kind],
        )

    async def _audit(
        self, conn: aiosqlite.Connection, guild_id: int, actor_id: int, action: str, detail: dict[str, object]
    ) -> None:
        await write_audit(conn, guild_id, actor_id, action, detail, self._clock())


async def write_audit(
    conn: aiosqlite.Connection,
    guild_id: int,
    actor_id: int,
    action: str,
    detail: dict[str, object],
    at: float,
) -> None:
    """Add one row to the audit table (quota and rules changes alike), inside the change's transaction."""
    await conn.execute(
        "INSERT INTO audit (guild_id, actor_id, action, detail, at) VALUES (?, ?, ?, ?, ?)",
        (guild_id, actor_id, action, json.dumps(detail, sort_keys=True), at),
    )


# What counts against today's quota: spent tasks not forgiven by a reset, and running ones. A reservation
# older than the reservation lifetime cannot be running any more (the bot died): it counts for nothing.
# A reservation is held while its task may still run: a job carries it (in line or at the provider, however
# long that takes), or it is recent (the bot died between reserving and saving its job).
_HELD = (
    "state = 'reserved' AND (started_at > ? OR id IN "
    "(SELECT usage_id FROM jobs WHERE finished_at IS NULL AND usage_id IS NOT NULL))"
)
# A member's rows are theirs under their id, and today's also under their stand-in id once forgotten.
_USED_SQL = (
    "SELECT COUNT(*) FROM usage WHERE guild_id = ? AND user_id IN (?, ?) AND kind = ? AND day = ? "  # noqa: S608
    f"AND forgiven = 0 AND (state = 'committed' OR ({_HELD}))"
)
_GRANTED_SQL = (
    "SELECT COALESCE(SUM(amount), 0) FROM quota_grants WHERE guild_id = ? AND user_id IN (?, ?) AND kind = ? "
    "AND day = ?"
)

_STATUS_COUNTS_SQL = f"SELECT ({_USED_SQL}) AS used, ({_GRANTED_SQL}) AS granted"
# The line's count reads only 'reserved' rows, which the usage_state index finds without a scan.
_RESERVE_COUNTS_SQL = (
    f"SELECT ({_USED_SQL}) AS used, ({_GRANTED_SQL}) AS granted, "  # noqa: S608 (constants)
    f"(SELECT COUNT(*) FROM usage WHERE provider = ? AND {_HELD}) AS held_provider"
)


async def _row(conn: aiosqlite.Connection, sql: str, params: Sequence[object]) -> aiosqlite.Row:
    rows = list(await conn.execute_fetchall(sql, tuple(params)))
    return rows[0]
