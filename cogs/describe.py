"""/describe, the "Describe image" message menu, describing a replied-to image on a mention, and the
buttons under a description (Imagine this, Show as text)."""

from __future__ import annotations

import dataclasses
import io
import logging
from typing import Any, cast

import discord
from discord import app_commands
from discord.app_commands import locale_str
from discord.ext import commands

from bot.discord.client import ImageBot
from bot.discord.inputs import ImageSource, checked_link, load_attachment, load_source, message_images
from bot.discord.interactions import (
    RESULT_PERMISSIONS,
    answering_errors,
    member_of,
    member_of_message,
    missing_channel_permissions,
    reply,
    route_of,
    route_of_message,
    server_locale,
    shared_locale,
)
from bot.domain.errors import BadInput, BotError, Refusal
from bot.domain.tasks import MAX_SUGGESTIONS, DescribeRequest, DescribeStyle, Job, JobState, TaskKind
from bot.providers.registry import PROVIDERS
from bot.ui.views import (
    IMAGINE_ACTIONS,
    ImagePicker,
    JobButton,
    job_button_template,
    suggestion_index,
)
from bot.ui.words import NEGATIVE_PROMPT, PICK_IMAGE, STYLE_NAMES, Words
from bot.wiring import Core

log = logging.getLogger(__name__)

# Every provider the bot knows; each bot offers only those it has configured (offer_configured_providers).
PROVIDER_CHOICES = [app_commands.Choice(name=spec.title, value=spec.name) for spec in PROVIDERS]
# Choice names are the English templates; the command translator says them in each member's language.
STYLE_CHOICES = [
    app_commands.Choice(name=locale_str(STYLE_NAMES[style]), value=style.value) for style in DescribeStyle
]
# Discord allows 2000 characters in a message; longer prompts go as a text file.
_MESSAGE_LIMIT = 2000


def missing_permissions_in(channel: discord.abc.MessageableChannel, me: discord.Member | None) -> bool:
    """Tell whether the bot surely cannot show a result in a server channel (unknown counts as able)."""
    if me is None or not isinstance(channel, discord.abc.GuildChannel | discord.Thread):
        return False
    return not RESULT_PERMISSIONS.is_subset(channel.permissions_for(me))


def queued_embed(words: Words) -> discord.Embed:
    """Build the first state of a describe shown in a channel reply, before its job exists."""
    # An embed, not content: the job's reports replace the embed and would leave content behind.
    title = f"{words.kind(TaskKind.DESCRIBE)} · {words.state(JobState.QUEUED)}"
    return discord.Embed(title=title, colour=discord.Colour.blurple())


class DescribeResultButton(JobButton, template=job_button_template(*IMAGINE_ACTIONS, "text")):
    """Imagine this (or Imagine N) / Show as text, under a description; found again after any restart."""

    async def callback(self, interaction: discord.Interaction) -> None:
        bot = cast("ImageBot", interaction.client)
        # Everything a button needs is read from the job row, so a click works after any restart.
        if self.action == "text":
            action = _show_as_text(bot, interaction, self.job_id)
        else:
            action = _imagine_this(bot, interaction, self.job_id, suggestion_index(self.action))
        await answering_errors(interaction, bot.words_for(interaction), action)


# Every action answers Discord before it reads the database: the 3-second window allows nothing slow first.


async def _imagine_this(bot: ImageBot, interaction: discord.Interaction, job_id: str, index: int) -> None:
    """Run /imagine with exactly the prompt of a describe result's suggestion."""
    await interaction.response.defer(thinking=True)
    job = await bot.core.service.finished_job(job_id, TaskKind.DESCRIBE)
    if index >= len(job.suggestions):
        # Only a hand-made custom id names a suggestion the result does not have.
        raise BadInput(Refusal.JOB_GONE)
    prompt = job.suggestions[index].prompt
    await bot.core.service.imagine(member_of(interaction), prompt, [], route_of(interaction))


def as_text(job: Job, words: Words) -> str:
    """Return a describe's prompts as plain text: numbered when several, a negative prompt after its own."""
    parts = []
    for number, suggestion in enumerate(job.suggestions, start=1):
        text = suggestion.prompt if len(job.suggestions) == 1 else f"{number}. {suggestion.prompt}"
        if suggestion.negative:
            text += f"\n{words.say(NEGATIVE_PROMPT)}: {suggestion.negative}"
        parts.append(text)
    return "\n\n".join(parts)


