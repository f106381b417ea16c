"""The fake's REST API and CDN: routes, handlers, scripted failures, and Discord's error answers."""

from __future__ import annotations

import base64
import copy
import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from tests.fakes.discord.constants import (
    API_PREFIX,
    APP_COMMAND,
    CB_DEFERRED_MESSAGE,
    CB_DEFERRED_UPDATE,
    CB_MESSAGE,
    CB_UPDATE,
    FLAG_EPHEMERAL,
    FLAG_LOADING,
)
from tests.fakes.discord.errors import DiscordError, RefusedRequest, form_error, json_response, no_content
from tests.fakes.discord.state import DiscordState, Interaction
from tests.fakes.discord.validation import (
    DiscordSpec,
    Limits,
    callback_limits,
    check_limits,
    command_list_limits,
    message_limits,
    require_callback_type,
    upload_limits,
)

# A 1x1 PNG served for avatar and icon URLs, so `Asset.read()` never leaves the machine.
_TINY_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)


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
class _Failure:
    method: str
    pattern: re.Pattern[str]
    status: int
    code: int
    message: str
    remaining: int
    retry_after: float | None


Handler = Callable[[RecordedCall, dict[str, str]], web.StreamResponse]


@dataclass(frozen=True)
class _Route:
    methods: frozenset[str]
    pattern: re.Pattern[str]
    handler: Handler
    bot_auth: bool
    limits: Mapping[str, Limits]


