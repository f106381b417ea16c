"""/forget-me: a member has the bot delete what it keeps about them on a server, after a confirmation."""

from __future__ import annotations

import re
from typing import Any, cast

import discord
from discord import app_commands
from discord.app_commands import locale_str
from discord.ext import commands

from bot.discord.client import ImageBot
from bot.discord.interactions import answering_errors, member_of
from bot.ui.views import FORGET_CUSTOM_ID, forget_view
from bot.ui.words import FORGET_ASK, FORGOTTEN


class ForgetButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=re.escape(FORGET_CUSTOM_ID)):
    """The confirmation: forgets whoever clicks it (the message is theirs alone); works after restarts."""

    def __init__(self) -> None:
        super().__init__(discord.ui.Button(custom_id=FORGET_CUSTOM_ID))

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> ForgetButton:
        return cls()

    async def callback(self, interaction: discord.Interaction) -> None:
        bot = cast("ImageBot", interaction.client)
        await answering_errors(interaction, bot.words_for(interaction), _forget(bot, interaction))


async def _forget(bot: ImageBot, interaction: discord.Interaction) -> None:
    await interaction.response.defer()
    forgotten = await bot.core.service.forget(member_of(interaction))
    words = bot.words_for(interaction)
    sentence = words.say(
        FORGOTTEN,
        tasks=forgotten.tasks,
        images=forgotten.images,
        prompts=forgotten.prompts,
        usage=forgotten.usage,
    )
    await interaction.edit_original_response(content=sentence, view=None)


class PrivacyCog(commands.Cog):
    """What a member can ask the bot to forget."""

    def __init__(self, bot: ImageBot) -> None:
        self.bot = bot

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(ForgetButton)

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(ForgetButton)

    @app_commands.command(
        name="forget-me",
        description=locale_str("Delete what the bot keeps about you on this server (asks first)"),
    )
    @app_commands.guild_only()
    async def forget_me(self, interaction: discord.Interaction) -> None:
        words = self.bot.words_for(interaction)
        await interaction.response.send_message(
            words.say(FORGET_ASK), view=forget_view(words), ephemeral=True
        )


async def setup(bot: ImageBot) -> None:
    await bot.add_cog(PrivacyCog(bot))
