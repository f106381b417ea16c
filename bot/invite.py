"""The OAuth2 link that adds the bot to a server with the least it needs."""

from __future__ import annotations

import base64
import binascii

import discord

SCOPES = ("bot", "applications.commands")


def required_permissions(*, mention_trigger: bool) -> discord.Permissions:
    """Return the channel permissions the bot uses, and nothing more."""
    permissions = discord.Permissions(
        view_channel=True,  # see the channels its commands are used in
        send_messages=True,  # post a result anew when its message was deleted or the token expired
        send_messages_in_threads=True,  # the same, inside threads
        embed_links=True,  # results are embeds
        attach_files=True,  # the input thumbnail and generated images
    )
    if mention_trigger:
        # Replying to a member's message and reading the message it replies to.
        permissions.read_message_history = True
    return permissions


# discord.py names some flags differently from Discord's settings screen, which admins compare with.
_SCREEN_NAMES = {"read_messages": "View Channels", "send_messages_in_threads": "Send Messages in Threads"}


def permission_names(permissions: discord.Permissions) -> str:
    """Return the granted permissions as Discord's settings screen names them, comma-separated."""
    return ", ".join(
        _SCREEN_NAMES.get(name, name.replace("_", " ").title()) for name, granted in permissions if granted
    )


def application_id_from_token(token: str) -> int | None:
    """Read the bot's id from its token (the first part is the id in base64), without any network."""
    first = token.split(".", 1)[0]
    try:
        decoded = base64.b64decode(first + "=" * (-len(first) % 4), validate=False).decode("ascii")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return int(decoded) if decoded.isdigit() else None


def invite_url(application_id: int, *, mention_trigger: bool) -> str:
    """Return the OAuth2 link that adds the bot with SCOPES and `required_permissions`."""
    return discord.utils.oauth_url(
        application_id, permissions=required_permissions(mention_trigger=mention_trigger), scopes=SCOPES
    )
