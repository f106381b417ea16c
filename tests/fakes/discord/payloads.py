"""Builders for what tests script: users, attachments, fixture messages and INTERACTION_CREATE payloads."""

from __future__ import annotations

import copy
import enum
import secrets
from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypedDict, Unpack

from tests.fakes.discord.constants import (
    APP_COMMAND,
    ATTACHMENT_SIZE_LIMIT,
    AUTOCOMPLETE,
    COMPONENT,
    DEFAULT_APP_PERMISSIONS,
    MODAL_SUBMIT,
    SUBCOMMAND,
    SUBCOMMAND_GROUP,
)
from tests.fakes.discord.state import DiscordState, iso
from tests.fakes.discord.validation import walk_components


class _Default(enum.Enum):
    GUILD = enum.auto()


DEFAULT_GUILD = _Default.GUILD
GuildArg = int | None | Literal[_Default.GUILD]


class InteractionOptions(TypedDict, total=False):
    """Keyword arguments every interaction payload builder accepts."""

    user_id: int  # who interacts; default FakeDiscord.default_user_id
    roles: Sequence[int]  # the member's role ids (unknown ones are announced with GUILD_ROLE_CREATE)
    permissions: int  # member.permissions, the user's permissions in the channel
    guild_id: GuildArg  # default: the first guild; None makes a DM interaction
    channel_id: int | None  # default: the guild's text channel, or the DM channel
    app_permissions: int  # the bot's permissions in the channel
    locale: str  # the member's Discord language; default en-US
    guild_locale: str  # the server's language; default the guild's (FakeDiscord.set_guild_locale)
    command_guild_id: int | None  # data.guild_id, for guild-scoped commands that were not synced