class RestApi:
    """Answer the bot's REST and CDN requests from the fake's state, checking each as Discord would."""

    def __init__(
        self,
        state: DiscordState,
        *,
        spec: DiscordSpec | None,
        gateway_url: Callable[[], str],
        notify: Callable[[], None],
    ) -> None:
        self._state = state
        self._spec = spec
        self._gateway_url = gateway_url
        self._notify = notify
        self.calls: list[RecordedCall] = []
        # One line per refused request: "METHOD /path: what broke". A test fails on it even when the bot
        # swallows the error answer (FakeDiscord.assert_no_violations).
        self.violations: list[str] = []
        self._failures: list[_Failure] = []
        self._routes: list[_Route] = []
        self._add_routes()

    def fail_next(
        self,
        method: str,
        path_pattern: str,
        *,
        status: int,
        code: int,
        message: str,
        times: int,
        retry_after: float | None,
    ) -> None:
        """Answer the next `times` matching requests with an error (see FakeDiscord.fail_next)."""
        self._failures.append(
            _Failure(method.upper(), re.compile(path_pattern), status, code, message, times, retry_after)
        )

    # ------------------------------------------------------------------ HTTP plumbing

    async def serve_api(self, request: web.Request) -> web.StreamResponse:
        """Serve a request under /api/v10."""
        return await self._serve(request, request.path[len(API_PREFIX) :] or "/", api=True)

    async def serve_cdn(self, request: web.Request) -> web.StreamResponse:
        """Serve a request under /cdn."""
        return await self._serve(request, request.path, api=False)

    async def _serve(self, request: web.Request, path: str, *, api: bool) -> web.StreamResponse:
        """Record the request, check it, apply injected failures, then route it."""
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
            response = self._answer(call, api=api)
        except RefusedRequest as refusal:
            self.violations.append(f"{call.method} {call.path}: {refusal.reason}")
            response = refusal.response()
        except DiscordError as error:
            response = error.response()
        call.status = response.status
        self.calls.append(call)
        self._notify()
        return response

    def _answer(self, call: RecordedCall, *, api: bool) -> web.StreamResponse:
        """Check the request in Discord's order (route, auth, form body, size), then answer it."""
        route, params = self._find_route(call)
        spec = self._spec if api else None
        operation, spec_params = spec.operation(call.method, call.path) if spec is not None else (None, {})
        if route is not None and route.bot_auth and not (call.auth or "").startswith("Bot "):
            raise DiscordError(401, 0, "401: Unauthorized")
        if spec is not None and operation is not None:
            spec.check(operation, spec_params, call.json)
        if route is not None:
            check_limits(route.limits.get(call.method), call.json)
        upload_limits(call.files)
        failure = self._injected_failure(call)
        if failure is not None:
            return failure
        if route is None:
            raise RefusedRequest(
                404,
                0,
                "Unknown route (fake)",
                "the fake does not model this route (add it to tests/fakes/discord/rest.py)",
            )
        return route.handler(call, params)

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
            raise RefusedRequest(
                400, 50109, "The request body contains invalid JSON.", "the body is not valid JSON"
            ) from None

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
                return json_response(429, body, headers)
            return DiscordError(
                failure.status, failure.code, failure.message or "Injected failure (fake)"
            ).response()
        return None

    def _find_route(self, call: RecordedCall) -> tuple[_Route | None, dict[str, str]]:
        for route in self._routes:
            match = route.pattern.fullmatch(call.path)
            if match is not None and call.method in route.methods:
                return route, match.groupdict()
        return None, {}

    def _add_routes(self) -> None:
        def add(
            methods: str,
            pattern: str,
            handler: Handler,
            *,
            bot_auth: bool = True,
            limits: Mapping[str, Limits] | None = None,
        ) -> None:
            route = _Route(frozenset(methods.split()), re.compile(pattern), handler, bot_auth, limits or {})
            self._routes.append(route)

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
        commands = {"PUT": command_list_limits}
        add("GET PUT", rf"/applications/{app}/commands", self._h_commands, limits=commands)
        add("GET PUT", rf"/applications/{app}/guilds/{gid}/commands", self._h_commands, limits=commands)
        add(
            "POST",
            rf"/interactions/(?P<iid>\d+)/{token}/callback",
            self._h_callback,
            bot_auth=False,
            limits={"POST": callback_limits},
        )
        add(
            "POST",
            rf"/webhooks/{app}/{token}",
            self._h_followup,
            bot_auth=False,
            limits={"POST": message_limits},
        )
        add(
            "GET PATCH DELETE",
            rf"/webhooks/{app}/{token}/messages/(?P<mid>@original|\d+)",
            self._h_webhook_message,
            bot_auth=False,
            limits={"PATCH": message_limits},
        )
        add("GET", rf"/channels/{cid}", self._h_channel)
        add(
            "GET POST",
            rf"/channels/{cid}/messages",
            self._h_channel_messages,
            limits={"POST": message_limits},
        )
        add(
            "GET PATCH DELETE",
            rf"/channels/{cid}/messages/{mid}",
            self._h_channel_message,
            limits={"PATCH": message_limits},
        )
        add("PUT DELETE", rf"/channels/{cid}/messages/{mid}/reactions/(?P<emoji>[^/]+)/@me", self._h_reaction)
        add("POST", rf"/channels/{cid}/typing", self._h_typing)

    # ------------------------------------------------------------------ REST handlers

    def _h_cdn_attachment(self, call: RecordedCall, m: dict[str, str]) -> web.StreamResponse:
        stored = self._state.cdn.get((m["aid"], m["filename"]))
        if stored is None:
            return web.Response(status=404, text="Not Found")
        data, content_type = stored
        return web.Response(body=data, headers={"Content-Type": content_type or "application/octet-stream"})

    def _h_cdn_image(self, call: RecordedCall, m: dict[str, str]) -> web.StreamResponse:
        return web.Response(body=_TINY_PNG, headers={"Content-Type": "image/png"})

    def _h_me(self, call: RecordedCall, m: dict[str, str]) -> web.StreamResponse:
        return json_response(
            200, {**self._state.bot_user, "verified": True, "mfa_enabled": False, "flags": 0}
        )

    def _h_user(self, call: RecordedCall, m: dict[str, str]) -> web.StreamResponse:
        user = self._state.users.get(int(m["uid"]))
        if user is None:
            raise DiscordError(404, 10013, "Unknown User")
        return json_response(200, user)

    def _h_create_dm(self, call: RecordedCall, m: dict[str, str]) -> web.StreamResponse:
        recipient = (call.json or {}).get("recipient_id")
        if recipient is None:
            raise form_error("recipient_id", "BASE_TYPE_REQUIRED", "This field is required")
        state = self._state
        return json_response(200, state.channels[state.dm_channel_id(int(recipient))])

    def _h_application(self, call: RecordedCall, m: dict[str, str]) -> web.StreamResponse:
        state = self._state
        owner = state.users.get(state.owner_id) or state.register_user(state.owner_id, "owner")
        return json_response(
            200,
            {
                "id": str(state.application_id),
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
                "bot": copy.deepcopy(state.bot_user),
            },
        )

    def _h_gateway_info(self, call: RecordedCall, m: dict[str, str]) -> web.StreamResponse:
        limit = {"total": 1000, "remaining": 1000, "reset_after": 0, "max_concurrency": 1}
        return json_response(200, {"url": self._gateway_url(), "shards": 1, "session_start_limit": limit})

    def _h_commands(self, call: RecordedCall, m: dict[str, str]) -> web.StreamResponse:
        state = self._state
        if int(m["app"]) != state.application_id:
            raise DiscordError(403, 50001, "Missing Access")
        guild_id = int(m["gid"]) if m.get("gid") else None
        if guild_id is not None and guild_id not in state.guild_channel:
            raise DiscordError(403, 50001, "Missing Access")
        if call.method == "GET":
            return json_response(200, state.commands.get(guild_id, []))
        # The body is a list of valid commands: command_list_limits refused anything else.
        return json_response(200, state.store_commands(guild_id, call.json))

    def _h_callback(self, call: RecordedCall, m: dict[str, str]) -> web.StreamResponse:
        state = self._state
        inter = state.interactions_by_id.get(int(m["iid"]))
        if inter is None or inter.token != m["token"] or time.monotonic() - inter.created > state.ack_window:
            raise DiscordError(404, 10062, "Unknown interaction")
        if inter.ack_type is not None:
            raise DiscordError(400, 40060, "Interaction has already been acknowledged.")
        body = call.json if isinstance(call.json, dict) else {}
        cb_type = body.get("type")
        data = body.get("data") or {}
        require_callback_type(inter.type, cb_type)
        message: dict[str, Any] | None = None
        if cb_type in (CB_MESSAGE, CB_DEFERRED_MESSAGE):
            if cb_type == CB_DEFERRED_MESSAGE:
                # A deferred response is a "thinking" placeholder until its first edit or follow-up.
                data = {"flags": (int(data.get("flags") or 0) & FLAG_EPHEMERAL) | FLAG_LOADING}
            message = state.create_message(
                inter.channel_id,
                data,
                call.files,
                inter=inter,
                message_type=self._response_message_type(inter),
            )
            inter.original_id = int(message["id"])
        elif cb_type in (CB_DEFERRED_UPDATE, CB_UPDATE):
            source = inter.payload.get("message")
            if source is None:
                raise RefusedRequest(
                    400,
                    50035,
                    "Invalid Form Body: this interaction has no message to update",
                    f"callback type {cb_type} updates a message, and this interaction has none",
                )
            message = state.live_message(int(source["id"]))
            if cb_type == CB_UPDATE:
                state.apply_content(message, data, call.files, creating=False)
            inter.original_id = int(message["id"])
        inter.ack_type = cb_type
        if call.query.get("with_response", "").lower() not in ("1", "true"):
            return no_content()
        flags = int(message.get("flags", 0)) if message is not None else 0
        resource: dict[str, Any] = {"type": cb_type}
        if message is not None:
            resource["message"] = copy.deepcopy(message)
        return json_response(
            200,
            {
                "interaction": {
                    "id": str(inter.id),
                    "type": inter.type,
                    "activity_instance_id": None,
                    "response_message_id": message["id"] if message is not None else None,
                    "response_message_loading": bool(flags & FLAG_LOADING),
                    "response_message_ephemeral": bool(flags & FLAG_EPHEMERAL),
                },
                "resource": resource,
            },
        )

    @staticmethod
    def _response_message_type(inter: Interaction) -> int:
        if inter.type != APP_COMMAND:
            return 0
        return 20 if inter.payload["data"].get("type", 1) == 1 else 23

    def _webhook_interaction(self, m: dict[str, str]) -> Interaction:
        state = self._state
        if int(m["app"]) != state.application_id:
            raise DiscordError(404, 10015, "Unknown Webhook")
        inter = state.interactions_by_token.get(m["token"])
        if inter is None or time.monotonic() - inter.created > state.token_lifetime:
            raise DiscordError(401, 50027, "Invalid Webhook Token")
        return inter

    def _h_followup(self, call: RecordedCall, m: dict[str, str]) -> web.StreamResponse:
        state = self._state
        inter = self._webhook_interaction(m)
        if inter.ack_type is None:
            # Discord only creates the interaction's webhook once the interaction is answered.
            raise DiscordError(404, 10015, "Unknown Webhook")
        body = call.json if isinstance(call.json, dict) else {}
        original = state.messages.get(inter.original_id) if inter.original_id is not None else None
        if (
            original is not None
            and original["flags"] & FLAG_LOADING
            and inter.original_id not in state.deleted
            and inter.ack_type == CB_DEFERRED_MESSAGE
        ):
            # Discord turns the first follow-up after a "thinking" defer into the deferred message itself.
            state.apply_content(
                original, {k: v for k, v in body.items() if k != "flags"}, call.files, creating=False
            )
            message = original
        else:
            message = state.create_message(inter.channel_id, body, call.files, inter=inter)
            inter.followup_ids.append(int(message["id"]))
        if call.query.get("wait", "").lower() not in ("1", "true"):
            return no_content()
        return json_response(200, message)

    def _h_webhook_message(self, call: RecordedCall, m: dict[str, str]) -> web.StreamResponse:
        state = self._state
        inter = self._webhook_interaction(m)
        if m["mid"] == "@original":
            if inter.original_id is None:
                raise DiscordError(404, 10008, "Unknown Message")
            message_id = inter.original_id
        else:
            message_id = int(m["mid"])
            if message_id != inter.original_id and message_id not in inter.followup_ids:
                raise DiscordError(404, 10008, "Unknown Message")
        message = state.live_message(message_id)
        if call.method == "DELETE":
            state.deleted.add(message_id)
            return no_content()
        if call.method == "PATCH":
            state.apply_content(message, call.json or {}, call.files, creating=False)
        return json_response(200, message)

    def _h_channel(self, call: RecordedCall, m: dict[str, str]) -> web.StreamResponse:
        return json_response(200, self._state.known_channel(int(m["cid"])))

    def _h_channel_messages(self, call: RecordedCall, m: dict[str, str]) -> web.StreamResponse:
        state = self._state
        channel_id = int(m["cid"])
        state.known_channel(channel_id)
        if call.method == "POST":
            message = state.create_message(channel_id, call.json or {}, call.files)
            return json_response(200, message)
        history = sorted(
            (
                msg
                for mid, msg in state.messages.items()
                if int(msg["channel_id"]) == channel_id
                and mid not in state.deleted
                and not msg["flags"] & FLAG_EPHEMERAL
            ),
            key=lambda msg: int(msg["id"]),
            reverse=True,
        )
        if "before" in call.query:
            history = [msg for msg in history if int(msg["id"]) < int(call.query["before"])]
        if "after" in call.query:
            history = [msg for msg in history if int(msg["id"]) > int(call.query["after"])]
        return json_response(200, history[: int(call.query.get("limit", 50))])

    def _h_channel_message(self, call: RecordedCall, m: dict[str, str]) -> web.StreamResponse:
        state = self._state
        channel_id = int(m["cid"])
        state.known_channel(channel_id)
        message_id = int(m["mid"])
        message = state.live_message(message_id, channel_id)
        if call.method == "DELETE":
            state.deleted.add(message_id)
            return no_content()
        if call.method == "PATCH":
            if int(message["author"]["id"]) != state.bot_user_id:
                raise DiscordError(403, 50005, "Cannot edit a message authored by another user")
            state.apply_content(message, call.json or {}, call.files, creating=False)
        return json_response(200, message)

    def _h_reaction(self, call: RecordedCall, m: dict[str, str]) -> web.StreamResponse:
        self._state.known_channel(int(m["cid"]))
        self._state.live_message(int(m["mid"]), int(m["cid"]))
        return no_content()

    def _h_typing(self, call: RecordedCall, m: dict[str, str]) -> web.StreamResponse:
        self._state.known_channel(int(m["cid"]))
        return no_content()
