"""Quotas in PostgreSQL: the same ledger as SQLite's, exact when several processes reserve at once."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta

import asyncpg

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
from bot.store.postgres.database import PgDatabase, row_count
from bot.store.rows import (
    PSEUDONYM_KEY,
    MemberIds,
    forget_in_detail,
    limit_target,
    member_ids,
    usage_line_from_row,
)

# Taken by everything that changes what a member may still reserve; the same key bot_reserve takes first.
_MEMBER_LOCK = (
    "SELECT pg_advisory_xact_lock(hashtextextended(current_schema() || ':quota-user:' || $1::bigint, 0))"
)
# A reservation is held while its task may still run: a job carries it (in line or at the provider, however
# long that takes), or it is recent (the process died between reserving and saving its job). `${n}` is the
# oldest start that still counts as recent. The same rule as SQLite's and bot_reserve's (migration 0007).
_HELD = (
    "state = 'reserved' AND (started_at > ${n} OR EXISTS "
    "(SELECT 1 FROM jobs WHERE jobs.usage_id = usage.id AND jobs.finished_at IS NULL))"
)


class PgQuotaLedger:
    """The quota ledger on a database that several bot processes share.

    Exactness comes from two transaction-scoped advisory locks, taken in one order by every writer that
    can change a member's standing: the member's (by user id), then the provider's. See `reserve`.
    """

    def __init__(
        self,
        db: PgDatabase,
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
        # As in SQLite: a reservation older than this belongs to a task that can no longer be running.
        self._ttl = reservation_ttl
        self._clock = clock

    # --- the member's side -------------------------------------------------------------------

    async def reserve(self, member: Member, kind: TaskKind, provider: str) -> Reservation:
        """Hold one task for the member, or raise QuotaExceeded or LineFull.

        The task then runs or waits in its provider's line (the runner keeps the per-member running cap
        when it dispatches); the provider's line is full once MAX_INFLIGHT_PER_PROVIDER +
        MAX_QUEUE_PER_PROVIDER reservations are held for it.

        Exact across processes: the check and the write are one call of the `bot_reserve` function
        (migration 0007), one transaction that first takes `pg_advisory_xact_lock` on the member (keyed
        by the user id: the quota of every server of the member sits under it), counts what the member
        used and was granted (under their id, and today's also under their stand-in id once forgotten),
        and only then takes the provider's lock, counts the reservations held for the provider and
        inserts. Every reservation takes the two in that order, so none deadlock, and holds them until its
        commit: the next reservation of the same member (or provider) starts counting only once this
        one's row is committed, and under READ COMMITTED each statement of the function sees every row
        committed before it began. Two reservations can therefore never both count the same last unit, or
        the same last place in line, in one process or in many. Grants, resets and forgetting take the
        member's lock too (`grant`, `reset_today`, `forget_member`), so a reservation sees all of one or
        none of it; a settle only ever lowers the counts, so it needs no lock (see `_settle`).

        The limit is resolved before the call, outside the locks (an admin changing a limit at the same
        moment may apply to this reservation or the next: either order is one an admin could have
        made). The clock is read just before the call; the locks are held for microseconds, so a request
        counts against the day (and the in-flight window) it arrived in.
        """
        ids = await self._ids(member)
        now = self._clock()
        day = utc_day(now)
        limit, source = resolve_limit(
            await self._limits(member.guild_id, kind, ids), member, self._defaults[kind]
        )
        row = await self._db.fetchrow(
            "SELECT * FROM bot_reserve($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            member.guild_id,
            member.user_id,
            ids.pseudonym,
            kind.value,
            provider,
            day,
            now,
            now - self._ttl,
            limit,
            self._max_inflight_per_provider + self._max_queue_per_provider,
        )
        assert row is not None
        if row["usage_id"] is not None:
            return Reservation(usage_id=int(row["usage_id"]))
        # Refused: say why, in SQLite's order (the quota first: waiting in line would not help).
        status = kind_status(kind, limit, source, int(row["used"]), int(row["granted"]), now)
        if status.left == 0 or row["held_provider"] is None:
            raise QuotaExceeded(kind, status.limit, status.renews_at)
        raise LineFull(provider, self._max_queue_per_provider)  # held_provider was at the line's end

    async def commit(self, usage_id: int, *, outcome: str = "COMPLETED") -> bool:
        """Spend a reservation; False when it was already settled."""
        return await self._settle(usage_id, "committed", outcome)

    async def refund(self, usage_id: int, *, outcome: str) -> bool:
        """Give a reservation back; False when it was already settled."""
        return await self._settle(usage_id, "refunded", outcome)

    async def move(self, usage_id: int, provider: str) -> None:
        """Record that a reserved task went to another provider (a fallback)."""
        await self._db.execute(
            "UPDATE usage SET provider = $1 WHERE id = $2 AND state = 'reserved'", provider, usage_id
        )

    async def record_task_id(self, usage_id: int, task_id: str) -> None:
        await self._db.execute("UPDATE usage SET provider_task_id = $1 WHERE id = $2", task_id, usage_id)

    async def record_cached(self, member: Member, kind: TaskKind, provider: str) -> None:
        """Log a task answered from the cache: it costs the member nothing."""
        now = self._clock()
        await self._db.execute(
            "INSERT INTO usage (guild_id, user_id, kind, provider, state, outcome, day, started_at, ended_at) "
            "VALUES ($1, $2, $3, $4, 'cached', 'COMPLETED', $5, $6, $7)",
            member.guild_id,
            member.user_id,
            kind.value,
            provider,
            utc_day(now),
            now,
            now,
        )

    async def status(self, member: Member) -> list[KindStatus]:
        """Return each kind's limit, use and renewal for the member today (a read: no lock)."""
        ids = await self._ids(member)
        now = self._clock()
        day = utc_day(now)
        rows = await self._db.fetch(
            "SELECT kind, scope, target_id, daily_limit FROM quota_limits WHERE guild_id = $1",
            member.guild_id,
        )
        # One statement: one snapshot of the usage and the grants.
        totals = await self._db.fetch(
            "SELECT 'used' AS what, kind, count(*) AS n FROM usage "  # noqa: S608 (constants)
            "WHERE guild_id = $1 AND user_id IN ($2, $3) AND day = $4 AND forgiven = 0 "
            f"AND (state = 'committed' OR ({_HELD.format(n=5)})) GROUP BY kind "
            "UNION ALL SELECT 'granted', kind, sum(amount) FROM quota_grants "
            "WHERE guild_id = $1 AND user_id IN ($2, $3) AND day = $4 GROUP BY kind",
            member.guild_id,
            member.user_id,
            ids.pseudonym,
            day,
            now - self._ttl,
        )
        counted = {(str(r["what"]), str(r["kind"])): int(r["n"]) for r in totals}
        statuses = []
        for kind in TaskKind:
            limits = [
                (str(r["scope"]), limit_target(r, ids), int(r["daily_limit"]))
                for r in rows
                if r["kind"] == kind.value
            ]
            limit, source = resolve_limit(limits, member, self._defaults[kind])
            used = counted.get(("used", kind.value), 0)
            granted = counted.get(("granted", kind.value), 0)
            statuses.append(kind_status(kind, limit, source, used, granted, now))
        return statuses

    async def expire(self) -> int:
        """Refund reservations older than the task lifetime (their task cannot still be running).

        Like a refund, one guarded UPDATE: a reservation another process settles at the same moment is
        settled once (the row lock makes the second UPDATE see it settled and skip it).
        """
        now = self._clock()
        status = await self._db.execute(
            "UPDATE usage SET state = 'refunded', outcome = 'EXPIRED', ended_at = $1 "
            "WHERE state = 'reserved' AND started_at <= $2 AND NOT EXISTS "
            "(SELECT 1 FROM jobs WHERE jobs.usage_id = usage.id AND jobs.finished_at IS NULL)",
            now,
            now - self._ttl,
        )
        return row_count(status)

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
                    "DELETE FROM quota_limits WHERE guild_id = $1 AND scope = 'user' AND target_id = $2 "
                    "AND kind = $3",
                    guild_id,
                    stand_in,
                    kind.value,
                )
            if limit is None:
                await conn.execute(
                    "DELETE FROM quota_limits WHERE guild_id = $1 AND scope = $2 AND target_id = $3 AND kind = $4",
                    guild_id,
                    scope,
                    target_id,
                    kind.value,
                )
            else:
                await conn.execute(
                    "INSERT INTO quota_limits (guild_id, scope, target_id, kind, daily_limit) "
                    "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (guild_id, scope, target_id, kind) "
                    "DO UPDATE SET daily_limit = excluded.daily_limit",
                    guild_id,
                    scope,
                    target_id,
                    kind.value,
                    limit,
                )
            await self._audit(
                conn,
                guild_id,
                actor_id,
                "set",
                {"scope": scope, "target_id": target_id, "kind": kind.value, "limit": limit},
            )

    async def grant(self, guild_id: int, user_id: int, kind: TaskKind, amount: int, actor_id: int) -> None:
        """Give a member extra tasks for today (UTC), ordered with the member's reservations (their lock)."""
        if amount <= 0:
            raise ValueError(f"a grant is one task or more, not {amount}")
        async with self._db.transaction() as conn:
            await conn.execute(_MEMBER_LOCK, user_id)
            day = utc_day(self._clock())
            await conn.execute(
                "INSERT INTO quota_grants (guild_id, user_id, kind, day, amount) VALUES ($1, $2, $3, $4, $5)",
                guild_id,
                user_id,
                kind.value,
                day,
                amount,
            )
            await self._audit(
                conn,
                guild_id,
                actor_id,
                "grant",
                {"user_id": user_id, "kind": kind.value, "amount": amount, "day": day},
            )

    async def reset_today(self, guild_id: int, user_id: int, kind: TaskKind | None, actor_id: int) -> int:
        """Forgive a member's spent tasks today (all kinds when kind is None); return how many.

        Under the member's lock: a reservation running beside it counts either every forgiven task or
        none of them, never half.
        """
        kinds = [kind.value] if kind else [k.value for k in TaskKind]
        async with self._db.transaction() as conn:
            await conn.execute(_MEMBER_LOCK, user_id)
            day = utc_day(self._clock())
            # Running tasks are not forgiven: they are still in flight and may yet be refunded.
            status = await conn.execute(
                "UPDATE usage SET forgiven = 1 WHERE guild_id = $1 AND user_id = $2 AND day = $3 "
                "AND state = 'committed' AND forgiven = 0 AND kind = ANY($4::text[])",
                guild_id,
                user_id,
                day,
                kinds,
            )
            forgiven = row_count(status)
            await self._audit(
                conn,
                guild_id,
                actor_id,
                "reset",
                {"user_id": user_id, "kind": kind.value if kind else "all", "forgiven": forgiven},
            )
            return forgiven

    async def usage_report(self, guild_id: int, days: int, *, top: int = 10) -> UsageReport:
        """Summarise a server's usage over the last `days` UTC days (today included)."""
        if days < 1:
            raise ValueError(f"a report covers one day or more, not {days}")
        until = datetime.fromtimestamp(self._clock(), UTC)
        first_day = until.date() - timedelta(days=days - 1)
        since = datetime.combine(first_day, datetime.min.time(), tzinfo=UTC)
        params = (guild_id, first_day.isoformat())
        # One snapshot for the three reads, as SQLite's one transaction gives.
        async with self._db.transaction() as conn:
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            summary = await conn.fetch(
                "SELECT kind, provider, "
                "count(*) FILTER (WHERE state = 'committed' AND outcome = 'COMPLETED') AS completed, "
                "count(*) FILTER (WHERE state IN ('committed', 'refunded') "
                "AND COALESCE(outcome, '') != 'COMPLETED') AS failed, "
                "count(*) FILTER (WHERE state = 'refunded') AS refunded, "
                "count(*) FILTER (WHERE state = 'cached') AS cached, "
                "count(*) FILTER (WHERE state = 'reserved') AS running "
                "FROM usage WHERE guild_id = $1 AND day >= $2 GROUP BY kind, provider ORDER BY kind, provider",
                *params,
            )
            spenders = await conn.fetch(
                "SELECT user_id, count(*) AS spent FROM usage WHERE guild_id = $1 AND day >= $2 "
                "AND state = 'committed' GROUP BY user_id ORDER BY spent DESC, user_id LIMIT $3",
                *params,
                top,
            )
            rows = await conn.fetch(
                f"SELECT {', '.join(USAGE_COLUMNS)} FROM usage "  # noqa: S608 (fixed column names)
                "WHERE guild_id = $1 AND day >= $2 ORDER BY id",
                *params,
            )
        lines = [usage_line_from_row(row) for row in summary]
        top_members = [(int(row["user_id"]), int(row["spent"])) for row in spenders]
        return UsageReport(guild_id, since, until, lines, top_members, [dict(row) for row in rows])

    async def prune(self, retention_days: int) -> int:
        """Delete usage rows older than the retention; return how many went."""
        cutoff = (
            datetime.fromtimestamp(self._clock(), UTC).date() - timedelta(days=retention_days)
        ).isoformat()
        async with self._db.transaction() as conn:
            # A row a job still points at (jobs.usage_id is a foreign key) stays until that job is
            # pruned; it goes at the next round.
            status = await conn.execute(
                "DELETE FROM usage WHERE day < $1 AND state != 'reserved' "
                "AND NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.usage_id = usage.id)",
                cutoff,
            )
            await conn.execute("DELETE FROM quota_grants WHERE day < $1", cutoff)
            # A forgotten member's stand-in id is only needed while their day's quota runs.
            today = utc_day(self._clock())
            await conn.execute(
                "UPDATE usage SET user_id = $1 WHERE user_id < 0 AND day < $2", FORGOTTEN, today
            )
            await conn.execute(
                "UPDATE quota_grants SET user_id = $1 WHERE user_id < 0 AND day < $2", FORGOTTEN, today
            )
            return row_count(status)

    async def forget_member(self, guild_id: int, user_id: int) -> int:
        """Take the member's id off their usage rows, grants, limits and audit lines in this server.

        Rows of today take the member's stand-in id, so today's use still counts toward today's quota (and
        a limit an admin set for them still holds); older rows keep no id at all. Returns how many usage
        rows changed. Under the member's lock, as a grant: a reservation beside it counts the rows under
        one id or the other, never under neither.
        """
        stand_in = (await self._ids(Member(guild_id=guild_id, user_id=user_id))).pseudonym
        async with self._db.transaction() as conn:
            await conn.execute(_MEMBER_LOCK, user_id)
            today = utc_day(self._clock())
            changed = 0
            for table in ("usage", "quota_grants"):
                for condition, new_id in (("day = $4", stand_in), ("day <> $4", FORGOTTEN)):
                    status = await conn.execute(
                        f"UPDATE {table} SET user_id = $1 WHERE guild_id = $2 AND user_id = $3 AND {condition}",  # noqa: S608
                        new_id,
                        guild_id,
                        user_id,
                        today,
                    )
                    changed += row_count(status) if table == "usage" else 0
            await conn.execute(
                "UPDATE quota_limits SET target_id = $1 WHERE guild_id = $2 AND scope = 'user' "
                "AND target_id = $3",
                stand_in,
                guild_id,
                user_id,
            )
            await conn.execute(
                "UPDATE audit SET actor_id = $1 WHERE guild_id = $2 AND actor_id = $3",
                stand_in,
                guild_id,
                user_id,
            )
            for row in await conn.fetch(
                "SELECT id, detail FROM audit WHERE guild_id = $1 AND detail LIKE $2",
                guild_id,
                f"%{user_id}%",
            ):
                await conn.execute(
                    "UPDATE audit SET detail = $1 WHERE id = $2",
                    forget_in_detail(str(row["detail"]), user_id, stand_in),
                    row["id"],
                )
            return changed

    async def audit_log(self, guild_id: int, limit: int = 50) -> list[dict[str, object]]:
        """Return the server's latest admin changes, newest first."""
        rows = await self._db.fetch(
            "SELECT actor_id, action, detail, at FROM audit WHERE guild_id = $1 ORDER BY id DESC LIMIT $2",
            guild_id,
            limit,
        )
        return [dict(row) for row in rows]

    # --- inside ------------------------------------------------------------------------------

    async def _settle(self, usage_id: int, state: str, outcome: str) -> bool:
        """Settle once, whichever process asks: one UPDATE guarded by the state.

        Two processes settling the same reservation (the one that drove the task and the one that took it
        over) both run this; PostgreSQL locks the row for the first, and the second, once it may go on,
        reads the row again, finds it no longer 'reserved' and changes nothing (False). A settle needs no
        member lock: a reservation running beside it sees the unit still held or already given back,
        and either only errs towards refusing, never towards granting one too many.
        """
        status = await self._db.execute(
            "UPDATE usage SET state = $1, outcome = $2, ended_at = $3 WHERE id = $4 AND state = 'reserved'",
            state,
            outcome,
            self._clock(),
            usage_id,
        )
        return row_count(status) == 1

    async def _limits(self, guild_id: int, kind: TaskKind, ids: MemberIds) -> list[tuple[str, int, int]]:
        rows = await self._db.fetch(
            "SELECT scope, target_id, daily_limit FROM quota_limits WHERE guild_id = $1 AND kind = $2",
            guild_id,
            kind.value,
        )
        return [(str(r["scope"]), limit_target(r, ids), int(r["daily_limit"])) for r in rows]

    async def _ids(self, member: Member) -> MemberIds:
        """Return the member's id and the stand-in id their rows took if they asked to be forgotten today.

        The key is made once per database: the first process to need it inserts it, and every process
        (that one included) then reads the one that is kept.
        """
        if self._secret is None:
            await self._db.execute(
                "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
                PSEUDONYM_KEY,
                secrets.token_hex(32),
            )
            stored = await self._db.get_meta(PSEUDONYM_KEY)
            if stored is None:
                raise RuntimeError("the database kept no pseudonym key")
            self._secret = bytes.fromhex(stored)
        return member_ids(self._secret, member)

    async def _audit(
        self, conn: asyncpg.Connection, guild_id: int, actor_id: int, action: str, detail: dict[str, object]
    ) -> None:
        await write_audit(conn, guild_id, actor_id, action, detail, self._clock())


async def write_audit(
    conn: asyncpg.Connection, guild_id: int, actor_id: int, action: str, detail: dict[str, object], at: float
) -> None:
    """Add one row to the audit table (quota and rules changes alike), inside the change's transaction."""
    await conn.execute(
        "INSERT INTO audit (guild_id, actor_id, action, detail, at) VALUES ($1, $2, $3, $4, $5)",
        guild_id,
        actor_id,
        action,
        json.dumps(detail, sort_keys=True),
        at,
    )