class PayloadBuilder:
    """Build fixtures and the INTERACTION_CREATE payloads Discord would send, from the fake's state."""

    def __init__(self, state: DiscordState) -> None:
        self._state = state

    # ------------------------------------------------------------------ fixtures

    def make_user(self, user_id: int, name: str = "tester") -> dict[str, Any]:
        """Build (and remember) a user object."""
        return copy.deepcopy(self._state.register_user(user_id, name))

    def add_attachment(
        self,
        data: bytes,
        filename: str = "image.png",
        content_type: str | None = "image/png",
        width: int | None = None,
        height: int | None = None,
    ) -> dict[str, Any]:
        """Store bytes on the fake CDN and return the attachment object that points at them."""
        return self._state.store_attachment(data, filename, content_type, width, height)

    def make_message(
        self,
        *,
        content: str = "",
        author_id: int | None = None,
        attachments: Sequence[dict[str, Any]] = (),
        embeds: Sequence[dict[str, Any]] = (),
        channel_id: int | None = None,
        message_reference: dict[str, Any] | None = None,
        mentions: Sequence[dict[str, Any]] = (),
        components: Sequence[dict[str, Any]] = (),
    ) -> dict[str, Any]:
        """Store a message (GET-able, clickable) in a channel and return its full payload."""
        message = self._state.make_message(
            content=content,
            author_id=self._state.default_user_id if author_id is None else author_id,
            attachments=attachments,
            embeds=embeds,
            channel_id=self._state.channel_id if channel_id is None else channel_id,
            message_reference=message_reference,
            mentions=mentions,
            components=components,
        )
        return copy.deepcopy(message)

    # ------------------------------------------------------------------ interaction payloads

    def slash(
        self,
        name: str,
        options: Mapping[str, Any] | None = None,
        *,
        subcommand: str | None = None,
        attachments: Mapping[str, dict[str, Any]] | None = None,
        **kwargs: Unpack[InteractionOptions],
    ) -> dict[str, Any]:
        """Build a slash command INTERACTION_CREATE payload.

        Option values map by type: bool -> 5, int -> 4, float -> 10, str -> 3, a user dict (make_user) -> 6,
        a channel dict (add_channel) -> 7, an attachment dict (add_attachment) -> 11; `attachments` is the spec'd way to pass the latter.
        `subcommand` is "sub" or "group sub". See `_interaction` for the shared keyword arguments.
        """
        resolved: dict[str, dict[str, Any]] = {}
        guild_id = self._resolve_guild(kwargs.get("guild_id", DEFAULT_GUILD))
        values: dict[str, Any] = {**(options or {}), **(attachments or {})}
        built = [self._option(opt_name, value, resolved, guild_id) for opt_name, value in values.items()]
        if subcommand is not None:
            for part in reversed(subcommand.split()):
                kind = SUBCOMMAND if not built or built[0]["type"] not in (1, 2) else SUBCOMMAND_GROUP
                built = [{"name": part, "type": kind, "options": built}]
        data: dict[str, Any] = {
            "id": str(self._state.command_id(name, 1)),
            "name": name,
            "type": 1,
            "options": built,
        }
        if resolved:
            data["resolved"] = resolved
        return self._interaction(APP_COMMAND, data, command_name=name, **kwargs)

    def autocomplete(
        self,
        name: str,
        options: Mapping[str, Any],
        focused: str,
        *,
        subcommand: str | None = None,
        **kwargs: Unpack[InteractionOptions],
    ) -> dict[str, Any]:
        """Build an autocomplete INTERACTION_CREATE payload with `focused` as the option being typed."""
        payload = self.slash(name, options, subcommand=subcommand, **kwargs)
        payload["type"] = AUTOCOMPLETE
        opts = payload["data"]["options"]
        while opts and opts[0]["type"] in (1, 2):
            opts = opts[0]["options"]
        for option in opts:
            if option["name"] == focused:
                option["focused"] = True
        return payload

    def message_command(
        self, name: str, message: dict[str, Any], **kwargs: Unpack[InteractionOptions]
    ) -> dict[str, Any]:
        """Build a message context menu INTERACTION_CREATE payload targeting `message`."""
        data = {
            "id": str(self._state.command_id(name, 3)),
            "name": name,
            "type": 3,
            "target_id": str(message["id"]),
            "resolved": {"messages": {str(message["id"]): copy.deepcopy(message)}},
        }
        return self._interaction(APP_COMMAND, data, command_name=name, **kwargs)

    def user_command(
        self, name: str, user: dict[str, Any], **kwargs: Unpack[InteractionOptions]
    ) -> dict[str, Any]:
        """Build a user context menu INTERACTION_CREATE payload targeting `user`."""
        resolved: dict[str, dict[str, Any]] = {}
        self._option("target", user, resolved, self._resolve_guild(kwargs.get("guild_id", DEFAULT_GUILD)))
        data = {
            "id": str(self._state.command_id(name, 2)),
            "name": name,
            "type": 2,
            "target_id": str(user["id"]),
            "resolved": resolved,
        }
        return self._interaction(APP_COMMAND, data, command_name=name, **kwargs)

    def button_click(
        self, custom_id: str, message: dict[str, Any], **kwargs: Unpack[InteractionOptions]
    ) -> dict[str, Any]:
        """Build a button click INTERACTION_CREATE payload; the button must be on `message`."""
        component = self._find_component(message, custom_id)
        data = {"custom_id": custom_id, "component_type": component.get("type", 2)}
        return self._interaction(COMPONENT, data, message=message, **kwargs)

    def select(
        self, custom_id: str, values: list[str], message: dict[str, Any], **kwargs: Unpack[InteractionOptions]
    ) -> dict[str, Any]:
        """Build a select menu INTERACTION_CREATE payload; the select must be on `message`."""
        component = self._find_component(message, custom_id)
        data = {"custom_id": custom_id, "component_type": component.get("type", 3), "values": list(values)}
        return self._interaction(COMPONENT, data, message=message, **kwargs)

    def modal_submit(
        self,
        custom_id: str,
        fields: Mapping[str, str],
        *,
        message: dict[str, Any] | None = None,
        **kwargs: Unpack[InteractionOptions],
    ) -> dict[str, Any]:
        """Build a modal submit INTERACTION_CREATE payload; `fields` maps text input custom_id -> value."""
        data = {
            "custom_id": custom_id,
            "components": [
                {"type": 1, "components": [{"type": 4, "custom_id": key, "value": value}]}
                for key, value in fields.items()
            ],
        }
        return self._interaction(MODAL_SUBMIT, data, message=message, **kwargs)

    def _interaction(
        self,
        itype: int,
        data: dict[str, Any],
        *,
        message: dict[str, Any] | None = None,
        command_name: str | None = None,
        **options: Unpack[InteractionOptions],
    ) -> dict[str, Any]:
        """Build the common part of an INTERACTION_CREATE payload.

        For application commands, `command_guild_id` (or a guild the command was synced to) sets
        data.guild_id, which discord.py needs to find guild-scoped commands.
        """
        state = self._state
        user_id = options.get("user_id", state.default_user_id)
        roles = options.get("roles", ())
        permissions = options.get("permissions", 0)
        guild_id = options.get("guild_id", DEFAULT_GUILD)
        channel_id = options.get("channel_id")
        app_permissions = options.get("app_permissions", DEFAULT_APP_PERMISSIONS)
        locale = options.get("locale", "en-US")
        command_guild_id = options.get("command_guild_id")
        user = copy.deepcopy(state.user(user_id))
        resolved_guild = self._resolve_guild(guild_id)
        payload: dict[str, Any] = {
            "id": str(state.snowflake()),
            "application_id": str(state.application_id),
            "type": itype,
            "data": data,
            "token": "fake-" + secrets.token_urlsafe(48),
            "version": 1,
            "attachment_size_limit": ATTACHMENT_SIZE_LIMIT,
            "locale": locale,
            "entitlements": [],
            "app_permissions": str(app_permissions),
        }
        if resolved_guild is not None:
            channel_id = state.guild_channel[resolved_guild] if channel_id is None else channel_id
            state.ensure_channel(channel_id, resolved_guild, "channel")
            guild_locale = options.get("guild_locale", state.guild_locale(resolved_guild))
            payload.update(
                guild_id=str(resolved_guild),
                guild_locale=guild_locale,
                guild={"id": str(resolved_guild), "locale": guild_locale, "features": []},
                context=0,
                authorizing_integration_owners={"0": str(resolved_guild)},
                member={
                    "user": user,
                    "roles": [str(r) for r in roles],
                    "permissions": str(permissions),
                    "flags": 0,
                    "joined_at": iso(),
                    "deaf": False,
                    "mute": False,
                    "nick": None,
                    "avatar": None,
                    "premium_since": None,
                    "pending": False,
                    "communication_disabled_until": None,
                },
            )
        else:
            channel_id = state.dm_channel_id(user_id) if channel_id is None else channel_id
            payload.update(context=1, authorizing_integration_owners={"0": "0"}, user=user)
        payload["channel_id"] = str(channel_id)
        payload["channel"] = copy.deepcopy(state.channels[channel_id])
        if message is not None:
            payload["message"] = copy.deepcopy(message)
        if command_name is not None:
            scope = command_guild_id
            if (
                scope is None
                and resolved_guild is not None
                and state.is_guild_command(command_name, resolved_guild)
            ):
                scope = resolved_guild
            if scope is not None:
                data["guild_id"] = str(scope)
        return payload

    def _option(
        self, name: str, value: Any, resolved: dict[str, dict[str, Any]], guild_id: int | None
    ) -> dict[str, Any]:
        """Build one command option, adding what it points at to `resolved`."""
        if isinstance(value, bool):
            return {"name": name, "type": 5, "value": value}
        if isinstance(value, int):
            return {"name": name, "type": 4, "value": value}
        if isinstance(value, float):
            return {"name": name, "type": 10, "value": value}
        if isinstance(value, str):
            return {"name": name, "type": 3, "value": value}
        if isinstance(value, Mapping) and "filename" in value:
            resolved.setdefault("attachments", {})[str(value["id"])] = copy.deepcopy(dict(value))
            return {"name": name, "type": 11, "value": str(value["id"])}
        if isinstance(value, Mapping) and "username" in value:
            resolved.setdefault("users", {})[str(value["id"])] = copy.deepcopy(dict(value))
            if guild_id is not None:
                resolved.setdefault("members", {})[str(value["id"])] = {
                    "roles": [],
                    "joined_at": iso(),
                    "permissions": "0",
                    "flags": 0,
                    "nick": None,
                    "avatar": None,
                    "pending": False,
                    "premium_since": None,
                }
            return {"name": name, "type": 6, "value": str(value["id"])}
        if isinstance(value, Mapping) and "type" in value and "guild_id" in value:  # a channel (add_channel)
            resolved.setdefault("channels", {})[str(value["id"])] = {
                "id": str(value["id"]),
                "name": value["name"],
                "type": value["type"],
                "permissions": str(DEFAULT_APP_PERMISSIONS),
                "parent_id": value.get("parent_id"),
            }
            return {"name": name, "type": 7, "value": str(value["id"])}
        raise TypeError(f"option {name!r}: unsupported value {value!r}")

    def _find_component(self, message: Mapping[str, Any], custom_id: str) -> Mapping[str, Any]:
        """Find the component a user can click; Discord cannot send a click for one that is not there."""
        for _, component in walk_components(message.get("components") or []):
            if component.get("custom_id") == custom_id:
                return component
        raise ValueError(
            f"message {message.get('id')} has no component with custom_id {custom_id!r}; "
            "pass the message as the bot sent it (e.g. fake.original_message(token))"
        )

    def _resolve_guild(self, guild_id: GuildArg) -> int | None:
        return self._state.guild_ids[0] if guild_id is DEFAULT_GUILD else guild_id
