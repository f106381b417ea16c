"""Discord's numbers the fake speaks in: permission bits, message flags, interaction and callback types."""

from __future__ import annotations

API_PREFIX = "/api/v10"
DISCORD_EPOCH_MS = 1_420_070_400_000

# Permission bits (https://discord.com/developers/docs/topics/permissions).
_ADD_REACTIONS = 1 << 6
_VIEW_CHANNEL = 1 << 10
_SEND_MESSAGES = 1 << 11
_EMBED_LINKS = 1 << 14
_ATTACH_FILES = 1 << 15
_READ_MESSAGE_HISTORY = 1 << 16
_USE_EXTERNAL_EMOJIS = 1 << 18
_USE_APPLICATION_COMMANDS = 1 << 31
_SEND_MESSAGES_IN_THREADS = 1 << 38
DEFAULT_APP_PERMISSIONS = (
    _ADD_REACTIONS
    | _VIEW_CHANNEL
    | _SEND_MESSAGES
    | _EMBED_LINKS
    | _ATTACH_FILES
    | _READ_MESSAGE_HISTORY
    | _USE_EXTERNAL_EMOJIS
    | _USE_APPLICATION_COMMANDS
    | _SEND_MESSAGES_IN_THREADS
)

# Discord's upload limit for a server without boosts; also sent as the interaction's attachment_size_limit.
ATTACHMENT_SIZE_LIMIT = 10 * 1024 * 1024

# Message flags the fake interprets.
FLAG_SUPPRESS_EMBEDS = 1 << 2
FLAG_EPHEMERAL = 1 << 6
FLAG_LOADING = 1 << 7
FLAG_COMPONENTS_V2 = 1 << 15

# Interaction types and callback types.
PING, APP_COMMAND, COMPONENT, AUTOCOMPLETE, MODAL_SUBMIT = 1, 2, 3, 4, 5
CB_PONG, CB_MESSAGE, CB_DEFERRED_MESSAGE, CB_DEFERRED_UPDATE, CB_UPDATE = 1, 4, 5, 6, 7
CB_AUTOCOMPLETE, CB_MODAL = 8, 9
CALLBACKS_FOR: dict[int, frozenset[int]] = {
    PING: frozenset({CB_PONG}),
    APP_COMMAND: frozenset({CB_MESSAGE, CB_DEFERRED_MESSAGE, CB_MODAL}),
    COMPONENT: frozenset({CB_MESSAGE, CB_DEFERRED_MESSAGE, CB_DEFERRED_UPDATE, CB_UPDATE, CB_MODAL}),
    AUTOCOMPLETE: frozenset({CB_AUTOCOMPLETE}),
    MODAL_SUBMIT: frozenset({CB_MESSAGE, CB_DEFERRED_MESSAGE, CB_DEFERRED_UPDATE, CB_UPDATE}),
}

# Application command option types that hold other options.
SUBCOMMAND, SUBCOMMAND_GROUP = 1, 2