async def _show_as_text(bot: ImageBot, interaction: discord.Interaction, job_id: str) -> None:
    """Send the prompt as plain text, which phones copy more easily than a code block."""
    await interaction.response.defer(ephemeral=True, thinking=True)
    job = await bot.core.service.finished_job(job_id, TaskKind.DESCRIBE)
    prompt = as_text(job, bot.words_for(interaction))
    if len(prompt) <= _MESSAGE_LIMIT:
        await interaction.followup.send(prompt, ephemeral=True)
    else:
        await interaction.followup.send(
            file=discord.File(io.BytesIO(prompt.encode()), filename="prompt.txt"), ephemeral=True
        )


def offer_configured_providers(command: app_commands.Command[Any, ..., Any], core: Core) -> None:
    """Make /describe's `provider` a choice among the providers this bot has, by the names members see.

    The decorator runs before the settings are known. discord.py copies a cog's commands for each cog but
    shares their parameters, so the parameter is replaced rather than changed: another bot keeps its own.
    """
    offered: list[app_commands.Choice[str | int | float]] = [
        # A locale_str, as discord.py makes of the decorator's names: "OpenAI-compatible" is translated.
        app_commands.Choice(name=locale_str(core.labels[spec.name]), value=spec.name)
        for spec in PROVIDERS
        if (provider := core.providers.get(spec.name)) is not None and provider.describer is not None
    ]
    parameter = command._params["provider"]
    command._params["provider"] = dataclasses.replace(parameter, choices=offered)


