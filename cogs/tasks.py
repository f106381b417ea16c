"""The Cancel button under every queued or running task, and the "Cancel anyway" that confirms it."""

from __future__ import annotations

from typing import cast

import discord
from discord.ext import commands

from bot.core.runner import Cancelled
from bot.discord.client import ImageBot
from bot.discord.interactions import answering_errors, member_of
from bot.ui.views import JobButton, cancel_anyway_view, job_button_template
from bot.ui.words import CANCEL_WILL_COUNT, CANCELLED_FREE, CANCELLED_SPENT


class CancelButton(JobButton, template=job_button_template("cancel", "cancelsure")):
    """Cancel (on the task's message) and Cancel anyway (on the private confirmation); work after restarts."""

    async def callback(self, interaction: discord.Interaction) -> None:
        bot = cast("ImageBot", interaction.client)
        words = bot.words_for(interaction)
        await answering_errors(interaction, words, self._cancel(bot, interaction))

    async def _cancel(self, bot: ImageBot, interaction: discord.Interaction) -> None:
        sure = self.action == "cancelsure"
        words = bot.words_for(interaction)
        if sure:
            # The confirmation is the member's own private message: it becomes the answer.
            await interaction.response.defer()
        else:
            await interaction.response.defer(ephemeral=True, thinking=True)
        permissions = interaction.permissions
        outcome, job = await bot.core.service.cancel(
            self.job_id,
            member_of(interaction),
            may_manage=permissions.manage_messages or permissions.administrator,
            spend=sure,
        )
        provider = words.provider(job.provider)
        if outcome is Cancelled.NEEDS_CONSENT:
            await interaction.followup.send(
                words.say(CANCEL_WILL_COUNT, provider=provider),
                view=cancel_anyway_view(self.job_id, words),
                ephemeral=True,
            )
            return
        sentence = (
            words.say(CANCELLED_FREE)
            if outcome is Cancelled.FREE
            else words.say(CANCELLED_SPENT, provider=provider)
        )
        if sure:
            await interaction.edit_original_response(content=sentence, view=None)
        else:
            await interaction.followup.send(sentence, ephemeral=True)


class TasksCog(commands.Cog):
    """What a member can do with a task that has not ended."""

    def __init__(self, bot: ImageBot) -> None:
        self.bot = bot

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(CancelButton)

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(CancelButton)


async def setup(bot: ImageBot) -> None:
    await bot.add_cog(TasksCog(bot))
