"""A server's rules in PostgreSQL: what each channel allows, and the words no prompt may contain."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import asyncpg

from bot.domain.blocklist import phrase_key
from bot.domain.rules import ChannelRule
from bot.store.postgres.database import PgDatabase, row_count
from bot.store.postgres.quotas import write_audit
from bot.store.rows import channel_rule_detail, channel_rule_from_row, log_rules_change


class PgRules:
    """Channel rules and the blocklist; every change is one audit row and one log line (as in SQLite)."""

    def __init__(self, db: PgDatabase, *, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock

    async def channel_rules(self, guild_id: int) -> dict[int, ChannelRule]:
        rows = await self._db.fetch(
            "SELECT channel_id, describe, imagine, spoilers FROM channel_rules WHERE guild_id = $1",
            guild_id,
        )
        return {int(row["channel_id"]): channel_rule_from_row(row) for row in rows}

    async def set_channel_rule(self, guild_id: int, rule: ChannelRule, actor_id: int) -> None:
        async with self._db.transaction() as conn:
            await conn.execute(
                "INSERT INTO channel_rules (guild_id, channel_id, describe, imagine, spoilers) "
                "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (guild_id, channel_id) DO UPDATE SET "
                "describe = excluded.describe, imagine = excluded.imagine, spoilers = excluded.spoilers",
                guild_id,
                rule.channel_id,
                int(rule.describe),
                int(rule.imagine),
                rule.spoilers.value,
            )
            await self._audit(
                conn,
                guild_id,
                actor_id,
                "rules-channel",
                channel_rule_detail(rule),
            )

    async def blocklist(self, guild_id: int) -> list[tuple[str, str]]:
        """Return the server's blocked phrases as (matched form, as the admin wrote it), in the order added."""
        rows = await self._db.fetch(
            "SELECT phrase, written FROM blocklist WHERE guild_id = $1 ORDER BY added_at, phrase", guild_id
        )
        return [(str(row["phrase"]), str(row["written"])) for row in rows]

    async def add_blocked(self, guild_id: int, phrases: Sequence[str], actor_id: int) -> tuple[int, int]:
        """Add phrases (as written); return how many were new, and how many the list now has."""
        keyed = {phrase_key(phrase): phrase for phrase in phrases if phrase_key(phrase)}
        async with self._db.transaction() as conn:
            added = 0
            for key, written in keyed.items():
                status = await conn.execute(
                    "INSERT INTO blocklist (guild_id, phrase, written, added_at) VALUES ($1, $2, $3, $4) "
                    "ON CONFLICT (guild_id, phrase) DO NOTHING",
                    guild_id,
                    key,
                    written,
                    self._clock(),
                )
                added += row_count(status)
            await self._audit(conn, guild_id, actor_id, "blocklist-add", {"phrases": sorted(keyed)})
            return added, await _blocked(conn, guild_id)

    async def remove_blocked(self, guild_id: int, phrases: Sequence[str], actor_id: int) -> tuple[int, int]:
        """Remove phrases (matched in their normalised form); return how many went, and how many are left."""
        keys = sorted({phrase_key(phrase) for phrase in phrases} - {""})
        async with self._db.transaction() as conn:
            status = await conn.execute(
                "DELETE FROM blocklist WHERE guild_id = $1 AND phrase = ANY($2::text[])", guild_id, keys
            )
            await self._audit(conn, guild_id, actor_id, "blocklist-remove", {"phrases": keys})
            return row_count(status), await _blocked(conn, guild_id)

    async def _audit(
        self, conn: asyncpg.Connection, guild_id: int, actor_id: int, action: str, detail: dict[str, object]
    ) -> None:
        await write_audit(conn, guild_id, actor_id, action, detail, self._clock())
        log_rules_change(guild_id, actor_id, action, detail)


async def _blocked(conn: asyncpg.Connection, guild_id: int) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM blocklist WHERE guild_id = $1", guild_id))