class DescribeCog(commands.Cog):
    """Image to prompt."""

    def __init__(self, bot: ImageBot) -> None:
        self.bot = bot
        offer_configured_providers(self.describe, bot.core)
        # Context menus cannot be decorators inside a cog: build it here, remove it on unload.
        self.describe_menu = app_commands.ContextMenu(name="Describe image", callback=self.describe_message)
        self.bot.tree.add_command(self.describe_menu)

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(DescribeResultButton)

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(DescribeResultButton)
        self.bot.tree.remove_command(self.describe_menu.name, type=self.describe_menu.type)

    @app_commands.command(
        name="describe", description=locale_str("Turn an image into a descriptive text prompt")
    )
    @app_commands.describe(
        image=locale_str("The image to describe"),
        url=locale_str("A link to the image to describe (instead of attaching it)"),
        provider=locale_str("Which service describes it (default: the server's choice)"),
        style=locale_str("The kind of prompt (default: detailed)"),
        suggestions=locale_str("How many different prompts to choose from, 1 to 4 (default: 1)"),
    )
    @app_commands.choices(provider=PROVIDER_CHOICES, style=STYLE_CHOICES)
    async def describe(
        self,
        interaction: discord.Interaction,
        image: discord.Attachment | None = None,
        url: app_commands.Range[str, 1, 2000] | None = None,
        # A plain value, not a Choice: a member whose client still shows a provider this bot no longer has
        # gets the service's sentence for it rather than discord.py's conversion error.
        provider: str | None = None,
        style: app_commands.Choice[str] | None = None,
        suggestions: app_commands.Range[int, 1, MAX_SUGGESTIONS] | None = None,
    ) -> None:
        service = self.bot.core.service
        # Cheap checks answer privately before anything is acknowledged or spent.
        if image is not None and url is not None:
            raise BadInput(Refusal.BOTH_IMAGE_AND_URL)
        if image is None and url is None:
            raise BadInput(Refusal.NEITHER_IMAGE_NOR_URL)
        if missing_channel_permissions(interaction):
            raise BadInput(Refusal.MISSING_CHANNEL_PERMISSION)
        request = DescribeRequest(
            DescribeStyle(style.value) if style else DescribeStyle.DETAILED, suggestions or 1
        )
        provider_name = service.describe_provider(provider, request)
        if image is not None and image.size > service.max_image_bytes:
            raise BadInput(Refusal.IMAGE_TOO_LARGE, max_bytes=service.max_image_bytes)
        link = checked_link(url) if url is not None else None
        await interaction.response.defer(thinking=True)
        if image is not None:
            checked = await load_attachment(image, service)
        else:
            assert link is not None
            checked = await service.fetch_url(link)
        await service.describe(member_of(interaction), checked, provider_name, route_of(interaction), request)

    async def describe_message(self, interaction: discord.Interaction, message: discord.Message) -> None:
        sources = message_images(message)
        if not sources:
            raise BadInput(Refusal.NO_IMAGE_IN_MESSAGE)
        if missing_channel_permissions(interaction):
            raise BadInput(Refusal.MISSING_CHANNEL_PERMISSION)
        provider_name = self.bot.core.service.describe_provider(None)
        if len(sources) == 1:
            await interaction.response.defer(thinking=True)
            await self._describe_source(interaction, sources[0], provider_name)
            return
        words = self.bot.words_for(interaction)

        async def picked(pick: discord.Interaction, index: int) -> None:
            async def describe_pick() -> None:
                await pick.response.defer(thinking=True)
                # The choice is made: take the private picker away so it cannot be used twice.
                try:
                    await interaction.delete_original_response()
                except discord.HTTPException as exc:
                    log.info("could not remove the image picker: %s", exc.text or exc.status)
                await self._describe_source(pick, sources[index], provider_name)

            await answering_errors(pick, self.bot.words_for(pick), describe_pick())

        async def refuse(other: discord.Interaction) -> None:
            await reply(other, self.bot.words_for(other).refusal(Refusal.ONLY_INVOKER))

        picker = ImagePicker(words, interaction.user.id, [source.label for source in sources], picked, refuse)
        await interaction.response.send_message(
            words.say(PICK_IMAGE, count=len(sources)), view=picker, ephemeral=True
        )

    async def _describe_source(
        self, interaction: discord.Interaction, source: ImageSource, provider_name: str
    ) -> None:
        service = self.bot.core.service
        checked = await load_source(source, service)
        await service.describe(member_of(interaction), checked, provider_name, route_of(interaction))

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        """Describe the image of the message a member replied to when they mention the bot."""
        me = self.bot.user
        if not self.bot.settings.mention_trigger or message.author.bot or me is None:
            return
        if not self._asked_by_name(message, me.id):
            return
        reference = message.reference
        if reference is None or reference.type is not discord.MessageReferenceType.reply:
            return
        # Nobody's interaction: the reply belongs to no member, so it is in the server's language.
        locale = shared_locale(server_locale(message), self.bot.settings.default_locale)
        words = Words(locale, self.bot.core.labels)
        acks: list[discord.Message] = []  # the reply, once sent: errors are shown in it
        try:
            await self._describe_replied(message, words, acks)
        except BotError as exc:
            await self._answer(message, acks, words.error(exc))
        except discord.HTTPException as exc:
            log.warning(
                "could not answer a mention in channel %s: %s", message.channel.id, exc.text or exc.status
            )
        except Exception as exc:
            log.exception("describing the image replied to in message %s failed", message.id)
            await self._answer(message, acks, words.error(exc))

    @staticmethod
    def _asked_by_name(message: discord.Message, my_id: int) -> bool:
        """Tell whether the member typed a mention of the bot (its user, or its own role)."""
        # The typed text, not `mentions`: a reply that pings the author of a bot message puts the
        # bot in `mentions` without the member asking it for anything.
        if my_id in message.raw_mentions:
            return True
        # Discord's mention list offers the bot's managed role next to the bot; members pick either.
        own_role = message.guild.self_role if message.guild else None
        return own_role is not None and own_role.id in message.raw_role_mentions

    async def _describe_replied(
        self, message: discord.Message, words: Words, acks: list[discord.Message]
    ) -> None:
        service = self.bot.core.service
        target = await self._replied_message(message)
        sources = message_images(target) if target is not None else []
        if not sources:
            raise BadInput(Refusal.NO_IMAGE_IN_MESSAGE)
        if missing_permissions_in(message.channel, message.guild.me if message.guild else None):
            raise BadInput(Refusal.MISSING_CHANNEL_PERMISSION)
        provider_name = service.describe_provider(None)
        # The reply is the acknowledgement; the job edits it as the task moves.
        acks.append(await message.reply(embed=queued_embed(words), mention_author=False))
        checked = await load_source(sources[0], service)
        await service.describe(member_of_message(message), checked, provider_name, route_of_message(acks[0]))

    async def _answer(self, message: discord.Message, acks: list[discord.Message], sentence: str) -> None:
        """Say one sentence in the acknowledgement if there is one, else in a reply."""
        try:
            if acks:
                await acks[0].edit(content=sentence, embed=None)
            else:
                await message.reply(sentence, mention_author=False)
        except discord.HTTPException as exc:
            log.warning(
                "could not answer a mention in channel %s: %s", message.channel.id, exc.text or exc.status
            )

    async def _replied_message(self, message: discord.Message) -> discord.Message | None:
        reference = message.reference
        if reference is None or reference.message_id is None:
            return None
        if isinstance(reference.resolved, discord.Message):
            return reference.resolved
        try:
            return await message.channel.fetch_message(reference.message_id)
        except discord.HTTPException as exc:
            log.info("replied-to message %s could not be fetched: %s", reference.message_id, exc.status)
            return None


async def setup(bot: ImageBot) -> None:
    await bot.add_cog(DescribeCog(bot))
