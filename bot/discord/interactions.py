"""Small seams between discord.py interactions and the core: who asks, where to report, how to reply."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Mapping

import discord

from bot.domain.errors import BadInput, BotError, Refusal
from bot.domain.quota import Member
from bot.domain.tasks import Route
from bot.ui.catalogues import first_spoken
from bot.ui.words import Words

log = logging.getLogger(__name__)


# What the bot needs in a channel to show a result: an embed with an image attached (the described
# input's thumbnail, the generated image).
RESULT_PERMISSIONS = discord.Permissions(embed_links=True, attach_files=True)


def missing_channel_permissions(interaction: discord.Interaction) -> bool:
    """Tell whether the bot cannot show a result where this interaction happened."""
    return not RESULT_PERMISSIONS.is_subset(interaction.app_permissions)


def managed_server(interaction: discord.Interaction, refusal: Refusal) -> int:
    """Return the server's id, or refuse (with `refusal`) a member without Manage Server, or a DM.

    Discord hides the admin commands from members without Manage Server, but a server can change who sees
    them in its integration settings: the bot checks again itself.
    """
    if interaction.guild_id is None:
        raise BadInput(Refusal.SERVERS_ONLY)
    permissions = interaction.permissions
    if not (permissions.manage_guild or permissions.administrator):
        raise BadInput(refusal)
    return interaction.guild_id


def member_of(interaction: discord.Interaction) -> Member:
    """Return who invoked, with their roles in this server (quotas are kept per server)."""
    user = interaction.user
    roles = tuple(role.id for role in user.roles) if isinstance(user, discord.Member) else ()
    return Member(guild_id=interaction.guild_id or 0, user_id=user.id, role_ids=roles)


def member_of_message(message: discord.Message) -> Member:
    author = message.author
    roles = tuple(role.id for role in author.roles) if isinstance(author, discord.Member) else ()
    return Member(guild_id=message.guild.id if message.guild else 0, user_id=author.id, role_ids=roles)


def route_of(interaction: discord.Interaction) -> Route:
    """Show a job on the interaction's own response, through its token, in the member's language."""
    # The token's 15 minutes run from the interaction's creation, not from when we saw it.
    created = interaction.created_at.timestamp() if interaction.created_at else time.time()
    parent_id, age_restricted = _channel_facts(interaction.channel)
    return Route(
        channel_id=interaction.channel_id,
        application_id=interaction.application_id,
        interaction_token=interaction.token,
        token_created_at=created,
        parent_id=parent_id,
        age_restricted=age_restricted,
        member_locale=str(interaction.locale),
        guild_locale=str(interaction.guild_locale) if interaction.guild_locale else None,
    )


# What Discord says of every server that never chose a language (every server that is not a Community).
DISCORD_DEFAULT_LOCALE = "en-US"


def server_locale(message: discord.Message) -> str | None:
    """Return the language a server set for its community, None outside servers."""
    return str(message.guild.preferred_locale) if message.guild else None


def shared_locale(guild_locale: str | None, default_locale: str) -> str:
    """Return the language of a message that belongs to no member: the server's when it chose one the bot
    speaks, else DEFAULT_LOCALE (Discord's en-US default says nothing about a server's members)."""
    chosen = guild_locale if guild_locale != DISCORD_DEFAULT_LOCALE else None
    return first_spoken(chosen, default_locale)


def route_of_message(message: discord.Message) -> Route:
    """Show a job by editing one of the bot's own channel messages, which belong to no member."""
    parent_id, age_restricted = _channel_facts(message.channel)
    return Route(
        channel_id=message.channel.id,
        message_id=message.id,
        via="channel",
        guild_locale=server_locale(message),
        parent_id=parent_id,
        age_restricted=age_restricted,
    )


def _channel_facts(channel: object) -> tuple[int | None, bool]:
    """Return what the server's rules need of a channel: a thread's parent, and whether it is age-restricted."""
    parent_id = channel.parent_id if isinstance(channel, discord.Thread) else None
    is_nsfw = getattr(channel, "is_nsfw", None)
    return parent_id, bool(is_nsfw()) if callable(is_nsfw) else False


def words_for(interaction: discord.Interaction, provider_labels: Mapping[str, str]) -> Words:
    """Return the words of the member who interacted, in their Discord language."""
    return Words(str(interaction.locale), provider_labels)


async def reply(interaction: discord.Interaction, sentence: str, *, ephemeral: bool = True) -> None:
    """Send one sentence whether the interaction is unanswered, deferred, or answered already."""
    try:
        if not interaction.response.is_done():
            await interaction.response.send_message(sentence, ephemeral=ephemeral)
        elif interaction.response.type in (
            discord.InteractionResponseType.deferred_channel_message,
            discord.InteractionResponseType.deferred_message_update,
        ):
            # The "thinking" message becomes the answer, rather than leaving it spinning.
            await interaction.edit_original_response(content=sentence, embed=None, attachments=[], view=None)
        else:
            await interaction.followup.send(sentence, ephemeral=ephemeral)
    except discord.HTTPException as exc:
        log.warning("could not answer interaction %s: %s", interaction.id, exc.text or exc.status)


async def answering_errors(interaction: discord.Interaction, words: Words, action: Awaitable[object]) -> None:
    """Run a component's or modal's action; a BotError becomes its one sentence, anything else is logged."""
    try:
        await action
    except BotError as exc:
        await reply(interaction, words.error(exc))
    except Exception as exc:
        log.exception("component %s failed", interaction.data.get("custom_id") if interaction.data else "?")
        await reply(interaction, words.error(exc))
