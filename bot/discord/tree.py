"""The command tree: every app command error becomes one short reply in the member's language."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import discord
from discord import app_commands

from bot.discord.interactions import reply
from bot.domain.errors import BotError, Refusal
from bot.ui.words import SHUTTING_DOWN

if TYPE_CHECKING:
    # Named only in the base class's string subscript below, which linters do not read as a use.
    from bot.discord.client import ImageBot  # noqa: F401

log = logging.getLogger(__name__)


class BotTree(app_commands.CommandTree["ImageBot"]):
    """Refuse commands while the bot stops; turn every error into one sentence."""

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        if not self.client.core.runner.accepting:
            await reply(interaction, self.client.words_for(interaction).say(SHUTTING_DOWN))
            return False
        return True

    async def on_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        words = self.client.words_for(interaction)
        original = error.original if isinstance(error, app_commands.CommandInvokeError) else error
        if isinstance(original, BotError):
            sentence = words.error(original)
        elif isinstance(original, app_commands.NoPrivateMessage):
            sentence = words.refusal(Refusal.SERVERS_ONLY)
        elif isinstance(original, app_commands.MissingPermissions | app_commands.CheckFailure):
            sentence = words.refusal(Refusal.COMMAND_DISABLED)
        else:
            log.error(
                "command %s failed", interaction.command and interaction.command.name, exc_info=original
            )
            sentence = words.error(original)
        await reply(interaction, sentence)
