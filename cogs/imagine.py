"""/imagine, the "Edit image" message menu, and the buttons under a generated image (Run again, Edit this)."""

from __future__ import annotations

import logging
from typing import cast

import discord
from discord import app_commands
from discord.app_commands import locale_str
from discord.ext import commands

from bot.core.service import MAX_PROMPT_LENGTH, MAX_REFERENCES
from bot.discord.client import ImageBot
from bot.discord.inputs import load_attachment, load_source, message_images
from bot.discord.interactions import answering_errors, member_of, missing_channel_permissions, route_of
from bot.domain.errors import BadInput, Refusal
from bot.domain.tasks import Notice, NoticeCode, TaskKind
from bot.ui.views import JobButton, PromptModal, job_button_template

log = logging.getLogger(__name__)


class ImagineResultButton(JobButton, template=job_button_template("again", "edit")):
    """Run again / Edit this, under a generated image; found again by its custom id after any restart."""

    async def callback(self, interaction: discord.Interaction) -> None:
        bot = cast("ImageBot", interaction.client)
        action = _run_again if self.action == "again" else _edit_this
        # Everything a button needs is read from the job row, so a click works after any restart.
        await answering_errors(interaction, bot.words_for(interaction), action(bot, interaction, self.job_id))


async def _run_again(bot: ImageBot, interaction: discord.Interaction, job_id: str) -> None:
    """Run an imagine again with the same prompt and references."""
    await interaction.response.defer(thinking=True)
    job = await bot.core.service.finished_job(job_id, TaskKind.IMAGINE)
    await bot.core.service.rerun(job, member_of(interaction), route_of(interaction))


async def _edit_this(bot: ImageBot, interaction: discord.Interaction, job_id: str) -> None:
    """Ask for a new prompt, then imagine with the generated image as the reference."""
    service = bot.core.service

    async def run(modal_interaction: discord.Interaction, prompt: str) -> None:
        async def edit() -> None:
            cleaned = service.clean_prompt(prompt)
            await modal_interaction.response.defer(thinking=True)
            job = await service.finished_job(job_id, TaskKind.IMAGINE)
            await service.edit_result(job, member_of(modal_interaction), cleaned, route_of(modal_interaction))

        await answering_errors(modal_interaction, bot.words_for(modal_interaction), edit())

    # The modal is the answer, so it goes first; the job is read once the prompt comes back.
    await interaction.response.send_modal(PromptModal(bot.words_for(interaction), run))


class ImagineCog(commands.Cog):
    """Image generation and editing."""

    def __init__(self, bot: ImageBot) -> None:
        self.bot = bot
        # Context menus cannot be decorators inside a cog: build it here, remove it on unload.
        self.edit_menu = app_commands.ContextMenu(name="Edit image", callback=self.edit_message)
        self.bot.tree.add_command(self.edit_menu)

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(ImagineResultButton)

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(ImagineResultButton)
        self.bot.tree.remove_command(self.edit_menu.name, type=self.edit_menu.type)

    @app_commands.command(
        name="imagine", description=locale_str("Generate an image from a prompt, or edit up to three images")
    )
    @app_commands.describe(
        prompt=locale_str("What to generate, or how to change the reference images"),
        reference1=locale_str("An image to edit or take from"),
        reference2=locale_str("A second reference image"),
        reference3=locale_str("A third reference image"),
    )
    async def imagine(
        self,
        interaction: discord.Interaction,
        prompt: app_commands.Range[str, 1, MAX_PROMPT_LENGTH],
        reference1: discord.Attachment | None = None,
        reference2: discord.Attachment | None = None,
        reference3: discord.Attachment | None = None,
    ) -> None:
        service = self.bot.core.service
        # Cheap checks answer privately before anything is acknowledged or spent.
        prompt = service.clean_prompt(prompt)
        if missing_channel_permissions(interaction):
            raise BadInput(Refusal.MISSING_CHANNEL_PERMISSION)
        service.imagine_provider()
        attachments = [ref for ref in (reference1, reference2, reference3) if ref is not None]
        if any(ref.size > service.max_image_bytes for ref in attachments):
            raise BadInput(Refusal.IMAGE_TOO_LARGE, max_bytes=service.max_image_bytes)
        await interaction.response.defer(thinking=True)
        references = [await load_attachment(ref, service) for ref in attachments]
        await service.imagine(member_of(interaction), prompt, references, route_of(interaction))

    async def edit_message(self, interaction: discord.Interaction, message: discord.Message) -> None:
        service = self.bot.core.service
        sources = message_images(message)
        if not sources:
            raise BadInput(Refusal.NO_IMAGE_IN_MESSAGE)
        if missing_channel_permissions(interaction):
            raise BadInput(Refusal.MISSING_CHANNEL_PERMISSION)
        service.imagine_provider()
        chosen = sources[:MAX_REFERENCES]
        notice = (
            Notice(NoticeCode.MORE_IMAGES, {"count": len(sources)}) if len(sources) > MAX_REFERENCES else None
        )

        async def run(modal_interaction: discord.Interaction, prompt: str) -> None:
            async def edit() -> None:
                cleaned = service.clean_prompt(prompt)
                await modal_interaction.response.defer(thinking=True)
                references = [await load_source(source, service) for source in chosen]
                await service.imagine(
                    member_of(modal_interaction),
                    cleaned,
                    references,
                    route_of(modal_interaction),
                    notice=notice,
                )

            await answering_errors(modal_interaction, self.bot.words_for(modal_interaction), edit())

        # The modal is the answer; the images are read once the prompt comes back.
        await interaction.response.send_modal(PromptModal(self.bot.words_for(interaction), run))


async def setup(bot: ImageBot) -> None:
    await bot.add_cog(ImagineCog(bot))
