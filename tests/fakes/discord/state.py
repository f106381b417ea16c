"""What the fake Discord knows: users, guilds, channels, roles, messages, interactions, commands and the CDN."""

from __future__ import annotations

import copy
import io
import itertools
import mimetypes
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from tests.fakes.discord.constants import (
    DEFAULT_APP_PERMISSIONS,
    DISCORD_EPOCH_MS,
    FLAG_COMPONENTS_V2,
    FLAG_EPHEMERAL,
    FLAG_LOADING,
    FLAG_SUPPRESS_EMBEDS,
)
from tests.fakes.discord.errors import DiscordError, form_error
from tests.fakes.discord.validation import require_message_body

Files = Sequence[tuple[str, bytes, str | None]]


def iso(ts: float | None = None) -> str:
    """Format a timestamp the way Discord does."""
    return datetime.fromtimestamp(time.time() if ts is None else ts, tz=UTC).isoformat()


def _image_size(data: bytes) -> tuple[int | None, int | None]:
    """Read an image's size with Pillow, or give (None, None) when it is not an image."""
    try:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except Exception:  # any unreadable upload is simply "not an image"
        return None, None


@dataclass
class Interaction:
    """An interaction the fake sent, with what the bot has answered so far."""

    id: int
    token: str
    type: int
    payload: dict[str, Any]
    created: float
    channel_id: int
    ack_type: int | None = None
    original_id: int | None = None
    followup_ids: list[int] = field(default_factory=list)


