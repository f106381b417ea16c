"""What /quota and /quota-admin show."""

from __future__ import annotations

from collections.abc import Sequence

import discord

from bot.providers.base import TaskKind
from bot.store.quotas import UNLIMITED, KindStatus, UsageReport
from bot.ui.text import KIND_NAMES, provider_name, relative_time

NEEDS_MANAGE_SERVER = "Only members with the Manage Server permission can change quotas here."
NEEDS_ROLE = "Pick the role this limit is for (the role option)."
NEEDS_USER = "Pick the member this limit is for (the user option)."
_SCOPE_WORDS = {"server": "everyone on this server", "role": "the role <@&{id}>", "user": "<@{id}>"}


def quota_embed(statuses: Sequence[KindStatus], running: int) -> discord.Embed:
    embed = discord.Embed(title="Your quota today", colour=discord.Colour.blurple())
    for status in statuses:
        if status.limit == UNLIMITED:
            value = f"{status.used} used · unlimited"
        elif status.limit <= 0:
            value = "switched off for you"
        else:
            value = f"{status.used} used · **{status.left} left** of {status.limit}\nrenews {relative_time(status.renews_at)}"
        embed.add_field(name=KIND_NAMES[status.kind], value=value, inline=False)
    embed.set_footer(text=f"Running now: {running}")
    return embed


def limit_set(scope: str, target_id: int, kind: TaskKind, limit: int | None) -> str:
    who = _SCOPE_WORDS[scope].format(id=target_id)
    if limit is None:
        return f"Removed the {kind.value} limit for {who}; the next rule applies."
    amount = "unlimited" if limit == UNLIMITED else ("blocked" if limit == 0 else f"{limit} per day")
    return f"{KIND_NAMES[kind]} for {who}: {amount}."


def granted(user_id: int, kind: TaskKind, amount: int) -> str:
    return f"Granted <@{user_id}> {amount} extra {kind.value} tasks for today (UTC)."


def reset_done(user_id: int, forgiven: int) -> str:
    return f"Reset <@{user_id}>'s usage today: {forgiven} spent tasks given back."


def usage_embed(report: UsageReport, period: str) -> discord.Embed:
    embed = discord.Embed(title=f"Usage · {period}", colour=discord.Colour.blurple())
    embed.description = f"From {report.since:%Y-%m-%d} to {report.until:%Y-%m-%d %H:%M} UTC"
    if not report.lines:
        embed.add_field(name="Tasks", value="none yet", inline=False)
    for line in report.lines:
        embed.add_field(
            name=f"{line.kind} · {provider_name(line.provider)}",
            value=f"{line.completed} spent · {line.failed} failed or refunded · {line.cached} from cache",
        )
    if report.top_members:
        top = "\n".join(
            f"{rank}. <@{user}> — {count}" for rank, (user, count) in enumerate(report.top_members, 1)
        )
        embed.add_field(name="Top members", value=top, inline=False)
    embed.set_footer(text="Every row is in the attached CSV")
    return embed
