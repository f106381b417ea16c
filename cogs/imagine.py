"""/imagine and the "Edit image" message menu: generation and editing through Gemini 2.5 Flash."""

from __future__ import annotations

import logging

import discord
from discord import app_commands
from discord.ext import commands

from bot.client import ImageBot
from bot.errors import BadInput
from bot.inputs import load_attachment, load_source, message_images
from bot.interactions import ReportTarget, member_of, missing_channel_permissions, reply
from bot.service import MAX_PROMPT_LENGTH, MAX_REFERENCES
from bot.ui import input_text, text
from bot.ui.views import PromptModal

log = logging.getLogger(__name__)


class ImagineCog(commands.Cog):
    """Image generation and editing."""

    def __init__(self, bot: ImageBot) -> None:
        self.bot = bot
        # Context menus cannot be decorators inside a cog: build it here, remove it on unload.
        self.edit_menu = app_commands.ContextMenu(name="Edit image", callback=self.edit_message)
        self.bot.tree.add_command(self.edit_menu)

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.edit_menu.name, type=self.edit_menu.type)

    @app_commands.command(
        name="imagine", description="Generate an image from a prompt, or edit up to three images"
    )
    @app_commands.describe(
        prompt="What to generate, or how to change the reference images",
        reference1="An image to edit or take from",
        reference2="A second reference image",
        reference3="A third reference image",
    )
    async def imagine(
        self,
        interaction: discord.Interaction,
        prompt: app_commands.Range[str, 1, MAX_PROMPT_LENGTH],
        reference1: discord.Attachment | None = None,
        reference2: discord.Attachment | None = None,
        reference3: discord.Attachment | None = None,
    ) -> None:
        # Cheap checks answer privately before anything is acknowledged or spent.
        prompt = self.bot.service.clean_prompt(prompt)
        if missing_channel_permissions(interaction):
            await reply(interaction, text.MISSING_CHANNEL_PERMISSION)
            return
        self.bot.service.imagine_provider()
        attachments = [ref for ref in (reference1, reference2, reference3) if ref is not None]
        max_bytes = self.bot.settings.max_image_bytes
        if any(ref.size > max_bytes for ref in attachments):
            raise BadInput(input_text.image_too_large(max_bytes))
        await interaction.response.defer(thinking=True)
        references = [await load_attachment(ref, self.bot.service, max_bytes) for ref in attachments]
        await self.bot.service.imagine(
            member_of(interaction), prompt, references, ReportTarget.from_interaction(interaction)
        )

    async def edit_message(self, interaction: discord.Interaction, message: discord.Message) -> None:
        sources = message_images(message)
        if not sources:
            raise BadInput(text.NO_IMAGE_IN_MESSAGE)
        if missing_channel_permissions(interaction):
            await reply(interaction, text.MISSING_CHANNEL_PERMISSION)
            return
        self.bot.service.imagine_provider()
        chosen = sources[:MAX_REFERENCES]
        notice = text.MORE_IMAGES_NOTICE.format(count=len(sources)) if len(sources) > MAX_REFERENCES else None
        max_bytes = self.bot.settings.max_image_bytes

        async def run(modal_interaction: discord.Interaction, prompt: str) -> None:
            prompt = self.bot.service.clean_prompt(prompt)
            await modal_interaction.response.defer(thinking=True)
            references = [await load_source(source, self.bot.service, max_bytes) for source in chosen]
            await self.bot.service.imagine(
                member_of(modal_interaction),
                prompt,
                references,
                ReportTarget.from_interaction(modal_interaction),
                notice=notice,
            )

        # The modal is the answer; the images are read once the prompt comes back.
        await interaction.response.send_modal(PromptModal(run))


async def setup(bot: ImageBot) -> None:
    await bot.add_cog(ImagineCog(bot))
