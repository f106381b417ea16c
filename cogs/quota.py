"""/quota for members and /quota-admin for server admins (Manage Server)."""

from __future__ import annotations

import io
import logging
from typing import Literal

import discord
from discord import app_commands
from discord.app_commands import locale_str
from discord.ext import commands

from bot.discord.client import ImageBot
from bot.discord.interactions import managed_server, member_of
from bot.domain.errors import BadInput, Refusal
from bot.domain.quota import UNLIMITED, LimitScope, Member
from bot.domain.tasks import TaskKind
from bot.ui import quota_text, usage_chart

log = logging.getLogger(__name__)

# Choice names are the English templates; the command translator says them in each member's language.
KIND_CHOICES = [
    app_commands.Choice(name=locale_str(quota_text.KIND_CHOICE_NAMES[kind]), value=kind.value)
    for kind in TaskKind
]
PERIODS = {"today": 1, "7 days": 7, "30 days": 30}


class QuotaCog(commands.Cog):
    """Quotas: what members have left, and the admins' controls."""

    admin = app_commands.Group(
        name="quota-admin",
        description=locale_str("Change limits, grant extra tasks, reset members and see usage"),
        default_permissions=discord.Permissions(manage_guild=True),
        guild_only=True,
    )

    def __init__(self, bot: ImageBot) -> None:
        self.bot = bot

    @app_commands.command(
        name="quota", description=locale_str("See how many tasks you have left today and when they renew")
    )
    async def quota(self, interaction: discord.Interaction) -> None:
        quotas = self.bot.core.quotas
        member = member_of(interaction)
        statuses = await quotas.status(member)
        running, waiting = await self.bot.core.jobs.tasks_of(member.user_id)
        # The per-member cap is the runner's (MAX_INFLIGHT_PER_USER); the ledger only counts the quota.
        embed = quota_text.quota_embed(
            self.bot.words_for(interaction),
            statuses,
            running,
            self.bot.settings.max_inflight_per_user,
            waiting,
        )
        await interaction.response.send_message(embed=embed, ephemeral=True)

    @admin.command(name="set", description=locale_str("Set a daily limit for the server, a role or a member"))
    @app_commands.describe(
        scope=locale_str("Who the limit is for"),
        kind=locale_str("Which kind of task"),
        limit=locale_str("Tasks per UTC day; 0 blocks, -1 is unlimited"),
        role=locale_str("The role (when scope is role)"),
        user=locale_str("The member (when scope is user)"),
        clear=locale_str("Remove this limit instead, so the next rule applies"),
    )
    @app_commands.choices(kind=KIND_CHOICES)
    async def set_limit(
        self,
        interaction: discord.Interaction,
        scope: Literal["server", "role", "user"],
        kind: app_commands.Choice[str],
        limit: app_commands.Range[int, UNLIMITED, 100_000] | None = None,
        role: discord.Role | None = None,
        user: discord.User | None = None,
        clear: bool = False,
    ) -> None:
        guild_id = managed_server(interaction, Refusal.NEEDS_MANAGE_SERVER)
        if limit is None and not clear:
            raise BadInput(Refusal.NEEDS_LIMIT)
        target_id = _target_for(scope, guild_id, role, user)
        task_kind = TaskKind(kind.value)
        new_limit = None if clear else limit
        await self.bot.core.quotas.set_limit(
            guild_id, scope, target_id, task_kind, new_limit, interaction.user.id
        )
        sentence = quota_text.limit_set(
            self.bot.words_for(interaction), scope, target_id, task_kind, new_limit
        )
        await interaction.response.send_message(sentence, ephemeral=True)

    @admin.command(name="grant", description=locale_str("Give a member extra tasks for today"))
    @app_commands.describe(
        user=locale_str("The member"),
        kind=locale_str("Which kind of task"),
        amount=locale_str("How many extra tasks"),
    )
    @app_commands.choices(kind=KIND_CHOICES)
    async def grant(
        self,
        interaction: discord.Interaction,
        user: discord.User,
        kind: app_commands.Choice[str],
        amount: app_commands.Range[int, 1, 10_000],
    ) -> None:
        guild_id = managed_server(interaction, Refusal.NEEDS_MANAGE_SERVER)
        task_kind = TaskKind(kind.value)
        await self.bot.core.quotas.grant(guild_id, user.id, task_kind, amount, interaction.user.id)
        statuses = await self.bot.core.quotas.status(_member_from(guild_id, user))
        left = next(status.left for status in statuses if status.kind is task_kind)
        await interaction.response.send_message(
            quota_text.granted(self.bot.words_for(interaction), user.id, task_kind, amount, left),
            ephemeral=True,
        )

    @admin.command(name="reset", description=locale_str("Give a member back today's spent tasks"))
    @app_commands.describe(user=locale_str("The member"), kind=locale_str("Which kind (default: all)"))
    @app_commands.choices(kind=KIND_CHOICES)
    async def reset(
        self,
        interaction: discord.Interaction,
        user: discord.User,
        kind: app_commands.Choice[str] | None = None,
    ) -> None:
        guild_id = managed_server(interaction, Refusal.NEEDS_MANAGE_SERVER)
        task_kind = TaskKind(kind.value) if kind else None
        forgiven = await self.bot.core.quotas.reset_today(guild_id, user.id, task_kind, interaction.user.id)
        await interaction.response.send_message(
            quota_text.reset_done(self.bot.words_for(interaction), user.id, task_kind, forgiven),
            ephemeral=True,
        )

    @admin.command(
        name="usage", description=locale_str("See this server's usage: totals, failures and top members")
    )
    @app_commands.describe(period=locale_str("How far back (default: today)"))
    async def usage(
        self, interaction: discord.Interaction, period: Literal["today", "7 days", "30 days"] = "today"
    ) -> None:
        guild_id = managed_server(interaction, Refusal.NEEDS_MANAGE_SERVER)
        # A 30-day report of a busy server can take a moment: acknowledge first.
        await interaction.response.defer(ephemeral=True, thinking=True)
        report = await self.bot.core.quotas.usage_report(guild_id, PERIODS[period])
        csv_file = discord.File(
            io.BytesIO(quota_text.usage_csv(report.rows)), filename=quota_text.usage_filename(period)
        )
        # The chart is drawn in a worker thread; an empty period gets a sentence instead.
        chart = await usage_chart.usage_chart(report, self.bot.words_for(interaction), period)
        chart_files = [discord.File(io.BytesIO(chart.png), chart.filename)] if chart.png else []
        await interaction.followup.send(
            content=chart.note or discord.utils.MISSING,
            embed=quota_text.usage_embed(self.bot.words_for(interaction), report, period),
            files=[csv_file, *chart_files],
            ephemeral=True,
        )


def _target_for(
    scope: LimitScope, guild_id: int, role: discord.Role | None, user: discord.User | None
) -> int:
    if scope == "server":
        return guild_id
    if scope == "role":
        if role is None:
            raise BadInput(Refusal.NEEDS_ROLE)
        return role.id
    if user is None:
        raise BadInput(Refusal.NEEDS_USER)
    return user.id


def _member_from(guild_id: int, user: discord.User | discord.Member) -> Member:
    """Return the quota member for a user picked in an option (a Member in a server, with roles)."""
    roles = tuple(role.id for role in user.roles) if isinstance(user, discord.Member) else ()
    return Member(guild_id=guild_id, user_id=user.id, role_ids=roles)


async def setup(bot: ImageBot) -> None:
    await bot.add_cog(QuotaCog(bot))
