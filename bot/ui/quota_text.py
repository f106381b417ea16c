"""What /quota and /quota-admin show: the member's standing, the admins' replies, the usage report."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from datetime import UTC, datetime

import discord

from bot.domain.quota import UNLIMITED, USAGE_COLUMNS, KindStatus, UsageReport
from bot.domain.tasks import TaskKind
from bot.ui.words import KIND_ABILITIES, KIND_NAMES, N_, P_, Words, relative_time

KIND_CHOICE_NAMES = {
    TaskKind.DESCRIBE: N_("describe (image to prompt)"),
    TaskKind.IMAGINE: N_("imagine (image generation)"),
}
PERIOD_TITLES = {"today": N_("today"), "7 days": N_("last 7 days"), "30 days": N_("last 30 days")}
_SCOPE_WORDS = {
    "server": N_("everyone on this server"),
    "role": N_("the role <@&{id}>"),
    "user": N_("<@{id}>"),
}
# TRANSLATORS: an admin granted a member extra tasks; {user} is a mention, {now_left} is "3 left" or "unlimited".
GRANTED = {
    TaskKind.DESCRIBE: P_(
        "Granted <@{user}> {amount} extra description for today (UTC); they now have {now_left}.",
        "Granted <@{user}> {amount} extra descriptions for today (UTC); they now have {now_left}.",
        count="amount",
    ),
    TaskKind.IMAGINE: P_(
        "Granted <@{user}> {amount} extra generation for today (UTC); they now have {now_left}.",
        "Granted <@{user}> {amount} extra generations for today (UTC); they now have {now_left}.",
        count="amount",
    ),
}
# An admin gave a member back today's spent tasks: of one kind, or of every kind (None).
RESET = {
    TaskKind.DESCRIBE: P_(
        "Reset <@{user}>'s usage today: {forgiven} spent description given back.",
        "Reset <@{user}>'s usage today: {forgiven} spent descriptions given back.",
        count="forgiven",
    ),
    TaskKind.IMAGINE: P_(
        "Reset <@{user}>'s usage today: {forgiven} spent generation given back.",
        "Reset <@{user}>'s usage today: {forgiven} spent generations given back.",
        count="forgiven",
    ),
    None: P_(
        "Reset <@{user}>'s usage today: {forgiven} spent task given back.",
        "Reset <@{user}>'s usage today: {forgiven} spent tasks given back.",
        count="forgiven",
    ),
}
_KIND_BY_VALUE = {kind.value: kind for kind in TaskKind}
# Discord allows 25 fields per embed; the report keeps room for the top members.
_MAX_LINE_FIELDS = 20


def quota_embed(
    words: Words, statuses: Sequence[KindStatus], running: int, max_running: int, waiting: int = 0
) -> discord.Embed:
    """Show a member what each kind has left today, when it renews, and what is running."""
    embed = discord.Embed(title=words.say(N_("Your quota today")), colour=discord.Colour.blurple())
    for status in statuses:
        if status.limit == UNLIMITED:
            value = words.say(
                P_("{used} used · unlimited", "{used} used · unlimited", count="used"), used=status.used
            )
        elif status.limit <= 0:
            value = words.say(N_("Switched off for you on this server."))
        else:
            extra = (
                words.say(
                    P_(" (with {granted} granted today)", " (with {granted} granted today)", count="granted"),
                    granted=status.granted,
                )
                if status.granted
                else ""
            )
            # TRANSLATORS: {renews} is a Discord timestamp each member's app shows as "in 5 hours".
            value = words.say(
                P_(
                    "{used} used · **{left} left** of {limit}{extra}\nRenews {renews}",
                    "{used} used · **{left} left** of {limit}{extra}\nRenews {renews}",
                    count="left",
                ),
                used=status.used,
                left=status.left,
                limit=status.limit,
                extra=extra,
                renews=relative_time(status.renews_at),
            )
        embed.add_field(name=words.kind(status.kind), value=value, inline=False)
    now = words.say(
        P_(
            "{running} of at most {max_running} at once",
            "{running} of at most {max_running} at once",
            count="max_running",
        ),
        running=running,
        max_running=max_running,
    )
    if waiting:
        now += words.say(
            P_(" · {waiting} waiting in line", " · {waiting} waiting in line", count="waiting"),
            waiting=waiting,
        )
    embed.add_field(name=words.say(N_("Running now")), value=now, inline=False)
    embed.set_footer(text=words.say(N_("Days run from midnight to midnight UTC")))
    return embed


_TOP_MEMBER = P_("{rank}. <@{user}> — {count} spent", "{rank}. <@{user}> — {count} spent")
# Ids of 0 and below belong to members who asked to be forgotten (bot.domain.privacy).
_FORGOTTEN_MEMBER = P_(
    "{rank}. A member who asked to be forgotten — {count} spent",
    "{rank}. A member who asked to be forgotten — {count} spent",
)


def limit_set(words: Words, scope: str, target_id: int, kind: TaskKind, limit: int | None) -> str:
    who = words.say(_SCOPE_WORDS[scope], id=target_id)
    if limit is None:
        return words.say(
            N_("Removed the {kind} limit for {who}; the next rule applies."),
            kind=words.say(KIND_ABILITIES[kind]),
            who=who,
        )
    if limit == UNLIMITED:
        amount = words.say(N_("unlimited"))
    elif limit == 0:
        amount = words.say(N_("blocked"))
    else:
        amount = words.say(P_("{limit} per day (UTC)", "{limit} per day (UTC)", count="limit"), limit=limit)
    return words.say(N_("{kind} for {who}: {amount}."), kind=words.kind(kind), who=who, amount=amount)


def granted(words: Words, user_id: int, kind: TaskKind, amount: int, left: int | None) -> str:
    now_left = (
        words.say(N_("unlimited"))
        if left is None
        else words.say(P_("{left} left", "{left} left", count="left"), left=left)
    )
    return words.say(GRANTED[kind], user=user_id, amount=amount, now_left=now_left)


def reset_done(words: Words, user_id: int, kind: TaskKind | None, forgiven: int) -> str:
    return words.say(RESET[kind], user=user_id, forgiven=forgiven)


def period_title(words: Words, period: str) -> str:
    """Say a usage report's period ("last 7 days"); one without a title of its own is shown as it is."""
    return words.say(PERIOD_TITLES[period]) if period in PERIOD_TITLES else period


