"""A fake Discord (REST, CDN and gateway) on 127.0.0.1 that a real discord.py 2.7 client can log into.

Point discord.py at it with `FakeDiscord.install()` (or `async with FakeDiscord() as fake`), log a bot
in with `start_bot`, script interactions with the payload builders (`slash`, `button_click`, ...) and
`send_interaction`, then assert on `calls`, the ordered record of every HTTP request the bot made.

The fake behaves like Discord where a bot can get it wrong: the first interaction callback must come
within `ack_window` seconds (else 404 10062), an interaction answers only once (400 40060), webhook tokens
expire after `token_lifetime` (401 50027), empty or oversized messages are refused (50006, 50035), edits of
unknown or deleted messages answer 10008, and anything it does not model answers 404 `Unknown route (fake)`
so gaps show up.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import enum
import io
import itertools
import json
import mimetypes
import re
import secrets
import socket
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, TypedDict, Unpack
from urllib.parse import quote

import aiohttp
import discord
import discord.asset
import discord.gateway
import discord.http
import yarl
from aiohttp import web

__all__ = [
    "ATTACHMENT_SIZE_LIMIT",
    "DEFAULT_APP_PERMISSIONS",
    "DEFAULT_GUILD",
    "FakeDiscord",
    "InteractionOptions",
    "RecordedCall",
    "connect_task",
    "start_bot",
    "stop_bot",
]

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
_FLAG_SUPPRESS_EMBEDS = 1 << 2
_FLAG_EPHEMERAL = 1 << 6
_FLAG_LOADING = 1 << 7
_FLAG_COMPONENTS_V2 = 1 << 15

# Interaction types and callback types.
_PING, _APP_COMMAND, _COMPONENT, _AUTOCOMPLETE, _MODAL_SUBMIT = 1, 2, 3, 4, 5
_CB_PONG, _CB_MESSAGE, _CB_DEFERRED_MESSAGE, _CB_DEFERRED_UPDATE, _CB_UPDATE = 1, 4, 5, 6, 7
_CB_AUTOCOMPLETE, _CB_MODAL = 8, 9
_CALLBACKS_FOR: dict[int, frozenset[int]] = {
    _PING: frozenset({_CB_PONG}),
    _APP_COMMAND: frozenset({_CB_MESSAGE, _CB_DEFERRED_MESSAGE, _CB_MODAL}),
    _COMPONENT: frozenset({_CB_MESSAGE, _CB_DEFERRED_MESSAGE, _CB_DEFERRED_UPDATE, _CB_UPDATE, _CB_MODAL}),
    _AUTOCOMPLETE: frozenset({_CB_AUTOCOMPLETE}),
    _MODAL_SUBMIT: frozenset({_CB_MESSAGE, _CB_DEFERRED_MESSAGE, _CB_DEFERRED_UPDATE, _CB_UPDATE}),
}

# A 1x1 PNG served for avatar and icon URLs, so `Asset.read()` never leaves the machine.
_TINY_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)
_COMMAND_NAME = re.compile(r"^[-_'\w]{1,32}$")
_SUBCOMMAND, _SUBCOMMAND_GROUP = 1, 2


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
    locale: str
    command_guild_id: int | None  # data.guild_id, for guild-scoped commands that were not synced


@dataclass
class RecordedCall:
    """One HTTP request the bot made to the fake, and what the fake answered."""

    method: str
    path: str
    query: dict[str, str]
    json: Any
    files: list[tuple[str, bytes, str | None]] = field(default_factory=list)
    at: float = 0.0
    status: int = 0
    auth: str | None = None

    def __repr__(self) -> str:
        """Show the call without the token and without file bytes."""
        files = [(name, len(data), ctype) for name, data, ctype in self.files]
        return (
            f"RecordedCall({self.method} {self.path} query={self.query!r} status={self.status} "
            f"json={self.json!r} files={files!r})"
        )


@dataclass
class _Interaction:
    id: int
    token: str
    type: int
    payload: dict[str, Any]
    created: float
    channel_id: int
    ack_type: int | None = None
    original_id: int | None = None
    followup_ids: list[int] = field(default_factory=list)


@dataclass
class _Failure:
    method: str
    pattern: re.Pattern[str]
    status: int
    code: int
    message: str
    remaining: int
    retry_after: float | None


class _DiscordError(Exception):
    """An error answer in Discord's JSON error shape."""

    def __init__(self, status: int, code: int, message: str, errors: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors

    def response(self) -> web.Response:
        """Build the JSON error response."""
        body: dict[str, Any] = {"message": self.message, "code": self.code}
        if self.errors is not None:
            body["errors"] = self.errors
        return _json(self.status, body)


def _json(status: int, body: Any, headers: Mapping[str, str] | None = None) -> web.Response:
    """Answer JSON with a Content-Type of exactly application/json, as discord.py's json_or_text requires."""
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    return web.Response(status=status, body=json.dumps(body).encode(), headers=all_headers)


def _no_content() -> web.Response:
    """Answer 204 No Content."""
    return web.Response(status=204)


def _form_error(path: str, code: str, message: str) -> _DiscordError:
    """Build a 400 Invalid Form Body error for one dotted field path."""
    errors: dict[str, Any] = {}
    node = errors
    for part in path.split("."):
        node = node.setdefault(part, {})
    node["_errors"] = [{"code": code, "message": message}]
    return _DiscordError(400, 50035, "Invalid Form Body", errors)


def _iso(ts: float | None = None) -> str:
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


def _walk_components(components: Sequence[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
    """Yield every component, descending into rows, containers, sections and labels."""
    for component in components:
        yield component
        yield from _walk_components(component.get("components") or [])
        for key in ("accessory", "component"):
            child = component.get(key)
            if isinstance(child, Mapping):
                yield from _walk_components([child])


class FakeDiscord:
    """Serve Discord's REST API, CDN and gateway for one bot on 127.0.0.1, recording every request."""

    def __init__(
        self,
        *,
        application_id: int = 111111111111111111,
        bot_user_id: int = 111111111111111111,
        guild_ids: Sequence[int] = (222222222222222222,),
        channel_id: int = 333333333333333333,
        ack_window: float = 3.0,
        token_lifetime: float = 900.0,
    ) -> None:
        self.application_id = application_id
        self.bot_user_id = bot_user_id
        self.guild_ids = tuple(guild_ids)
        self.channel_id = channel_id
        self.ack_window = ack_window
        self.token_lifetime = token_lifetime
        self.owner_id = 555555555555555555
        self.default_user_id = 444444444444444444

        self.calls: list[RecordedCall] = []
        # Gateway frames the bot sent, tokens redacted; tests can assert presence updates or member requests.
        self.gateway_received: list[dict[str, Any]] = []
        self.identify_count = 0
        self.resume_count = 0

        self._port: int | None = None
        self._runner: web.AppRunner | None = None
        self._installed: tuple[str, yarl.URL, str] | None = None
        self._changed = asyncio.Event()
        self._watched: list[asyncio.Task[Any]] = []
        self._ids = itertools.count()

        self._users: dict[int, dict[str, Any]] = {}
        self.bot_user = self._register_user(bot_user_id, "fake-bot", bot=True)
        self._channels: dict[int, dict[str, Any]] = {}
        self._guild_roles: dict[int, dict[int, dict[str, Any]]] = {}
        self._guild_channel: dict[int, int] = {}
        for index, guild_id in enumerate(self.guild_ids):
            # One text channel per guild: the first is `channel_id`, the others follow it.
            self._add_guild(guild_id, channel_id + index)
        self._dm_channels: dict[int, int] = {}

        self._messages: dict[int, dict[str, Any]] = {}
        self._posted: list[int] = []
        self._deleted: set[int] = set()
        self._cdn: dict[tuple[str, str], tuple[bytes, str | None]] = {}
        self._interactions_by_id: dict[int, _Interaction] = {}
        self._interactions_by_token: dict[str, _Interaction] = {}
        self._commands: dict[int | None, list[dict[str, Any]]] = {}
        self._failures: list[_Failure] = []

        self._sockets: set[web.WebSocketResponse] = set()
        self._ws: web.WebSocketResponse | None = None
        self._ws_lock = asyncio.Lock()
        self._session_id: str | None = None
        self._seq = 0
        self._resumable = True
        self._ready_generation = 0
        # Scripted gateway faults: a close code to answer IDENTIFY with (4004: the token was refused), and
        # a gateway that accepts the connection but never says HELLO (a connection that hangs).
        self.identify_close_code: int | None = None
        self.silent_gateway = False

        self._routes: list[tuple[frozenset[str], re.Pattern[str], bool, _Handler]] = []
        self._add_routes()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start serving on a free port of 127.0.0.1."""
        if self._runner is not None:
            return
        # Uploads of real images exceed aiohttp's 1 MiB default; Discord's own limit is enforced per request.
        app = web.Application(client_max_size=4 * ATTACHMENT_SIZE_LIMIT)
        app.router.add_get("/gateway", self._gateway)
        app.router.add_route("*", API_PREFIX + "/{tail:.*}", self._serve_api)
        app.router.add_route("*", "/cdn/{tail:.*}", self._serve_cdn)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self._port = sock.getsockname()[1]
        await web.SockSite(runner, sock).start()
        self._runner = runner

    async def close(self) -> None:
        """Close gateway connections, stop serving and restore discord.py's URLs."""
        self.uninstall()
        for ws in list(self._sockets):
            with contextlib.suppress(Exception):
                await ws.close(code=1001)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeDiscord:
        """Start the fake and install it into discord.py."""
        await self.start()
        self.install()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Close the fake."""
        await self.close()

    @property
    def base_url(self) -> str:
        """Give the fake's root URL, e.g. http://127.0.0.1:PORT."""
        if self._port is None:
            raise RuntimeError("FakeDiscord is not started: await fake.start() first")
        return f"http://127.0.0.1:{self._port}"

    @property
    def gateway_url(self) -> str:
        """Give the fake gateway's websocket URL."""
        return f"ws://127.0.0.1:{self._port}/gateway"

    def install(self) -> None:
        """Point discord.py's REST base, gateway and CDN asset base at this fake."""
        if self._installed is not None:
            return
        self._installed = (
            discord.http.Route.BASE,
            discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY,
            discord.asset.Asset.BASE,
        )
        discord.http.Route.BASE = self.base_url + API_PREFIX
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(self.gateway_url)
        # Avatar and icon reads would otherwise go to cdn.discordapp.com.
        discord.asset.Asset.BASE = self.base_url + "/cdn"

    def uninstall(self) -> None:
        """Restore the URLs `install` replaced."""
        if self._installed is None:
            return
        route_base, gateway, asset_base = self._installed
        discord.http.Route.BASE = route_base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = gateway
        discord.asset.Asset.BASE = asset_base
        self._installed = None

    # ------------------------------------------------------------------ waiting

    def _notify(self) -> None:
        """Wake every waiter so it re-checks its condition."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def _wait_until(self, predicate: Callable[[], bool], seconds: float, what: str) -> None:
        """Wait until predicate() is true, raising TimeoutError that says what was awaited."""
        try:
            async with asyncio.timeout(seconds):
                while not predicate():
                    self._raise_if_crashed()
                    await self._changed.wait()
        except TimeoutError:
            raise TimeoutError(f"timed out after {seconds}s waiting for {what}") from None

    def watch_task(self, task: asyncio.Task[Any]) -> None:
        """Make every wait fail at once if this task (a bot's connect task) crashes, instead of timing out."""
        self._watched.append(task)
        task.add_done_callback(lambda _: self._notify())

    def unwatch_task(self, task: asyncio.Task[Any]) -> None:
        """Stop watching a task."""
        with contextlib.suppress(ValueError):
            self._watched.remove(task)

    def _raise_if_crashed(self) -> None:
        for task in self._watched:
            if task.done() and not task.cancelled() and task.exception() is not None:
                # A malformed dispatch kills discord.py's connect loop; say so rather than time out later.
                raise RuntimeError(
                    f"the bot's gateway task crashed: {task.exception()!r}"
                ) from task.exception()

    async def wait_connected(self, timeout: float = 5) -> None:
        """Wait until a bot has identified (or resumed) and been sent READY (or RESUMED)."""
        await self._wait_until(self._is_connected, timeout, "the bot's gateway connection (READY)")

    def _is_connected(self) -> bool:
        return self._ws is not None and not self._ws.closed

    async def wait_ready_generation(self, generation: int, timeout: float = 5) -> None:
        """Wait until READY/RESUMED has been sent `generation` times in total."""
        await self._wait_until(
            lambda: self._ready_generation >= generation and self._is_connected(),
            timeout,
            f"gateway session #{generation} (READY)",
        )

    @property
    def ready_generation(self) -> int:
        """Count the READY and RESUMED events sent so far."""
        return self._ready_generation

    async def wait_disconnected(self, timeout: float = 5) -> None:
        """Wait until no gateway connection is open."""
        await self._wait_until(lambda: not self._sockets, timeout, "the gateway connections to close")

    async def wait_for_call(
        self,
        predicate: Callable[[RecordedCall], bool],
        timeout: float = 5.0,
        *,
        since: int = 0,
    ) -> RecordedCall:
        """Return the first recorded call from index `since` on that matches, waiting for it if needed."""
        found: list[RecordedCall] = []
        scanned = since

        def check() -> bool:
            nonlocal scanned
            while scanned < len(self.calls):
                call = self.calls[scanned]
                scanned += 1
                if predicate(call):
                    found.append(call)
                    return True
            return False

        try:
            await self._wait_until(check, timeout, "a matching call")
        except TimeoutError as exc:
            seen = "\n  ".join(f"{c.method} {c.path} -> {c.status}" for c in self.calls[since:]) or "(none)"
            raise TimeoutError(f"{exc}; calls seen:\n  {seen}") from None
        return found[0]

    # ------------------------------------------------------------------ inspection

    def calls_since(self, index: int) -> list[RecordedCall]:
        """Return the calls recorded from `index` on."""
        return self.calls[index:]

    def interaction_calls(self, token: str) -> list[RecordedCall]:
        """Return the callback and webhook calls made for one interaction token, in order."""
        result = []
        for call in self.calls:
            parts = call.path.split("/")
            if (len(parts) >= 5 and parts[1] == "interactions" and parts[3] == token) or (
                len(parts) >= 4 and parts[1] == "webhooks" and parts[3] == token
            ):
                result.append(call)
        return result

    def original_message(self, token: str) -> dict[str, Any] | None:
        """Return the current state of the interaction's original response, or None if there is none."""
        inter = self._interaction_for_token(token)
        if inter.original_id is None or inter.original_id in self._deleted:
            return None
        return copy.deepcopy(self._messages[inter.original_id])

    def followup_messages(self, token: str) -> list[dict[str, Any]]:
        """Return the current state of the interaction's follow-up messages that still exist."""
        inter = self._interaction_for_token(token)
        return [copy.deepcopy(self._messages[i]) for i in inter.followup_ids if i not in self._deleted]

    def channel_messages(self, channel_id: int | None = None) -> list[dict[str, Any]]:
        """Return the messages the bot posted (channel POSTs and interaction messages), oldest first.

        With channel_id None every channel counts. Messages made with `make_message` are fixtures and not
        listed; deleted messages are left out.
        """
        return [
            copy.deepcopy(self._messages[mid])
            for mid in self._posted
            if mid not in self._deleted
            and (channel_id is None or int(self._messages[mid]["channel_id"]) == channel_id)
        ]

    def get_message(self, message_id: int) -> dict[str, Any] | None:
        """Return the current state of any stored message, or None if unknown or deleted."""
        if message_id in self._deleted or message_id not in self._messages:
            return None
        return copy.deepcopy(self._messages[message_id])

    def synced_commands(self, guild_id: int | None = None) -> list[dict[str, Any]]:
        """Return the application commands last synced globally (None) or to one guild."""
        return copy.deepcopy(self._commands.get(guild_id, []))

    def dm_channel_id(self, user_id: int) -> int:
        """Return (creating if needed) the id of the bot's DM channel with a user."""
        channel_id = self._dm_channels.get(user_id)
        if channel_id is None:
            channel_id = self._dm_channels[user_id] = self._snowflake()
            user = self._users.get(user_id) or self._register_user(user_id)
            self._channels[channel_id] = {
                "id": str(channel_id),
                "type": 1,
                "last_message_id": None,
                "flags": 0,
                "recipients": [copy.deepcopy(user)],
            }
        return channel_id

    def guild_channel_id(self, guild_id: int) -> int:
        """Return the id of the guild's text channel."""
        return self._guild_channel[guild_id]

    # ------------------------------------------------------------------ scripting

    def fail_next(
        self,
        method: str,
        path_pattern: str,
        *,
        status: int,
        code: int = 0,
        message: str = "",
        times: int = 1,
        retry_after: float | None = None,
    ) -> None:
        """Answer the next `times` matching requests with an error.

        `method` matches exactly ('*' = any); `path_pattern` is re.search-ed in the recorded path. A 429
        carries the `Via` header and a `retry_after` (default 0.05 s) so discord.py retries it; a 5xx is
        retried by discord.py after 1 + 2*attempt seconds.
        """
        self._failures.append(
            _Failure(method.upper(), re.compile(path_pattern), status, code, message, times, retry_after)
        )

    def delete_message(self, message_id: int) -> None:
        """Delete a stored message: later GET/PATCH of it answer 404 10008."""
        self._deleted.add(message_id)

    def age_interaction(self, token: str, seconds: float) -> None:
        """Pretend the interaction was created `seconds` earlier (for the ack window and token lifetime)."""
        self._interaction_for_token(token).created -= seconds

    async def disconnect_gateway(self, *, resumable: bool = True, code: int = 4000) -> None:
        """Close the bot's gateway websocket; the client reconnects and RESUMEs (or re-identifies).

        With resumable=False the RESUME is refused (op 9) and the client IDENTIFYs again, but only after
        the 5 s sleep of discord.py's default `Client.before_identify_hook`; override it in tests to skip that.
        """
        ws = self._ws
        self._ws = None
        self._resumable = resumable
        self._notify()
        if ws is not None:
            await ws.close(code=code)

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        """Send any gateway event (op 0) to the connected bot, waiting for a connection first."""
        await self.wait_connected()
        assert self._ws is not None
        await self._send_event(self._ws, event, data)

    async def send_interaction(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Dispatch INTERACTION_CREATE, starting its ack window; return the payload (its token names it)."""
        await self.wait_connected()
        guild_id = int(payload["guild_id"]) if payload.get("guild_id") else None
        if guild_id is not None:
            # member.roles only shows roles the client knows; announce unknown ones like Discord would have.
            for role_id in map(int, payload.get("member", {}).get("roles", [])):
                if role_id not in self._guild_roles.setdefault(guild_id, {}):
                    role = self._make_role(role_id, f"role-{role_id}", 0, position=1)
                    self._guild_roles[guild_id][role_id] = role
                    await self.dispatch("GUILD_ROLE_CREATE", {"guild_id": str(guild_id), "role": role})
        message = payload.get("message")
        if message is not None and int(message["id"]) not in self._messages:
            self._messages[int(message["id"])] = copy.deepcopy(message)
        inter = _Interaction(
            id=int(payload["id"]),
            token=payload["token"],
            type=payload["type"],
            payload=copy.deepcopy(payload),
            created=time.monotonic(),
            channel_id=int(payload["channel_id"]),
        )
        self._interactions_by_id[inter.id] = inter
        self._interactions_by_token[inter.token] = inter
        await self.dispatch("INTERACTION_CREATE", payload)
        return payload

    # ------------------------------------------------------------------ fixtures

    def make_user(self, user_id: int, name: str = "tester") -> dict[str, Any]:
        """Build (and remember) a user object."""
        return copy.deepcopy(self._register_user(user_id, name))

    def add_attachment(
        self,
        data: bytes,
        filename: str = "image.png",
        content_type: str | None = "image/png",
        width: int | None = None,
        height: int | None = None,
    ) -> dict[str, Any]:
        """Store bytes on the fake CDN and return the attachment object that points at them."""
        if width is None and height is None and (content_type or "").startswith("image/"):
            width, height = _image_size(data)
        attachment_id = str(self._snowflake())
        self._cdn[(attachment_id, filename)] = (data, content_type)
        url = f"{self.base_url}/cdn/attachments/{attachment_id}/{quote(filename)}"
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
        channel_id = self.channel_id if channel_id is None else channel_id
        author_id = self.default_user_id if author_id is None else author_id
        author = self._users.get(author_id) or self._register_user(author_id)
        if channel_id not in self._channels:
            self._channels[channel_id] = self._text_channel(channel_id, self.guild_ids[0], "fixture")
        message = self._blank_message(channel_id, author)
        message.update(
            content=content,
            attachments=[copy.deepcopy(a) for a in attachments],
            embeds=[copy.deepcopy(e) for e in embeds],
            mentions=[copy.deepcopy(m) for m in mentions],
            components=[copy.deepcopy(c) for c in components],
        )
        if message_reference is not None:
            message["message_reference"] = copy.deepcopy(message_reference)
            referenced = self.get_message(int(message_reference.get("message_id", 0)))
            message["referenced_message"] = referenced
        self._messages[int(message["id"])] = message
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
        an attachment dict (add_attachment) -> 11; `attachments` is the spec'd way to pass the latter.
        `subcommand` is "sub" or "group sub". See `_interaction` for the shared keyword arguments.
        """
        resolved: dict[str, dict[str, Any]] = {}
        guild_id = self._resolve_guild(kwargs.get("guild_id", DEFAULT_GUILD))
        values: dict[str, Any] = {**(options or {}), **(attachments or {})}
        built = [self._option(opt_name, value, resolved, guild_id) for opt_name, value in values.items()]
        if subcommand is not None:
            for part in reversed(subcommand.split()):
                kind = _SUBCOMMAND if not built or built[0]["type"] not in (1, 2) else _SUBCOMMAND_GROUP
                built = [{"name": part, "type": kind, "options": built}]
        data: dict[str, Any] = {
            "id": str(self._command_id(name, 1)),
            "name": name,
            "type": 1,
            "options": built,
        }
        if resolved:
            data["resolved"] = resolved
        return self._interaction(_APP_COMMAND, data, command_name=name, **kwargs)

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
        payload["type"] = _AUTOCOMPLETE
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
            "id": str(self._command_id(name, 3)),
            "name": name,
            "type": 3,
            "target_id": str(message["id"]),
            "resolved": {"messages": {str(message["id"]): copy.deepcopy(message)}},
        }
        return self._interaction(_APP_COMMAND, data, command_name=name, **kwargs)

    def user_command(
        self, name: str, user: dict[str, Any], **kwargs: Unpack[InteractionOptions]
    ) -> dict[str, Any]:
        """Build a user context menu INTERACTION_CREATE payload targeting `user`."""
        resolved: dict[str, dict[str, Any]] = {}
        self._option("target", user, resolved, self._resolve_guild(kwargs.get("guild_id", DEFAULT_GUILD)))
        data = {
            "id": str(self._command_id(name, 2)),
            "name": name,
            "type": 2,
            "target_id": str(user["id"]),
            "resolved": resolved,
        }
        return self._interaction(_APP_COMMAND, data, command_name=name, **kwargs)

    def button_click(
        self, custom_id: str, message: dict[str, Any], **kwargs: Unpack[InteractionOptions]
    ) -> dict[str, Any]:
        """Build a button click INTERACTION_CREATE payload; the button must be on `message`."""
        component = self._find_component(message, custom_id)
        data = {"custom_id": custom_id, "component_type": component.get("type", 2)}
        return self._interaction(_COMPONENT, data, message=message, **kwargs)

    def select(
        self, custom_id: str, values: list[str], message: dict[str, Any], **kwargs: Unpack[InteractionOptions]
    ) -> dict[str, Any]:
        """Build a select menu INTERACTION_CREATE payload; the select must be on `message`."""
        component = self._find_component(message, custom_id)
        data = {"custom_id": custom_id, "component_type": component.get("type", 3), "values": list(values)}
        return self._interaction(_COMPONENT, data, message=message, **kwargs)

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
        return self._interaction(_MODAL_SUBMIT, data, message=message, **kwargs)

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
        user_id = options.get("user_id", self.default_user_id)
        roles = options.get("roles", ())
        permissions = options.get("permissions", 0)
        guild_id = options.get("guild_id", DEFAULT_GUILD)
        channel_id = options.get("channel_id")
        app_permissions = options.get("app_permissions", DEFAULT_APP_PERMISSIONS)
        locale = options.get("locale", "en-US")
        command_guild_id = options.get("command_guild_id")
        user = copy.deepcopy(self._users.get(user_id) or self._register_user(user_id))
        resolved_guild = self._resolve_guild(guild_id)
        payload: dict[str, Any] = {
            "id": str(self._snowflake()),
            "application_id": str(self.application_id),
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
            channel_id = self._guild_channel[resolved_guild] if channel_id is None else channel_id
            if channel_id not in self._channels:
                self._channels[channel_id] = self._text_channel(channel_id, resolved_guild, "channel")
            payload.update(
                guild_id=str(resolved_guild),
                guild_locale="en-US",
                guild={"id": str(resolved_guild), "locale": "en-US", "features": []},
                context=0,
                authorizing_integration_owners={"0": str(resolved_guild)},
                member={
                    "user": user,
                    "roles": [str(r) for r in roles],
                    "permissions": str(permissions),
                    "flags": 0,
                    "joined_at": _iso(),
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
            channel_id = self.dm_channel_id(user_id) if channel_id is None else channel_id
            payload.update(context=1, authorizing_integration_owners={"0": "0"}, user=user)
        payload["channel_id"] = str(channel_id)
        payload["channel"] = copy.deepcopy(self._channels[channel_id])
        if message is not None:
            payload["message"] = copy.deepcopy(message)
        if command_name is not None:
            scope = command_guild_id
            if (
                scope is None
                and resolved_guild is not None
                and self._is_guild_command(command_name, resolved_guild)
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
                    "joined_at": _iso(),
                    "permissions": "0",
                    "flags": 0,
                    "nick": None,
                    "avatar": None,
                    "pending": False,
                    "premium_since": None,
                }
            return {"name": name, "type": 6, "value": str(value["id"])}
        raise TypeError(f"option {name!r}: unsupported value {value!r}")

    def _find_component(self, message: Mapping[str, Any], custom_id: str) -> Mapping[str, Any]:
        """Find the component a user can click; Discord cannot send a click for one that is not there."""
        for component in _walk_components(message.get("components") or []):
            if component.get("custom_id") == custom_id:
                return component
        raise ValueError(
            f"message {message.get('id')} has no component with custom_id {custom_id!r}; "
            "pass the message as the bot sent it (e.g. fake.original_message(token))"
        )

    def _resolve_guild(self, guild_id: GuildArg) -> int | None:
        return self.guild_ids[0] if guild_id is DEFAULT_GUILD else guild_id

    def _is_guild_command(self, name: str, guild_id: int) -> bool:
        return any(c["name"] == name for c in self._commands.get(guild_id, []))

    def _command_id(self, name: str, ctype: int) -> int:
        """Reuse the synced command's id when there is one, as Discord would send it."""
        for commands in self._commands.values():
            for command in commands:
                if command["name"] == name and command.get("type", 1) == ctype:
                    return int(command["id"])
        return self._snowflake()

    # ------------------------------------------------------------------ model helpers

    def _snowflake(self) -> int:
        """Make a unique, time-ordered snowflake like Discord's."""
        millis = int(time.time() * 1000) - DISCORD_EPOCH_MS
        return (millis << 22) | (next(self._ids) & 0x3FFFFF)

    def _register_user(self, user_id: int, name: str | None = None, *, bot: bool = False) -> dict[str, Any]:
        user = {
            "id": str(user_id),
            "username": name or f"user{user_id % 10000}",
            "discriminator": "0",
            "global_name": name,
            "avatar": None,
            "bot": bot,
            "public_flags": 0,
        }
        self._users[user_id] = user
        return user

    def _make_role(self, role_id: int, name: str, permissions: int, *, position: int) -> dict[str, Any]:
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

    def _text_channel(self, channel_id: int, guild_id: int, name: str) -> dict[str, Any]:
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

    def _add_guild(self, guild_id: int, channel_id: int) -> None:
        # The @everyone role's id is the guild id; it carries the permissions every member has.
        self._guild_roles[guild_id] = {
            guild_id: self._make_role(guild_id, "@everyone", DEFAULT_APP_PERMISSIONS, position=0)
        }
        self._guild_channel[guild_id] = channel_id
        self._channels[channel_id] = self._text_channel(channel_id, guild_id, "general")

    def _guild_create(self, guild_id: int) -> dict[str, Any]:
        joined = _iso()
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
            "preferred_locale": "en-US",
            "system_channel_id": None,
            "system_channel_flags": 0,
            "application_id": None,
            "roles": list(copy.deepcopy(self._guild_roles[guild_id]).values()),
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
            "channels": [copy.deepcopy(self._channels[self._guild_channel[guild_id]])],
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

    def _blank_message(self, channel_id: int, author: dict[str, Any]) -> dict[str, Any]:
        message: dict[str, Any] = {
            "id": str(self._snowflake()),
            "channel_id": str(channel_id),
            "type": 0,
            "content": "",
            "author": copy.deepcopy(author),
            "timestamp": _iso(),
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
        guild_id = self._channels.get(channel_id, {}).get("guild_id")
        if guild_id is not None:
            message["guild_id"] = guild_id
        return message

    def _interaction_for_token(self, token: str) -> _Interaction:
        try:
            return self._interactions_by_token[token]
        except KeyError:
            raise KeyError(
                f"no interaction with that token was sent through this fake: {token[:12]}..."
            ) from None

    def _live_message(self, message_id: int, channel_id: int | None = None) -> dict[str, Any]:
        """Find a message that exists; with channel_id, as the channel endpoints see it."""
        message = self._messages.get(message_id)
        if (
            message is None
            or message_id in self._deleted
            or (channel_id is not None and int(message["channel_id"]) != channel_id)
            # Ephemeral messages exist only for their interaction's webhook, never for channel endpoints.
            or (channel_id is not None and message["flags"] & _FLAG_EPHEMERAL)
        ):
            raise _DiscordError(404, 10008, "Unknown Message")
        return message

    def _create_message(
        self,
        channel_id: int,
        body: Mapping[str, Any],
        files: Sequence[tuple[str, bytes, str | None]],
        *,
        inter: _Interaction | None = None,
        message_type: int = 0,
        allow_empty: bool = False,
    ) -> dict[str, Any]:
        """Create a bot message from a create payload, as a channel POST or an interaction webhook message."""
        message = self._blank_message(channel_id, self.bot_user)
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
            referenced = self._messages.get(int(reference.get("message_id", 0)))
            if referenced is None or int(reference["message_id"]) in self._deleted:
                if reference.get("fail_if_not_exists", True):
                    raise _form_error("message_reference", "REPLIES_UNKNOWN_MESSAGE", "Unknown message")
                referenced = None
            message["message_reference"] = {"type": 0, "channel_id": str(channel_id), **reference}
            message["referenced_message"] = copy.deepcopy(referenced)
        self._apply_content(message, body, files, creating=True, allow_empty=allow_empty)
        message_id = int(message["id"])
        self._messages[message_id] = message
        self._posted.append(message_id)
        return message

    def _apply_content(
        self,
        message: dict[str, Any],
        body: Mapping[str, Any],
        files: Sequence[tuple[str, bytes, str | None]],
        *,
        creating: bool,
        allow_empty: bool = False,
    ) -> None:
        """Apply a create/edit payload to a message, validating it first like Discord does."""
        if sum(len(data) for _, data, _ in files) > ATTACHMENT_SIZE_LIMIT:
            raise _DiscordError(413, 40005, "Request entity too large")
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
            editable = _FLAG_SUPPRESS_EMBEDS | _FLAG_COMPONENTS_V2
            updated["flags"] = (updated["flags"] & ~editable) | (int(body["flags"]) & editable)
        if "attachments" in body or files:
            updated["attachments"] = self._attachments_after(message, body, files)
        if not creating:
            updated["edited_timestamp"] = _iso()
            # The first edit of a deferred ("thinking") response replaces the loading state.
            updated["flags"] &= ~_FLAG_LOADING
        self._validate_message(updated, allow_empty=allow_empty)
        message.clear()
        message.update(updated)

    def _attachments_after(
        self,
        message: Mapping[str, Any],
        body: Mapping[str, Any],
        files: Sequence[tuple[str, bytes, str | None]],
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
                raise _form_error(f"attachments.{index}.id", "ATTACHMENT_NOT_FOUND", "Unknown attachment")
            filename, data, _ = files[int(key)]
            filename = entry.get("filename") or filename
            content_type = mimetypes.guess_type(filename)[0]
            attachment = self.add_attachment(data, filename=filename, content_type=content_type)
            if entry.get("description"):
                attachment["description"] = entry["description"]
            result.append(attachment)
        return result

    def _validate_message(self, message: Mapping[str, Any], *, allow_empty: bool) -> None:
        content = message.get("content") or ""
        if len(content) > 2000:
            raise _form_error("content", "BASE_TYPE_MAX_LENGTH", "Must be 2000 or fewer in length.")
        embeds = message.get("embeds") or []
        if len(embeds) > 10:
            raise _form_error("embeds", "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length.")
        total = 0
        limits = {"title": 256, "description": 4096}
        for index, embed in enumerate(embeds):
            for key, limit in limits.items():
                value = embed.get(key) or ""
                total += len(value)
                if len(value) > limit:
                    raise _form_error(
                        f"embeds.{index}.{key}",
                        "BASE_TYPE_MAX_LENGTH",
                        f"Must be {limit} or fewer in length.",
                    )
            fields = embed.get("fields") or []
            if len(fields) > 25:
                raise _form_error(
                    f"embeds.{index}.fields", "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length."
                )
            for f_index, embed_field in enumerate(fields):
                for key, limit in (("name", 256), ("value", 1024)):
                    value = embed_field.get(key) or ""
                    total += len(value)
                    if not value or len(value) > limit:
                        raise _form_error(
                            f"embeds.{index}.fields.{f_index}.{key}",
                            "BASE_TYPE_BAD_LENGTH",
                            f"Must be between 1 and {limit} in length.",
                        )
            total += len((embed.get("footer") or {}).get("text") or "")
            total += len((embed.get("author") or {}).get("name") or "")
        if total > 6000:
            raise _form_error("embeds", "MAX_EMBED_SIZE_EXCEEDED", "Embed size exceeds maximum size of 6000")
        loading = bool(message.get("flags", 0) & _FLAG_LOADING)
        has_body = (
            content
            or embeds
            or message.get("attachments")
            or message.get("components")
            or message.get("poll")
        )
        if not (has_body or loading or allow_empty):
            raise _DiscordError(400, 50006, "Cannot send an empty message")

    # ------------------------------------------------------------------ HTTP plumbing

    async def _serve_api(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, request.path[len(API_PREFIX) :] or "/")

    async def _serve_cdn(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, request.path)

    async def _serve(self, request: web.Request, path: str) -> web.StreamResponse:
        """Record the request, apply injected failures, then route it."""
        call = RecordedCall(
            method=request.method,
            path=path,
            query=dict(request.query.items()),
            json=None,
            files=[],
            at=time.monotonic(),
            auth=request.headers.get("Authorization"),
        )
        try:
            call.json, call.files = await self._read_body(request)
            response = self._injected_failure(call) or self._route(call)
        except _DiscordError as error:
            response = error.response()
        call.status = response.status
        self.calls.append(call)
        self._notify()
        return response

    async def _read_body(self, request: web.Request) -> tuple[Any, list[tuple[str, bytes, str | None]]]:
        """Parse a JSON body, or a multipart body's payload_json and files[n] parts."""
        files: list[tuple[str, bytes, str | None]] = []
        if request.content_type.startswith("multipart/"):
            payload: Any = None
            reader = await request.multipart()
            async for part in reader:
                if not isinstance(part, aiohttp.BodyPartReader):
                    continue
                data = bytes(await part.read(decode=False))
                if part.name == "payload_json":
                    payload = self._parse_json(data)
                else:
                    ctype = part.headers.get("Content-Type")
                    files.append((part.filename or part.name or "", data, ctype))
            return payload, files
        raw = await request.read()
        return (self._parse_json(raw) if raw else None), files

    @staticmethod
    def _parse_json(raw: bytes) -> Any:
        try:
            return json.loads(raw)
        except ValueError:
            raise _DiscordError(400, 50109, "The request body contains invalid JSON.") from None

    def _injected_failure(self, call: RecordedCall) -> web.Response | None:
        for failure in self._failures:
            if failure.method not in ("*", call.method) or not failure.pattern.search(call.path):
                continue
            failure.remaining -= 1
            if failure.remaining <= 0:
                self._failures.remove(failure)
            if failure.status == 429:
                retry_after = 0.05 if failure.retry_after is None else failure.retry_after
                body = {
                    "message": failure.message or "You are being rate limited.",
                    "retry_after": retry_after,
                    "global": False,
                    "code": failure.code,
                }
                # Without Via discord.py takes a 429 for a Cloudflare ban and does not retry.
                headers = {"Via": "1.1 google", "Retry-After": str(max(1, round(retry_after)))}
                return _json(429, body, headers)
            return _DiscordError(
                failure.status, failure.code, failure.message or "Injected failure (fake)"
            ).response()
        return None

    def _route(self, call: RecordedCall) -> web.StreamResponse:
        for methods, pattern, bot_auth, handler in self._routes:
            match = pattern.fullmatch(call.path)
            if match is None or call.method not in methods:
                continue
            if bot_auth and not (call.auth or "").startswith("Bot "):
                raise _DiscordError(401, 0, "401: Unauthorized")
            return handler(call, match.groupdict())
        raise _DiscordError(404, 0, "Unknown route (fake)")

    def _add_routes(self) -> None:
        def add(methods: str, pattern: str, handler: _Handler, *, bot_auth: bool = True) -> None:
            self._routes.append((frozenset(methods.split()), re.compile(pattern), bot_auth, handler))

        snowflake = r"(?P<{}>\d+)"
        cid, mid, app, gid = (snowflake.format(n) for n in ("cid", "mid", "app", "gid"))
        token = r"(?P<token>[^/]+)"
        add(
            "GET",
            r"/cdn/attachments/(?P<aid>\d+)/(?P<filename>[^/]+)",
            self._h_cdn_attachment,
            bot_auth=False,
        )
        add("GET", r"/cdn/(?:embed/)?avatars/.*|/cdn/.*-icons/.*", self._h_cdn_image, bot_auth=False)
        add("GET", r"/users/@me", self._h_me)
        add("GET", r"/users/(?P<uid>\d+)", self._h_user)
        add("POST", r"/users/@me/channels", self._h_create_dm)
        add("GET", r"/oauth2/applications/@me|/applications/@me", self._h_application)
        add("GET", r"/gateway|/gateway/bot", self._h_gateway_info)
        add("GET PUT", rf"/applications/{app}/commands", self._h_commands)
        add("GET PUT", rf"/applications/{app}/guilds/{gid}/commands", self._h_commands)
        add("POST", rf"/interactions/(?P<iid>\d+)/{token}/callback", self._h_callback, bot_auth=False)
        add("POST", rf"/webhooks/{app}/{token}", self._h_followup, bot_auth=False)
        add(
            "GET PATCH DELETE",
            rf"/webhooks/{app}/{token}/messages/(?P<mid>@original|\d+)",
            self._h_webhook_message,
            bot_auth=False,
        )
        add("GET", rf"/channels/{cid}", self._h_channel)
        add("GET POST", rf"/channels/{cid}/messages", self._h_channel_messages)
        add("GET PATCH DELETE", rf"/channels/{cid}/messages/{mid}", self._h_channel_message)
        add("PUT DELETE", rf"/channels/{cid}/messages/{mid}/reactions/(?P<emoji>[^/]+)/@me", self._h_reaction)
        add("POST", rf"/channels/{cid}/typing", self._h_typing)

    # ------------------------------------------------------------------ REST handlers

    def _h_cdn_attachment(self, call: RecordedCall, m: dict[str, str]) -> web.StreamResponse:
        stored = self._cdn.get((m["aid"], m["filename"]))
        if stored is None:
            return web.Response(status=404, text="Not Found")
        data, content_type = stored
        return web.Response(body=data, headers={"Content-Type": content_type or "application/octet-stream"})

    def _h_cdn_image(self, call: RecordedCall, m: dict[str, str]) -> web.StreamResponse:
        return web.Response(body=_TINY_PNG, headers={"Content-Type": "image/png"})

    def _h_me(self, call: RecordedCall, m: dict[str, str]) -> web.StreamResponse:
        return _json(200, {**self.bot_user, "verified": True, "mfa_enabled": False, "flags": 0})

    def _h_user(self, call: RecordedCall, m: dict[str, str]) -> web.StreamResponse:
        user = self._users.get(int(m["uid"]))
        if user is None:
            raise _DiscordError(404, 10013, "Unknown User")
        return _json(200, user)

    def _h_create_dm(self, call: RecordedCall, m: dict[str, str]) -> web.StreamResponse:
        recipient = (call.json or {}).get("recipient_id")
        if recipient is None:
            raise _form_error("recipient_id", "BASE_TYPE_REQUIRED", "This field is required")
        return _json(200, self._channels[self.dm_channel_id(int(recipient))])

    def _h_application(self, call: RecordedCall, m: dict[str, str]) -> web.StreamResponse:
        owner = self._users.get(self.owner_id) or self._register_user(self.owner_id, "owner")
        return _json(
            200,
            {
                "id": str(self.application_id),
                "name": "Fake App",
                "description": "",
                "icon": None,
                "bot_public": True,
                "bot_require_code_grant": False,
                "owner": owner,
                "verify_key": "0" * 64,
                "team": None,
                "flags": 0,
                "summary": "",
                "rpc_origins": [],
                "interactions_endpoint_url": None,
                "bot": copy.deepcopy(self.bot_user),
            },
        )

    def _h_gateway_info(self, call: RecordedCall, m: dict[str, str]) -> web.StreamResponse:
        limit = {"total": 1000, "remaining": 1000, "reset_after": 0, "max_concurrency": 1}
        return _json(200, {"url": self.gateway_url, "shards": 1, "session_start_limit": limit})

    def _h_commands(self, call: RecordedCall, m: dict[str, str]) -> web.StreamResponse:
        if int(m["app"]) != self.application_id:
            raise _DiscordError(403, 50001, "Missing Access")
        guild_id = int(m["gid"]) if m.get("gid") else None
        if guild_id is not None and guild_id not in self._guild_channel:
            raise _DiscordError(403, 50001, "Missing Access")
        if call.method == "GET":
            return _json(200, self._commands.get(guild_id, []))
        body = call.json
        if not isinstance(body, list):
            raise _form_error("_", "LIST_TYPE_CONVERT", "Must be an array.")
        self._validate_commands(body)
        previous = {(c["name"], c.get("type", 1)): c["id"] for c in self._commands.get(guild_id, [])}
        stored = []
        for command in body:
            ctype = command.get("type", 1)
            entry = {
                "description": "",
                "options": [],
                "default_member_permissions": None,
                "nsfw": False,
                **copy.deepcopy(command),
                "type": ctype,
                "id": previous.get((command["name"], ctype)) or str(self._snowflake()),
                "application_id": str(self.application_id),
                "version": str(self._snowflake()),
            }
            if guild_id is not None:
                entry["guild_id"] = str(guild_id)
            stored.append(entry)
        self._commands[guild_id] = stored
        return _json(200, stored)

    def _validate_commands(self, commands: list[Any]) -> None:
        """Refuse what Discord refuses at sync time, so a bad command fails in tests, not in production."""
        seen: set[tuple[str, int]] = set()
        for index, command in enumerate(commands):
            ctype = command.get("type", 1)
            name = command.get("name") or ""
            if ctype == 1:
                if not _COMMAND_NAME.fullmatch(name) or name != name.lower():
                    raise _form_error(
                        f"{index}.name", "APPLICATION_COMMAND_INVALID_NAME", "Command name is invalid"
                    )
                description = command.get("description") or ""
                if not 1 <= len(description) <= 100:
                    raise _form_error(
                        f"{index}.description", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length."
                    )
                self._validate_options(command.get("options") or [], f"{index}.options")
            elif not 1 <= len(name) <= 32:
                raise _form_error(
                    f"{index}.name", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 32 in length."
                )
            if (name, ctype) in seen:
                raise _form_error(
                    f"{index}.name",
                    "APPLICATION_COMMANDS_DUPLICATE_NAME",
                    "Application command names must be unique",
                )
            seen.add((name, ctype))
        if sum(1 for c in commands if c.get("type", 1) == 1) > 100:
            raise _form_error("_", "BASE_TYPE_MAX_LENGTH", "Must be 100 or fewer in length.")

    def _validate_options(self, options: list[dict[str, Any]], path: str) -> None:
        if len(options) > 25:
            raise _form_error(path, "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
        optional_seen = False
        for index, option in enumerate(options):
            where = f"{path}.{index}"
            name = option.get("name") or ""
            if not _COMMAND_NAME.fullmatch(name) or name != name.lower():
                raise _form_error(
                    f"{where}.name", "APPLICATION_COMMAND_INVALID_NAME", "Command name is invalid"
                )
            if not 1 <= len(option.get("description") or "") <= 100:
                raise _form_error(
                    f"{where}.description", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length."
                )
            if option.get("type") in (_SUBCOMMAND, _SUBCOMMAND_GROUP):
                self._validate_options(option.get("options") or [], f"{where}.options")
                continue
            if option.get("required"):
                if optional_seen:
                    raise _form_error(
                        where,
                        "APPLICATION_COMMAND_OPTIONS_REQUIRED_INVALID",
                        "Required options must be placed first",
                    )
            else:
                optional_seen = True
            if len(option.get("choices") or []) > 25:
                raise _form_error(
                    f"{where}.choices", "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length."
                )

    def _h_callback(self, call: RecordedCall, m: dict[str, str]) -> web.StreamResponse:
        inter = self._interactions_by_id.get(int(m["iid"]))
        if inter is None or inter.token != m["token"] or time.monotonic() - inter.created > self.ack_window:
            raise _DiscordError(404, 10062, "Unknown interaction")
        if inter.ack_type is not None:
            raise _DiscordError(400, 40060, "Interaction has already been acknowledged.")
        body = call.json if isinstance(call.json, dict) else {}
        cb_type = body.get("type")
        data = body.get("data") or {}
        if cb_type not in _CALLBACKS_FOR.get(inter.type, frozenset()):
            raise _form_error(
                "type",
                "INTERACTION_CALLBACK_TYPE_INVALID",
                f"Callback type {cb_type} is invalid for this interaction",
            )
        message: dict[str, Any] | None = None
        if cb_type in (_CB_MESSAGE, _CB_DEFERRED_MESSAGE):
            if cb_type == _CB_DEFERRED_MESSAGE:
                # A deferred response is a "thinking" placeholder until its first edit or follow-up.
                data = {"flags": (int(data.get("flags") or 0) & _FLAG_EPHEMERAL) | _FLAG_LOADING}
            message = self._create_message(
                inter.channel_id,
                data,
                call.files,
                inter=inter,
                message_type=self._response_message_type(inter),
            )
            inter.original_id = int(message["id"])
        elif cb_type in (_CB_DEFERRED_UPDATE, _CB_UPDATE):
            source = inter.payload.get("message")
            if source is None:
                raise _DiscordError(
                    400, 50035, "Invalid Form Body: this interaction has no message to update"
                )
            message = self._live_message(int(source["id"]))
            if cb_type == _CB_UPDATE:
                self._apply_content(message, data, call.files, creating=False)
            inter.original_id = int(message["id"])
        inter.ack_type = cb_type
        if call.query.get("with_response", "").lower() not in ("1", "true"):
            return _no_content()
        flags = int(message.get("flags", 0)) if message is not None else 0
        resource: dict[str, Any] = {"type": cb_type}
        if message is not None:
            resource["message"] = copy.deepcopy(message)
        return _json(
            200,
            {
                "interaction": {
                    "id": str(inter.id),
                    "type": inter.type,
                    "activity_instance_id": None,
                    "response_message_id": message["id"] if message is not None else None,
                    "response_message_loading": bool(flags & _FLAG_LOADING),
                    "response_message_ephemeral": bool(flags & _FLAG_EPHEMERAL),
                },
                "resource": resource,
            },
        )

    @staticmethod
    def _response_message_type(inter: _Interaction) -> int:
        if inter.type != _APP_COMMAND:
            return 0
        return 20 if inter.payload["data"].get("type", 1) == 1 else 23

    def _webhook_interaction(self, m: dict[str, str]) -> _Interaction:
        if int(m["app"]) != self.application_id:
            raise _DiscordError(404, 10015, "Unknown Webhook")
        inter = self._interactions_by_token.get(m["token"])
        if inter is None or time.monotonic() - inter.created > self.token_lifetime:
            raise _DiscordError(401, 50027, "Invalid Webhook Token")
        return inter

    def _h_followup(self, call: RecordedCall, m: dict[str, str]) -> web.StreamResponse:
        inter = self._webhook_interaction(m)
        if inter.ack_type is None:
            # Discord only creates the interaction's webhook once the interaction is answered.
            raise _DiscordError(404, 10015, "Unknown Webhook")
        body = call.json if isinstance(call.json, dict) else {}
        original = self._messages.get(inter.original_id) if inter.original_id is not None else None
        if (
            original is not None
            and original["flags"] & _FLAG_LOADING
            and inter.original_id not in self._deleted
            and inter.ack_type == _CB_DEFERRED_MESSAGE
        ):
            # Discord turns the first follow-up after a "thinking" defer into the deferred message itself.
            self._apply_content(
                original, {k: v for k, v in body.items() if k != "flags"}, call.files, creating=False
            )
            message = original
        else:
            message = self._create_message(inter.channel_id, body, call.files, inter=inter)
            inter.followup_ids.append(int(message["id"]))
        if call.query.get("wait", "").lower() not in ("1", "true"):
            return _no_content()
        return _json(200, message)

    def _h_webhook_message(self, call: RecordedCall, m: dict[str, str]) -> web.StreamResponse:
        inter = self._webhook_interaction(m)
        if m["mid"] == "@original":
            if inter.original_id is None:
                raise _DiscordError(404, 10008, "Unknown Message")
            message_id = inter.original_id
        else:
            message_id = int(m["mid"])
            if message_id != inter.original_id and message_id not in inter.followup_ids:
                raise _DiscordError(404, 10008, "Unknown Message")
        message = self._live_message(message_id)
        if call.method == "DELETE":
            self._deleted.add(message_id)
            return _no_content()
        if call.method == "PATCH":
            self._apply_content(message, call.json or {}, call.files, creating=False)
        return _json(200, message)

    def _known_channel(self, channel_id: int) -> dict[str, Any]:
        channel = self._channels.get(channel_id)
        if channel is None:
            raise _DiscordError(404, 10003, "Unknown Channel")
        return channel

    def _h_channel(self, call: RecordedCall, m: dict[str, str]) -> web.StreamResponse:
        return _json(200, self._known_channel(int(m["cid"])))

    def _h_channel_messages(self, call: RecordedCall, m: dict[str, str]) -> web.StreamResponse:
        channel_id = int(m["cid"])
        self._known_channel(channel_id)
        if call.method == "POST":
            message = self._create_message(channel_id, call.json or {}, call.files)
            return _json(200, message)
        history = sorted(
            (
                msg
                for mid, msg in self._messages.items()
                if int(msg["channel_id"]) == channel_id
                and mid not in self._deleted
                and not msg["flags"] & _FLAG_EPHEMERAL
            ),
            key=lambda msg: int(msg["id"]),
            reverse=True,
        )
        if "before" in call.query:
            history = [msg for msg in history if int(msg["id"]) < int(call.query["before"])]
        if "after" in call.query:
            history = [msg for msg in history if int(msg["id"]) > int(call.query["after"])]
        return _json(200, history[: int(call.query.get("limit", 50))])

    def _h_channel_message(self, call: RecordedCall, m: dict[str, str]) -> web.StreamResponse:
        channel_id = int(m["cid"])
        self._known_channel(channel_id)
        message_id = int(m["mid"])
        message = self._live_message(message_id, channel_id)
        if call.method == "DELETE":
            self._deleted.add(message_id)
            return _no_content()
        if call.method == "PATCH":
            if int(message["author"]["id"]) != self.bot_user_id:
                raise _DiscordError(403, 50005, "Cannot edit a message authored by another user")
            self._apply_content(message, call.json or {}, call.files, creating=False)
        return _json(200, message)

    def _h_reaction(self, call: RecordedCall, m: dict[str, str]) -> web.StreamResponse:
        self._known_channel(int(m["cid"]))
        self._live_message(int(m["mid"]), int(m["cid"]))
        return _no_content()

    def _h_typing(self, call: RecordedCall, m: dict[str, str]) -> web.StreamResponse:
        self._known_channel(int(m["cid"]))
        return _no_content()

    # ------------------------------------------------------------------ gateway

    async def _gateway(self, request: web.Request) -> web.StreamResponse:
        """Speak enough of the gateway protocol for discord.py: HELLO, heartbeats, IDENTIFY/RESUME, events."""
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self._sockets.add(ws)
        try:
            if self.silent_gateway:
                async for _ in ws:
                    pass
                return ws
            await self._send(ws, {"op": 10, "d": {"heartbeat_interval": 41250}, "s": None, "t": None})
            async for frame in ws:
                if frame.type is aiohttp.WSMsgType.TEXT:
                    await self._on_gateway_frame(ws, json.loads(frame.data))
        finally:
            self._sockets.discard(ws)
            if self._ws is ws:
                self._ws = None
            self._notify()
        return ws

    async def _send(self, ws: web.WebSocketResponse, payload: dict[str, Any]) -> None:
        # One lock for all sockets keeps frames whole and sequence numbers in send order.
        async with self._ws_lock:
            if not ws.closed:
                await ws.send_str(json.dumps(payload))

    async def _send_event(self, ws: web.WebSocketResponse, event: str, data: dict[str, Any]) -> None:
        async with self._ws_lock:
            self._seq += 1
            if not ws.closed:
                await ws.send_str(json.dumps({"op": 0, "t": event, "s": self._seq, "d": data}))

    async def _on_gateway_frame(self, ws: web.WebSocketResponse, frame: dict[str, Any]) -> None:
        op = frame.get("op")
        data = frame.get("d")
        recorded = copy.deepcopy(frame)
        if isinstance(recorded.get("d"), dict) and "token" in recorded["d"]:
            recorded["d"]["token"] = "<redacted>"
        self.gateway_received.append(recorded)
        if op == 1:
            await self._send(ws, {"op": 11, "d": None, "s": None, "t": None})
        elif op == 2:
            await self._identify(ws, data or {})
        elif op == 6:
            await self._resume(ws, data or {})
        elif op == 8:
            guild_ids = (data or {}).get("guild_id")
            for guild_id in guild_ids if isinstance(guild_ids, list) else [guild_ids]:
                chunk: dict[str, Any] = {
                    "guild_id": str(guild_id),
                    "members": [],
                    "chunk_index": 0,
                    "chunk_count": 1,
                    "not_found": [],
                    "nonce": (data or {}).get("nonce"),
                }
                await self._send_event(ws, "GUILD_MEMBERS_CHUNK", chunk)

    async def _identify(self, ws: web.WebSocketResponse, data: dict[str, Any]) -> None:
        if self.identify_close_code is not None:
            self.identify_count += 1
            await ws.close(code=self.identify_close_code, message=b"refused by the test")
            return
        self._session_id = secrets.token_hex(16)
        self._seq = 0
        self._resumable = True
        ready: dict[str, Any] = {
            "v": 10,
            "user": {**copy.deepcopy(self.bot_user), "verified": True, "mfa_enabled": False, "flags": 0},
            "guilds": [{"id": str(g), "unavailable": True} for g in self.guild_ids],
            "session_id": self._session_id,
            "session_type": "normal",
            "resume_gateway_url": self.gateway_url,
            "application": {"id": str(self.application_id), "flags": 0},
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "geo_ordered_rtc_regions": [],
        }
        if data.get("shard") is not None:
            ready["shard"] = data["shard"]
        await self._send_event(ws, "READY", ready)
        for guild_id in self.guild_ids:
            await self._send_event(ws, "GUILD_CREATE", self._guild_create(guild_id))
        self.identify_count += 1
        self._became_ready(ws)

    async def _resume(self, ws: web.WebSocketResponse, data: dict[str, Any]) -> None:
        if not self._resumable or data.get("session_id") != self._session_id:
            # Invalid session, not resumable: the client starts over with IDENTIFY.
            await self._send(ws, {"op": 9, "d": False, "s": None, "t": None})
            return
        await self._send_event(ws, "RESUMED", {})
        self.resume_count += 1
        self._became_ready(ws)

    def _became_ready(self, ws: web.WebSocketResponse) -> None:
        self._ws = ws
        self._ready_generation += 1
        self._notify()


_Handler = Callable[[RecordedCall, dict[str, str]], web.StreamResponse]

# The connect task of each bot started with start_bot, so stop_bot can end it and surface its crash.
_CONNECT_TASKS: weakref.WeakKeyDictionary[discord.Client, asyncio.Task[None]] = weakref.WeakKeyDictionary()


async def start_bot(
    bot: discord.Client,
    fake: FakeDiscord,
    *,
    token: str = "fake-token",
    timeout: float = 5.0,
    wait_ready: bool = False,
) -> None:
    """Log the bot into the fake, run its gateway in a background task and wait for READY."""
    await fake.start()
    fake.install()
    generation = fake.ready_generation
    try:
        await bot.login(token)
        task = asyncio.create_task(bot.connect(reconnect=True), name=f"fake-discord-connect-{id(bot)}")
        _CONNECT_TASKS[bot] = task
        fake.watch_task(task)
        waiter = asyncio.ensure_future(fake.wait_ready_generation(generation + 1, timeout))
        done, _ = await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            waiter.cancel()
            task.result()  # re-raises the crash
            raise RuntimeError("bot.connect() returned before the gateway was READY")
        waiter.result()
        if wait_ready:
            await asyncio.wait_for(bot.wait_until_ready(), timeout)
    except BaseException:
        await stop_bot(bot, fake)
        raise


def connect_task(bot: discord.Client) -> asyncio.Task[None] | None:
    """Return the background connect task start_bot made for this bot, if it is still registered."""
    return _CONNECT_TASKS.get(bot)


async def stop_bot(bot: discord.Client, fake: FakeDiscord | None = None, *, timeout: float = 5.0) -> None:
    """Close the bot, end its connect task (re-raising a crash of it) and wait for the fake to see it go."""
    task = _CONNECT_TASKS.pop(bot, None)
    await bot.close()
    if task is not None:
        if fake is not None:
            fake.unwatch_task(task)
        done, _ = await asyncio.wait({task}, timeout=timeout)
        if not done:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        elif not task.cancelled() and task.exception() is not None:
            raise RuntimeError("the bot's gateway task crashed") from task.exception()
    if fake is not None:
        with contextlib.suppress(TimeoutError):
            await fake.wait_disconnected(timeout)
