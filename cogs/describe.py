"""/describe, the "Describe image" message menu, and describing a replied-to image on a mention."""

from __future__ import annotations

import logging

import discord
from discord import app_commands
from discord.ext import commands

from bot.client import ImageBot
from bot.errors import BadInput, BotError
from bot.inputs import ImageSource, load_attachment, load_source, message_images
from bot.interactions import ReportTarget, member_of, member_of_message, reply
from bot.providers.base import TaskState
from bot.ui import input_text, text
from bot.ui.views import ImagePicker

log = logging.getLogger(__name__)

PROVIDER_CHOICES = [
    app_commands.Choice(name="Freepik", value="freepik"),
    app_commands.Choice(name="Novita", value="novita"),
]
# What the bot needs in the channel to show a result: an embed with the input as a thumbnail.
NEEDED_PERMISSIONS = discord.Permissions(embed_links=True, attach_files=True)


def missing_channel_permissions(interaction: discord.Interaction) -> bool:
    return not NEEDED_PERMISSIONS.is_subset(interaction.app_permissions)


class DescribeCog(commands.Cog):
    """Image to prompt."""

    def __init__(self, bot: ImageBot) -> None:
        self.bot = bot
        # Context menus cannot be decorators inside a cog: build it here, remove it on unload.
        self.describe_menu = app_commands.ContextMenu(name="Describe image", callback=self.describe_message)
        self.bot.tree.add_command(self.describe_menu)

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.describe_menu.name, type=self.describe_menu.type)

    @app_commands.command(name="describe", description="Turn an image into a descriptive text prompt")
    @app_commands.describe(
        image="The image to describe",
        url="A link to the image to describe (instead of attaching it)",
        provider="Which service describes it (default: the server's choice)",
    )
    @app_commands.choices(provider=PROVIDER_CHOICES)
    async def describe(
        self,
        interaction: discord.Interaction,
        image: discord.Attachment | None = None,
        url: app_commands.Range[str, 1, 2000] | None = None,
        provider: app_commands.Choice[str] | None = None,
    ) -> None:
        # Cheap checks answer privately before anything is acknowledged or spent.
        if image is not None and url is not None:
            raise BadInput(text.BOTH_IMAGE_AND_URL)
        if image is None and url is None:
            raise BadInput(text.NEITHER_IMAGE_NOR_URL)
        if missing_channel_permissions(interaction):
            await reply(interaction, text.MISSING_CHANNEL_PERMISSION)
            return
        provider_name = self.bot.service.describe_provider(provider.value if provider else None)
        if image is not None and image.size > self.bot.settings.max_image_bytes:
            raise BadInput(input_text.image_too_large(self.bot.settings.max_image_bytes))
        await interaction.response.defer(thinking=True)
        if image is not None:
            checked = await load_attachment(image, self.bot.service, self.bot.settings.max_image_bytes)
        else:
            assert url is not None
            checked = await self.bot.service.fetch_url(url.strip())
        await self.bot.service.describe(
            member_of(interaction), checked, provider_name, ReportTarget.from_interaction(interaction)
        )

    async def describe_message(self, interaction: discord.Interaction, message: discord.Message) -> None:
        sources = message_images(message)
        if not sources:
            raise BadInput(text.NO_IMAGE_IN_MESSAGE)
        if missing_channel_permissions(interaction):
            await reply(interaction, text.MISSING_CHANNEL_PERMISSION)
            return
        provider_name = self.bot.service.describe_provider(None)
        if len(sources) == 1:
            await interaction.response.defer(thinking=True)
            await self._describe_source(interaction, sources[0], provider_name)
            return

        async def picked(pick: discord.Interaction, index: int) -> None:
            await pick.response.defer(thinking=True)
            await self._describe_source(pick, sources[index], provider_name)

        picker = ImagePicker(interaction.user.id, [source.label for source in sources], picked)
        await interaction.response.send_message(
            text.PICK_IMAGE.format(count=len(sources)), view=picker, ephemeral=True
        )

    async def _describe_source(
        self, interaction: discord.Interaction, source: ImageSource, provider_name: str
    ) -> None:
        checked = await load_source(source, self.bot.service, self.bot.settings.max_image_bytes)
        await self.bot.service.describe(
            member_of(interaction), checked, provider_name, ReportTarget.from_interaction(interaction)
        )

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        """Describe the image of the message a member replied to when they mention the bot."""
        if not self.bot.settings.mention_trigger or message.author.bot or self.bot.user is None:
            return
        if self.bot.user not in message.mentions or message.reference is None:
            return
        target = await self._replied_message(message)
        if target is None:
            return
        sources = message_images(target)
        ack: discord.Message | None = None
        try:
            if not sources:
                raise BadInput(text.NO_IMAGE_IN_MESSAGE)
            provider_name = self.bot.service.describe_provider(None)
            # The reply is the acknowledgement; the job edits it as the task moves.
            ack = await message.reply(text.STATE_WORDS[TaskState.QUEUED], mention_author=False)
            checked = await load_source(sources[0], self.bot.service, self.bot.settings.max_image_bytes)
            await self.bot.service.describe(
                member_of_message(message), checked, provider_name, ReportTarget.from_message(ack)
            )
        except BotError as exc:
            if ack is None:
                await message.reply(text.error_sentence(exc), mention_author=False)
            else:
                await ack.edit(content=text.error_sentence(exc))

    async def _replied_message(self, message: discord.Message) -> discord.Message | None:
        reference = message.reference
        if reference is None or reference.message_id is None:
            return None
        if isinstance(reference.resolved, discord.Message):
            return reference.resolved
        try:
            return await message.channel.fetch_message(reference.message_id)
        except discord.HTTPException:
            return None


async def setup(bot: ImageBot) -> None:
    await bot.add_cog(DescribeCog(bot))
