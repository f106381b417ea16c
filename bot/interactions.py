"""Small seams between discord.py interactions and the core: who asks, where to report, how to reply."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import discord

from bot.store.jobs import ReportVia
from bot.store.quotas import Member

log = logging.getLogger(__name__)


# What the bot needs in a channel to show a result: an embed with an image attached (the described
# input's thumbnail, the generated image).
RESULT_PERMISSIONS = discord.Permissions(embed_links=True, attach_files=True)


def missing_channel_permissions(interaction: discord.Interaction) -> bool:
    """Tell whether the bot cannot show a result where this interaction happened."""
    return not RESULT_PERMISSIONS.is_subset(interaction.app_permissions)


def member_of(interaction: discord.Interaction) -> Member:
    """Return who invoked, with their roles in this server (quotas are kept per server)."""
    user = interaction.user
    roles = tuple(role.id for role in user.roles) if isinstance(user, discord.Member) else ()
    return Member(guild_id=interaction.guild_id or 0, user_id=user.id, role_ids=roles)


def member_of_message(message: discord.Message) -> Member:
    author = message.author
    roles = tuple(role.id for role in author.roles) if isinstance(author, discord.Member) else ()
    return Member(guild_id=message.guild.id if message.guild else 0, user_id=author.id, role_ids=roles)


@dataclass(frozen=True, slots=True)
class ReportTarget:
    """Where a job's states are shown: an interaction's response, or a channel message of the bot's."""

    channel_id: int | None
    application_id: int | None = None
    interaction_token: str | None = None
    token_created_at: float | None = None
    message_id: int | None = None
    via: ReportVia = "interaction"

    @classmethod
    def from_interaction(cls, interaction: discord.Interaction) -> ReportTarget:
        # The token's 15 minutes run from the interaction's creation, not from when we saw it.
        created = interaction.created_at.timestamp() if interaction.created_at else time.time()
        return cls(
            channel_id=interaction.channel_id,
            application_id=interaction.application_id,
            interaction_token=interaction.token,
            token_created_at=created,
        )

    @classmethod
    def from_message(cls, message: discord.Message) -> ReportTarget:
        return cls(channel_id=message.channel.id, message_id=message.id, via="channel")

    def job_fields(self) -> dict[str, object]:
        return {
            "channel_id": self.channel_id,
            "application_id": self.application_id,
            "interaction_token": self.interaction_token,
            "token_created_at": self.token_created_at,
            "message_id": self.message_id,
            "report_via": self.via,
        }


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
