"""FakeDiscord: one object for tests, composed of the state, REST API, gateway and payload builders."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import socket
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar, overload

import discord
import discord.asset
import discord.gateway
import discord.http
import yarl
from aiohttp import web

from tests.fakes.discord.constants import API_PREFIX, ATTACHMENT_SIZE_LIMIT
from tests.fakes.discord.gateway import Gateway
from tests.fakes.discord.payloads import PayloadBuilder
from tests.fakes.discord.rest import RecordedCall, RestApi
from tests.fakes.discord.state import DiscordState
from tests.fakes.discord.validation import discord_spec

T = TypeVar("T")


class _Forwarded(Generic[T]):
    """An attribute of FakeDiscord that lives on one of its parts, read and written there."""

    def __init__(self, part: str, name: str | None = None) -> None:
        self._part = part
        self._name = name or ""

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = self._name or name

    @overload
    def __get__(self, obj: None, objtype: type) -> _Forwarded[T]: ...
    @overload
    def __get__(self, obj: object, objtype: type | None = None) -> T: ...
    def __get__(self, obj: object | None, objtype: type | None = None) -> T | _Forwarded[T]:
        if obj is None:
            return self
        value: T = getattr(getattr(obj, self._part), self._name)
        return value

    def __set__(self, obj: object, value: T) -> None:
        setattr(getattr(obj, self._part), self._name, value)


class FakeDiscord:
    """Serve Discord's REST API, CDN and gateway for one bot on 127.0.0.1, recording every request.

    Every REST request is checked against Discord's OpenAPI spec and documented limits; one that Discord
    would refuse is answered as Discord would and recorded in `violations` (see `assert_no_violations`).
    """

    # The fake's application and defaults, held by its state.
    application_id = _Forwarded[int]("_state")
    bot_user_id = _Forwarded[int]("_state")
    guild_ids = _Forwarded[tuple[int, ...]]("_state")
    channel_id = _Forwarded[int]("_state")
    owner_id = _Forwarded[int]("_state")
    default_user_id = _Forwarded[int]("_state")
    bot_user = _Forwarded[dict[str, Any]]("_state")
    ack_window = _Forwarded[float]("_state")
    token_lifetime = _Forwarded[float]("_state")
    # Every HTTP request, in order, and one line per request Discord would have refused.
    calls = _Forwarded[list[RecordedCall]]("_rest")
    violations = _Forwarded[list[str]]("_rest")
    # Gateway frames the bot sent (tokens redacted), session counts and scripted gateway faults.
    gateway_received = _Forwarded[list[dict[str, Any]]]("_gateway", "received")
    identify_count = _Forwarded[int]("_gateway")
    resume_count = _Forwarded[int]("_gateway")
    identify_close_code = _Forwarded[int | None]("_gateway")
    silent_gateway = _Forwarded[bool]("_gateway", "silent")

    def __init__(
        self,
        *,
        application_id: int = 111111111111111111,
        bot_user_id: int = 111111111111111111,
        guild_ids: Sequence[int] = (222222222222222222,),
        channel_id: int = 333333333333333333,
        ack_window: float = 3.0,
        token_lifetime: float = 900.0,
        validate_requests: bool = True,
    ) -> None:
        """Make a fake Discord with one application, its bot user and `guild_ids` (one text channel each).

        validate_requests=False skips the OpenAPI check (about 0.3-0.6 ms per message request, 14 ms per
        command sync) for benchmarks that drive hundreds of commands; Discord's documented limits, the
        interaction rules and the record of refused requests stay on.
        """
        self._port: int | None = None
        self._runner: web.AppRunner | None = None
        self._installed: tuple[str, yarl.URL, str] | None = None
        self._changed = asyncio.Event()
        self._watched: list[asyncio.Task[Any]] = []

        self._state = DiscordState(
            application_id=application_id,
            bot_user_id=bot_user_id,
            guild_ids=guild_ids,
            channel_id=channel_id,
            ack_window=ack_window,
            token_lifetime=token_lifetime,
            base_url=lambda: self.base_url,
        )
        self._gateway = Gateway(self._state, url=lambda: self.gateway_url, notify=self._notify)
        self._rest = RestApi(
            self._state,
            spec=discord_spec() if validate_requests else None,
            gateway_url=lambda: self.gateway_url,
            notify=self._notify,
        )
        payloads = PayloadBuilder(self._state)
        # The fixtures and payload builders, bound here so their signatures live in one place.
        self.make_user = payloads.make_user
        self.add_attachment = payloads.add_attachment
        self.make_message = payloads.make_message
        self.slash = payloads.slash
        self.autocomplete = payloads.autocomplete
        self.message_command = payloads.message_command
        self.user_command = payloads.user_command
        self.button_click = payloads.button_click
        self.select = payloads.select
        self.modal_submit = payloads.modal_submit
        self.add_channel = self._state.add_channel

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start serving on a free port of 127.0.0.1."""
        if self._runner is not None:
            return
        # Uploads of real images exceed aiohttp's 1 MiB default; Discord's own limit is enforced per request.
        app = web.Application(client_max_size=4 * ATTACHMENT_SIZE_LIMIT)
        app.router.add_get("/gateway", self._gateway.handle)
        app.router.add_route("*", API_PREFIX + "/{tail:.*}", self._rest.serve_api)
        app.router.add_route("*", "/cdn/{tail:.*}", self._rest.serve_cdn)
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
        await self._gateway.close_all()
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
        await self._wait_until(self._gateway.is_connected, timeout, "the bot's gateway connection (READY)")

    async def wait_ready_generation(self, generation: int, timeout: float = 5) -> None:
        """Wait until READY/RESUMED has been sent `generation` times in total."""
        await self._wait_until(
            lambda: self._gateway.ready_generation >= generation and self._gateway.is_connected(),
            timeout,
            f"gateway session #{generation} (READY)",
        )

    @property
    def ready_generation(self) -> int:
        """Count the READY and RESUMED events sent so far."""
        return self._gateway.ready_generation

    async def wait_shards(self, shard_ids: Sequence[int], timeout: float = 5) -> None:
        """Wait until each of these shards has an identified session (bots in several processes)."""
        await self._wait_until(
            lambda: self._gateway.shards_connected(list(shard_ids)),
            timeout,
            f"sessions of shards {list(shard_ids)}",
        )

    async def wait_shards_gone(self, shard_ids: Sequence[int], timeout: float = 5) -> None:
        """Wait until none of these shards has a session open (one of several bots has stopped)."""
        await self._wait_until(
            lambda: not set(shard_ids) & set(self._gateway.connected_shards()),
            timeout,
            f"the sessions of shards {list(shard_ids)} to close",
        )

    def connected_shards(self) -> list[int]:
        """Return the shards that have a session on an open connection."""
        return self._gateway.connected_shards()

    async def wait_disconnected(self, timeout: float = 5) -> None:
        """Wait until no gateway connection is open."""
        await self._wait_until(lambda: not self._gateway.sockets, timeout, "the gateway connections to close")

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

    def assert_no_violations(self) -> None:
        """Fail if the bot sent any request that Discord would refuse, even one it survived."""
        if self.violations:
            lines = "\n  ".join(self.violations)
            raise AssertionError(
                f"the bot sent {len(self.violations)} request(s) Discord would refuse:\n  {lines}"
            )

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
        inter = self._state.interaction_for_token(token)
        if inter.original_id is None or inter.original_id in self._state.deleted:
            return None
        return copy.deepcopy(self._state.messages[inter.original_id])

    def original_reply(self, token: str) -> dict[str, Any]:
        """Return the interaction's original response, which the test expects to exist (an assertion if not)."""
        message = self.original_message(token)
        assert message is not None, (
            f"the interaction has no original response; its calls: {self.interaction_calls(token)}"
        )
        return message

    def followup_messages(self, token: str) -> list[dict[str, Any]]:
        """Return the current state of the interaction's follow-up messages that still exist."""
        inter = self._state.interaction_for_token(token)
        state = self._state
        return [copy.deepcopy(state.messages[i]) for i in inter.followup_ids if i not in state.deleted]

    def channel_messages(self, channel_id: int | None = None) -> list[dict[str, Any]]:
        """Return the messages the bot posted (channel POSTs and interaction messages), oldest first.

        With channel_id None every channel counts. Messages made with `make_message` are fixtures and not
        listed; deleted messages are left out.
        """
        state = self._state
        return [
            copy.deepcopy(state.messages[mid])
            for mid in state.posted
            if mid not in state.deleted
            and (channel_id is None or int(state.messages[mid]["channel_id"]) == channel_id)
        ]

    def get_message(self, message_id: int) -> dict[str, Any] | None:
        """Return the current state of any stored message, or None if unknown or deleted."""
        return self._state.get_message(message_id)

    def synced_commands(self, guild_id: int | None = None) -> list[dict[str, Any]]:
        """Return the application commands last synced globally (None) or to one guild."""
        return copy.deepcopy(self._state.commands.get(guild_id, []))

    def dm_channel_id(self, user_id: int) -> int:
        """Return (creating if needed) the id of the bot's DM channel with a user."""
        return self._state.dm_channel_id(user_id)

    def guild_channel_id(self, guild_id: int) -> int:
        """Return the id of the guild's text channel."""
        return self._state.guild_channel[guild_id]

    # ------------------------------------------------------------------ scripting

    def set_guild_locale(self, locale: str, guild_id: int | None = None) -> None:
        """Set a guild's language (default: the first guild): in GUILD_CREATE, so before the bot starts,
        and in every interaction payload built after."""
        self._state.guild_locales[self.guild_ids[0] if guild_id is None else guild_id] = locale

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
        retried by discord.py after 1 + 2*attempt seconds. A request Discord would refuse is refused
        first, and its injected failure stays for the next one.
        """
        self._rest.fail_next(
            method,
            path_pattern,
            status=status,
            code=code,
            message=message,
            times=times,
            retry_after=retry_after,
        )

    def delete_message(self, message_id: int) -> None:
        """Delete a stored message: later GET/PATCH of it answer 404 10008."""
        self._state.deleted.add(message_id)

    def age_interaction(self, token: str, seconds: float) -> None:
        """Pretend the interaction was created `seconds` earlier (for the ack window and token lifetime)."""
        self._state.interaction_for_token(token).created -= seconds

    async def disconnect_gateway(self, *, resumable: bool = True, code: int = 4000) -> None:
        """Close the bot's gateway websocket; the client reconnects and RESUMEs (or re-identifies).

        With resumable=False the RESUME is refused (op 9) and the client IDENTIFYs again, but only after
        the 5 s sleep of discord.py's default `Client.before_identify_hook`; override it in tests to skip that.
        """
        await self._gateway.disconnect(resumable=resumable, code=code)

    async def dispatch(self, event: str, data: dict[str, Any], *, shard: int | None = None) -> None:
        """Send any gateway event (op 0) to the connected bot, waiting for a connection first.

        With several shards connected, the event goes to the session of the guild's shard, as on Discord;
        `shard` sends it to that shard's session instead (a test that wants one process to receive it).
        """
        await self.wait_connected()
        await self._gateway.send_event(event, data, shard=shard)

    async def send_interaction(self, payload: dict[str, Any], *, shard: int | None = None) -> dict[str, Any]:
        """Dispatch INTERACTION_CREATE, starting its ack window; return the payload (its token names it)."""
        await self.wait_connected()
        guild_id = int(payload["guild_id"]) if payload.get("guild_id") else None
        if guild_id is not None:
            # member.roles only shows roles the client knows; announce unknown ones like Discord would have.
            role_ids = [int(r) for r in payload.get("member", {}).get("roles", [])]
            for role in self._state.unknown_roles(guild_id, role_ids):
                await self.dispatch(
                    "GUILD_ROLE_CREATE", {"guild_id": str(guild_id), "role": role}, shard=shard
                )
        self._state.add_interaction(payload)
        await self.dispatch("INTERACTION_CREATE", payload, shard=shard)
        return payload
