"""What /quota and /quota-admin show: the member's standing, the admins' replies, the usage report."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from datetime import UTC, datetime

import discord

from bot.providers.base import TaskKind
from bot.store.quotas import UNLIMITED, USAGE_COLUMNS, KindStatus, UsageReport
from bot.ui.text import DM_ONLY_SERVER, KIND_NAMES, KIND_UNITS, provider_name, relative_time

NEEDS_MANAGE_SERVER = "Only members with the Manage Server permission can change quotas here."
SERVERS_ONLY = DM_ONLY_SERVER
NEEDS_ROLE = "Pick the role this limit is for (the role option)."
NEEDS_USER = "Pick the member this limit is for (the user option)."
NEEDS_LIMIT = "Give a limit (0 blocks, -1 is unlimited), or set clear to remove this rule."
KIND_CHOICE_NAMES = {
    TaskKind.DESCRIBE: "describe (image to prompt)",
    TaskKind.IMAGINE: "imagine (image generation)",
}
PERIOD_TITLES = {"today": "today", "7 days": "last 7 days", "30 days": "last 30 days"}
_SCOPE_WORDS = {"server": "everyone on this server", "role": "the role <@&{id}>", "user": "<@{id}>"}
_KIND_BY_VALUE = {kind.value: name for kind, name in KIND_NAMES.items()}
# Discord allows 25 fields per embed; the report keeps room for the top members.
_MAX_LINE_FIELDS = 20


def quota_embed(statuses: Sequence[KindStatus], running: int, max_running: int) -> discord.Embed:
    """Show a member what each kind has left today, when it renews, and what is running."""
    embed = discord.Embed(title="Your quota today", colour=discord.Colour.blurple())
    for status in statuses:
        if status.limit == UNLIMITED:
            value = f"{status.used} used · unlimited"
        elif status.limit <= 0:
            value = "Switched off for you on this server."
        else:
            extra = f" (with {status.granted} granted today)" if status.granted else ""
            value = (
                f"{status.used} used · **{status.left} left** of {status.limit}{extra}\n"
                f"Renews {relative_time(status.renews_at)}"
            )
        embed.add_field(name=KIND_NAMES[status.kind], value=value, inline=False)
    embed.add_field(name="Running now", value=f"{running} of at most {max_running} at once", inline=False)
    embed.set_footer(text="Days run from midnight to midnight UTC")
    return embed


def limit_set(scope: str, target_id: int, kind: TaskKind, limit: int | None) -> str:
    who = _SCOPE_WORDS[scope].format(id=target_id)
    if limit is None:
        return f"Removed the {KIND_NAMES[kind].lower()} limit for {who}; the next rule applies."
    amount = "unlimited" if limit == UNLIMITED else ("blocked" if limit == 0 else f"{limit} per day (UTC)")
    return f"{KIND_NAMES[kind]} for {who}: {amount}."


def granted(user_id: int, kind: TaskKind, amount: int, left: int | None) -> str:
    now_left = "unlimited" if left is None else f"{left} left"
    return (
        f"Granted <@{user_id}> {amount} extra {KIND_UNITS[kind]} for today (UTC); they now have {now_left}."
    )


def reset_done(user_id: int, kind: TaskKind | None, forgiven: int) -> str:
    what = KIND_UNITS[kind] if kind else "tasks"
    return f"Reset <@{user_id}>'s usage today: {forgiven} spent {what} given back."


def usage_embed(report: UsageReport, period: str) -> discord.Embed:
    """Sum up a server's usage: by kind and provider, failures, and the members who spent most."""
    embed = discord.Embed(
        title=f"Usage · {PERIOD_TITLES.get(period, period)}", colour=discord.Colour.blurple()
    )
    completed = sum(line.completed for line in report.lines)
    failed = sum(line.failed for line in report.lines)
    cached = sum(line.cached for line in report.lines)
    embed.description = (
        f"From {report.since:%Y-%m-%d} to {report.until:%Y-%m-%d %H:%M} UTC\n"
        f"**{completed}** completed · **{failed}** failed · **{cached}** from cache"
    )
    if not report.lines:
        embed.add_field(name="Tasks", value="None in this period.", inline=False)
    for line in report.lines[:_MAX_LINE_FIELDS]:
        value = (
            f"{line.completed} completed · {line.failed} failed ({line.refunded} refunded) · "
            f"{line.cached} from cache"
        )
        if line.running:
            value += f" · {line.running} running"
        kind = _KIND_BY_VALUE.get(line.kind, line.kind)
        embed.add_field(name=f"{kind} · {provider_name(line.provider)}", value=value, inline=False)
    if report.top_members:
        top = "\n".join(
            f"{rank}. <@{user}> — {count} spent" for rank, (user, count) in enumerate(report.top_members, 1)
        )
        embed.add_field(name="Top members", value=top, inline=False)
    embed.set_footer(text="Every task of the period is in the attached CSV")
    return embed


def usage_filename(period: str) -> str:
    return f"usage-{period.replace(' ', '')}.csv"


def usage_csv(rows: Sequence[dict[str, object]]) -> bytes:
    """Write the report's rows as CSV, times as ISO 8601 UTC so spreadsheets read them."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=USAGE_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(
            {**row, "started_at": _iso(row.get("started_at")), "ended_at": _iso(row.get("ended_at"))}
        )
    return buffer.getvalue().encode()


def _iso(value: object) -> str:
    if not isinstance(value, int | float):
        return ""
    return datetime.fromtimestamp(value, UTC).isoformat(timespec="seconds")