class DiscordState:
    """Hold one application's Discord: its bot user, guilds, channels, messages, interactions and commands."""

    def __init__(
        self,
        *,
        application_id: int,
        bot_user_id: int,
        guild_ids: Sequence[int],
        channel_id: int,
        ack_window: float,
        token_lifetime: float,
        base_url: Callable[[], str],
    ) -> None:
        self.application_id = application_id
        self.bot_user_id = bot_user_id
        self.guild_ids = tuple(guild_ids)
        self.channel_id = channel_id
        # Discord's interaction timing: the first callback within ack_window, webhooks for token_lifetime.
        self.ack_window = ack_window
        self.token_lifetime = token_lifetime
        self.owner_id = 555555555555555555
        self.default_user_id = 444444444444444444
        self._base_url = base_url
        self._ids = itertools.count()

        self.users: dict[int, dict[str, Any]] = {}
        self.bot_user = self.register_user(bot_user_id, "fake-bot", bot=True)
        self.channels: dict[int, dict[str, Any]] = {}
        self.guild_roles: dict[int, dict[int, dict[str, Any]]] = {}
        self.guild_channel: dict[int, int] = {}
        # Each guild's community language (Server Settings > Community); Discord's default is en-US.
        self.guild_locales: dict[int, str] = {}
        for index, guild_id in enumerate(self.guild_ids):
            # One text channel per guild: the first is `channel_id`, the others follow it.
            self._add_guild(guild_id, channel_id + index)
        self.dm_channels: dict[int, int] = {}

        self.messages: dict[int, dict[str, Any]] = {}
        self.posted: list[int] = []
        self.deleted: set[int] = set()
        self.cdn: dict[tuple[str, str], tuple[bytes, str | None]] = {}
        self.interactions_by_id: dict[int, Interaction] = {}
        self.interactions_by_token: dict[str, Interaction] = {}
        self.commands: dict[int | None, list[dict[str, Any]]] = {}

    # ------------------------------------------------------------------ ids, users, guilds, channels

    def snowflake(self) -> int:
        """Make a unique, time-ordered snowflake like Discord's."""
        millis = int(time.time() * 1000) - DISCORD_EPOCH_MS
        return (millis << 22) | (next(self._ids) & 0x3FFFFF)

    def register_user(self, user_id: int, name: str | None = None, *, bot: bool = False) -> dict[str, Any]:
        """Build and remember a user object."""
        user = {
            "id": str(user_id),
            "username": name or f"user{user_id % 10000}",
            "discriminator": "0",
            "global_name": name,
            "avatar": None,
            "bot": bot,
            "public_flags": 0,
        }
        self.users[user_id] = user
        return user

    def user(self, user_id: int) -> dict[str, Any]:
        """Return a known user, registering an unknown one with a made-up name."""
        return self.users.get(user_id) or self.register_user(user_id)

    def make_role(self, role_id: int, name: str, permissions: int, *, position: int) -> dict[str, Any]:
        """Build a role object."""
        return {
            "id": str(role_id),
            "name": name,
            "permissions": str(permissions),
            "position": position,
            "color": 0,
            "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
            "hoist": False,
            "managed": False,
            "mentionable": False,
            "icon": None,
            "unicode_emoji": None,
            "flags": 0,
        }

    def unknown_roles(self, guild_id: int, role_ids: Sequence[int]) -> list[dict[str, Any]]:
        """Create the roles of `role_ids` the guild does not have yet, and return them."""
        roles = self.guild_roles.setdefault(guild_id, {})
        created = []
        for role_id in role_ids:
            if role_id not in roles:
                roles[role_id] = self.make_role(role_id, f"role-{role_id}", 0, position=1)
                created.append(roles[role_id])
        return created

    def text_channel(self, channel_id: int, guild_id: int, name: str) -> dict[str, Any]:
        """Build a guild text channel object."""
        return {
            "id": str(channel_id),
            "type": 0,
            "guild_id": str(guild_id),
            "name": name,
            "position": 0,
            "permission_overwrites": [],
            "nsfw": False,
            "parent_id": None,
            "topic": None,
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "flags": 0,
        }

    def add_channel(self, guild_id: int, name: str, *, nsfw: bool = False) -> dict[str, Any]:
        """Create a text channel in the guild (age-restricted with nsfw) and return it."""
        channel = self.text_channel(self.snowflake(), guild_id, name)
        channel["nsfw"] = nsfw
        self.channels[int(channel["id"])] = channel
        return channel

    def ensure_channel(self, channel_id: int, guild_id: int, name: str) -> None:
        """Create a text channel in the guild unless a channel with that id exists."""
        if channel_id not in self.channels:
            self.channels[channel_id] = self.text_channel(channel_id, guild_id, name)

    def _add_guild(self, guild_id: int, channel_id: int) -> None:
        # The @everyone role's id is the guild id; it carries the permissions every member has.
        self.guild_roles[guild_id] = {
            guild_id: self.make_role(guild_id, "@everyone", DEFAULT_APP_PERMISSIONS, position=0)
        }
        self.guild_channel[guild_id] = channel_id
        self.channels[channel_id] = self.text_channel(channel_id, guild_id, "general")

    def guild_create(self, guild_id: int) -> dict[str, Any]:
        """Build the GUILD_CREATE payload of a guild, with the bot as its one known member."""
        joined = iso()
        return {
            "id": str(guild_id),
            "name": f"Fake Guild {guild_id % 1000}",
            "icon": None,
            "splash": None,
            "banner": None,
            "description": None,
            "owner_id": str(self.owner_id),
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "premium_tier": 0,
            "preferred_locale": self.guild_locale(guild_id),
            "system_channel_id": None,
            "system_channel_flags": 0,
            "application_id": None,
            "roles": list(copy.deepcopy(self.guild_roles[guild_id]).values()),
            "members": [
                # The bot's own member, so guild.me and permission checks work from the start.
                {
                    "user": copy.deepcopy(self.bot_user),
                    "roles": [],
                    "joined_at": joined,
                    "deaf": False,
                    "mute": False,
                    "flags": 0,
                }
            ],
            "channels": [copy.deepcopy(self.channels[self.guild_channel[guild_id]])],
            "member_count": 2,
            "large": False,
            "unavailable": False,
            "joined_at": joined,
            "features": [],
            "emojis": [],
            "stickers": [],
            "threads": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
            "presences": [],
            "voice_states": [],
        }

    def guild_locale(self, guild_id: int) -> str:
        return self.guild_locales.get(guild_id, "en-US")

    def dm_channel_id(self, user_id: int) -> int:
        """Return (creating if needed) the id of the bot's DM channel with a user."""
        channel_id = self.dm_channels.get(user_id)
        if channel_id is None:
            channel_id = self.dm_channels[user_id] = self.snowflake()
            self.channels[channel_id] = {
                "id": str(channel_id),
                "type": 1,
                "last_message_id": None,
                "flags": 0,
                "recipients": [copy.deepcopy(self.user(user_id))],
            }
        return channel_id

    def known_channel(self, channel_id: int) -> dict[str, Any]:
        """Return a channel that exists, or answer 404 Unknown Channel."""
        channel = self.channels.get(channel_id)
        if channel is None:
            raise DiscordError(404, 10003, "Unknown Channel")
        return channel

    # ------------------------------------------------------------------ CDN

    def store_attachment(
        self,
        data: bytes,
        filename: str,
        content_type: str | None,
        width: int | None = None,
        height: int | None = None,
    ) -> dict[str, Any]:
        """Store bytes on the fake CDN and return the attachment object that points at them."""
        if width is None and height is None and (content_type or "").startswith("image/"):
            width, height = _image_size(data)
        attachment_id = str(self.snowflake())
        self.cdn[(attachment_id, filename)] = (data, content_type)
        url = f"{self._base_url()}/cdn/attachments/{attachment_id}/{quote(filename)}"
        return {
            "id": attachment_id,
            "filename": filename,
            "size": len(data),
            "url": url,
            "proxy_url": url,
            "content_type": content_type,
            "width": width,
            "height": height,
            "ephemeral": False,
            "flags": 0,
        }

    # ------------------------------------------------------------------ interactions and commands

    def add_interaction(self, payload: dict[str, Any]) -> Interaction:
        """Remember an interaction about to be sent, starting its ack window."""
        message = payload.get("message")
        if message is not None and int(message["id"]) not in self.messages:
            self.messages[int(message["id"])] = copy.deepcopy(message)
        inter = Interaction(
            id=int(payload["id"]),
            token=payload["token"],
            type=payload["type"],
            payload=copy.deepcopy(payload),
            created=time.monotonic(),
            channel_id=int(payload["channel_id"]),
        )
        self.interactions_by_id[inter.id] = inter
        self.interactions_by_token[inter.token] = inter
        return inter

    def interaction_for_token(self, token: str) -> Interaction:
        """Return the interaction a test sent with this token."""
        try:
            return self.interactions_by_token[token]
        except KeyError:
            raise KeyError(
                f"no interaction with that token was sent through this fake: {token[:12]}..."
            ) from None

    def is_guild_command(self, name: str, guild_id: int) -> bool:
        """Tell whether a command of that name was synced to the guild."""
        return any(c["name"] == name for c in self.commands.get(guild_id, []))

    def command_id(self, name: str, ctype: int) -> int:
        """Reuse the synced command's id when there is one, as Discord would send it."""
        for commands in self.commands.values():
            for command in commands:
                if command["name"] == name and command.get("type", 1) == ctype:
                    return int(command["id"])
        return self.snowflake()

    def store_commands(self, guild_id: int | None, commands: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Replace the commands of a scope (None: global), keeping the ids of those that stay."""
        previous = {(c["name"], c.get("type", 1)): c["id"] for c in self.commands.get(guild_id, [])}
        stored = []
        for command in commands:
            ctype = command.get("type", 1)
            entry = {
                "description": "",
                "options": [],
                "default_member_permissions": None,
                "nsfw": False,
                **copy.deepcopy(command),
                "type": ctype,
                "id": previous.get((command["name"], ctype)) or str(self.snowflake()),
                "application_id": str(self.application_id),
                "version": str(self.snowflake()),
            }
            if guild_id is not None:
                entry["guild_id"] = str(guild_id)
            stored.append(entry)
        self.commands[guild_id] = stored
        return stored

    # ------------------------------------------------------------------ messages

    def blank_message(self, channel_id: int, author: dict[str, Any]) -> dict[str, Any]:
        """Build an empty message by `author` in a channel."""
        message: dict[str, Any] = {
            "id": str(self.snowflake()),
            "channel_id": str(channel_id),
            "type": 0,
            "content": "",
            "author": copy.deepcopy(author),
            "timestamp": iso(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": [],
            "embeds": [],
            "components": [],
            "pinned": False,
            "flags": 0,
        }
        guild_id = self.channels.get(channel_id, {}).get("guild_id")
        if guild_id is not None:
            message["guild_id"] = guild_id
        return message

    def live_message(self, message_id: int, channel_id: int | None = None) -> dict[str, Any]:
        """Find a message that exists; with channel_id, as the channel endpoints see it."""
        message = self.messages.get(message_id)
        if (
            message is None
            or message_id in self.deleted
            or (channel_id is not None and int(message["channel_id"]) != channel_id)
            # Ephemeral messages exist only for their interaction's webhook, never for channel endpoints.
            or (channel_id is not None and message["flags"] & FLAG_EPHEMERAL)
        ):
            raise DiscordError(404, 10008, "Unknown Message")
        return message

    def create_message(
        self,
        channel_id: int,
        body: Mapping[str, Any],
        files: Files,
        *,
        inter: Interaction | None = None,
        message_type: int = 0,
        allow_empty: bool = False,
    ) -> dict[str, Any]:
        """Create a bot message from a create payload, as a channel POST or an interaction webhook message."""
        message = self.blank_message(channel_id, self.bot_user)
        message["type"] = message_type
        if inter is not None:
            # Interaction messages are sent by the application's webhook.
            message["webhook_id"] = str(self.application_id)
            message["application_id"] = str(self.application_id)
            payload = inter.payload
            message["interaction_metadata"] = {
                "id": str(inter.id),
                "type": inter.type,
                "user": copy.deepcopy(payload.get("member", {}).get("user") or payload.get("user")),
                "authorizing_integration_owners": copy.deepcopy(
                    payload.get("authorizing_integration_owners", {})
                ),
            }
        message["flags"] = int(body.get("flags") or 0)
        message["tts"] = bool(body.get("tts", False))
        reference = body.get("message_reference")
        if reference:
            referenced = self.messages.get(int(reference.get("message_id", 0)))
            if referenced is None or int(reference["message_id"]) in self.deleted:
                if reference.get("fail_if_not_exists", True):
                    raise form_error("message_reference", "REPLIES_UNKNOWN_MESSAGE", "Unknown message")
                referenced = None
            message["message_reference"] = {"type": 0, "channel_id": str(channel_id), **reference}
            message["referenced_message"] = copy.deepcopy(referenced)
        self.apply_content(message, body, files, creating=True, allow_empty=allow_empty)
        message_id = int(message["id"])
        self.messages[message_id] = message
        self.posted.append(message_id)
        return message

    def apply_content(
        self,
        message: dict[str, Any],
        body: Mapping[str, Any],
        files: Files,
        *,
        creating: bool,
        allow_empty: bool = False,
    ) -> None:
        """Apply a create/edit payload (already checked against Discord's rules) to a message."""
        updated = copy.deepcopy(message)
        if "content" in body:
            updated["content"] = body["content"] or ""
        if "embeds" in body:
            updated["embeds"] = list(body["embeds"] or [])
        if "components" in body:
            updated["components"] = list(body["components"] or [])
        if "poll" in body and creating:
            updated["poll"] = body["poll"]
        if "flags" in body and not creating and body["flags"] is not None:
            # Only these flags can change on an edit; ephemeral stays what the message was created as.
            editable = FLAG_SUPPRESS_EMBEDS | FLAG_COMPONENTS_V2
            updated["flags"] = (updated["flags"] & ~editable) | (int(body["flags"]) & editable)
        if "attachments" in body or files:
            updated["attachments"] = self._attachments_after(message, body, files)
        if not creating:
            updated["edited_timestamp"] = iso()
            # The first edit of a deferred ("thinking") response replaces the loading state.
            updated["flags"] &= ~FLAG_LOADING
        require_message_body(updated, allow_empty=allow_empty)
        message.clear()
        message.update(updated)

    def _attachments_after(
        self, message: Mapping[str, Any], body: Mapping[str, Any], files: Files
    ) -> list[dict[str, Any]]:
        """Work out a message's attachments: kept existing ones (by id) plus uploads (by file index)."""
        existing = {str(a["id"]): a for a in message.get("attachments", [])}
        entries = body.get("attachments")
        if entries is None:
            # No attachments list: uploads are added to what the message already has.
            entries = [*existing.values(), *({"id": i} for i in range(len(files)))]
        result = []
        for index, entry in enumerate(entries):
            key = str(entry.get("id"))
            if key in existing:
                result.append(copy.deepcopy(existing[key]))
                continue
            if not key.isdigit() or int(key) >= len(files):
                raise form_error(f"attachments.{index}.id", "ATTACHMENT_NOT_FOUND", "Unknown attachment")
            filename, data, _ = files[int(key)]
            filename = entry.get("filename") or filename
            content_type = mimetypes.guess_type(filename)[0]
            attachment = self.store_attachment(data, filename, content_type)
            if entry.get("description"):
                attachment["description"] = entry["description"]
            result.append(attachment)
        return result

    def make_message(
        self,
        *,
        content: str,
        author_id: int,
        attachments: Sequence[dict[str, Any]],
        embeds: Sequence[dict[str, Any]],
        channel_id: int,
        message_reference: dict[str, Any] | None,
        mentions: Sequence[dict[str, Any]],
        components: Sequence[dict[str, Any]],
    ) -> dict[str, Any]:
        """Store a fixture message (not one the bot posted) and return it."""
        author = self.user(author_id)
        self.ensure_channel(channel_id, self.guild_ids[0], "fixture")
        message = self.blank_message(channel_id, author)
        message.update(
            content=content,
            attachments=[copy.deepcopy(a) for a in attachments],
            embeds=[copy.deepcopy(e) for e in embeds],
            mentions=[copy.deepcopy(m) for m in mentions],
            components=[copy.deepcopy(c) for c in components],
        )
        if message_reference is not None:
            message["message_reference"] = copy.deepcopy(message_reference)
            message["referenced_message"] = self.get_message(int(message_reference.get("message_id", 0)))
        self.messages[int(message["id"])] = message
        return message

    def get_message(self, message_id: int) -> dict[str, Any] | None:
        """Return a copy of any stored message, or None if unknown or deleted."""
        if message_id in self.deleted or message_id not in self.messages:
            return None
        return copy.deepcopy(self.messages[message_id])