def usage_embed(words: Words, report: UsageReport, period: str) -> discord.Embed:
    """Sum up a server's usage: by kind and provider, failures, and the members who spent most."""
    title = period_title(words, period)
    embed = discord.Embed(
        title=words.say(N_("Usage · {period}"), period=title), colour=discord.Colour.blurple()
    )
    completed = sum(line.completed for line in report.lines)
    failed = sum(line.failed for line in report.lines)
    cached = sum(line.cached for line in report.lines)
    embed.description = words.say(
        N_(
            "From {since} to {until} UTC\n"
            "**{completed}** completed · **{failed}** failed · **{cached}** from cache"
        ),
        since=f"{report.since:%Y-%m-%d}",
        until=f"{report.until:%Y-%m-%d %H:%M}",
        completed=completed,
        failed=failed,
        cached=cached,
    )
    if not report.lines:
        embed.add_field(
            name=words.say(N_("Tasks")), value=words.say(N_("None in this period.")), inline=False
        )
    for line in report.lines[:_MAX_LINE_FIELDS]:
        value = words.say(
            N_("{completed} completed · {failed} failed ({refunded} refunded) · {cached} from cache"),
            completed=line.completed,
            failed=line.failed,
            refunded=line.refunded,
            cached=line.cached,
        )
        if line.running:
            value += words.say(
                P_(" · {running} running", " · {running} running", count="running"), running=line.running
            )
        kind = _KIND_BY_VALUE.get(line.kind)
        kind_name = words.say(KIND_NAMES[kind]) if kind else line.kind
        embed.add_field(name=f"{kind_name} · {words.provider(line.provider)}", value=value, inline=False)
    if report.top_members:
        top = "\n".join(
            words.say(
                _TOP_MEMBER if user > 0 else _FORGOTTEN_MEMBER,
                rank=rank,
                user=user,
                count=count,
            )
            for rank, (user, count) in enumerate(report.top_members, 1)
        )
        embed.add_field(name=words.say(N_("Top members")), value=top, inline=False)
    embed.set_footer(text=words.say(N_("Every task of the period is in the attached CSV")))
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
