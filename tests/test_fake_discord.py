"""Prove the fake Discord with a real discord.py client: login, gateway, interactions and recorded REST calls."""

from __future__ import annotations

import asyncio
import io
import logging
import re
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import aiohttp
import discord
import pytest
from discord import app_commands
from discord.ext import commands
from PIL import Image

from tests.fakes.discord import FakeDiscord, RecordedCall, connect_task, start_bot, stop_bot


def _png(width: int, height: int) -> bytes:
    """Encode a small real PNG."""
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 40, 40)).save(buffer, format="PNG")
    return buffer.getvalue()


RENDERED_PNG = _png(3, 2)


class Outcomes:
    """Values the bot's callbacks report, awaitable by key."""

    def __init__(self) -> None:
        self._values: dict[str, Any] = {}
        self._events: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)

    def put(self, key: str, value: Any) -> None:
        """Record a value and wake whoever waits for it."""
        self._values[key] = value
        self._events[key].set()

    async def get(self, key: str, wait: float = 5.0) -> Any:
        """Wait for a value to be recorded and return it."""
        await asyncio.wait_for(self._events[key].wait(), wait)
        return self._values[key]


class RecordingTree(app_commands.CommandTree):
    """A command tree that keeps its errors instead of only logging them, so tests can fail on them."""

    def __init__(self, client: discord.Client, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        self.errors: list[app_commands.AppCommandError] = []

    async def on_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        """Record the error."""
        self.errors.append(error)


class ErrorLog(logging.Handler):
    """Collect the ERROR records discord.py logs for exceptions it swallows (views, events, dynamic items)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        """Keep the record."""
        self.records.append(record)


class VoteButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"vote:(?P<choice>\w+)"):
    """A stateless button whose choice lives in its custom_id."""

    def __init__(self, choice: str) -> None:
        super().__init__(discord.ui.Button(label=choice, custom_id=f"vote:{choice}"))
        self.choice = choice

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> VoteButton:
        """Rebuild the button from its custom_id."""
        return cls(match["choice"])

    async def callback(self, interaction: discord.Interaction) -> None:
        """Record the vote and update the message in place."""
        cast(TinyBot, interaction.client).outcomes.put("vote", self.choice)
        await interaction.response.edit_message(content=f"voted {self.choice}")


class PersistentView(discord.ui.View):
    """A view registered at startup, so its button works on any message."""

    def __init__(self) -> None:
        super().__init__(timeout=None)

    @discord.ui.button(label="OK", custom_id="persist:ok")
    async def ok(self, interaction: discord.Interaction, button: discord.ui.Button[PersistentView]) -> None:
        """Acknowledge silently, then confirm with an ephemeral follow-up."""
        await interaction.response.defer()
        await interaction.followup.send("ok", ephemeral=True)
        cast(TinyBot, interaction.client).outcomes.put(
            "persist", interaction.message and interaction.message.id
        )

    async def on_error(
        self, interaction: discord.Interaction, error: Exception, item: discord.ui.Item[Any], /
    ) -> None:
        """Surface the error through the bot's error list."""
        cast(TinyBot, interaction.client).view_errors.append(error)


class MenuView(discord.ui.View):
    """A per-message view the /menu command sends."""

    def __init__(self, outcomes: Outcomes) -> None:
        super().__init__(timeout=60)
        self.outcomes = outcomes

    @discord.ui.select(
        custom_id="menu:pick", options=[discord.SelectOption(label="a"), discord.SelectOption(label="b")]
    )
    async def pick(self, interaction: discord.Interaction, select: discord.ui.Select[MenuView]) -> None:
        """Record the choice without changing the message."""
        self.outcomes.put("pick", list(select.values))
        await interaction.response.defer()

    @discord.ui.button(label="Go", custom_id="menu:go")
    async def go(self, interaction: discord.Interaction, button: discord.ui.Button[MenuView]) -> None:
        """Replace the menu with a result and drop the components."""
        await interaction.response.edit_message(content="went", view=None)
        self.outcomes.put("go", interaction.message and interaction.message.id)

    async def on_error(
        self, interaction: discord.Interaction, error: Exception, item: discord.ui.Item[Any], /
    ) -> None:
        """Surface the error through the bot's error list."""
        cast(TinyBot, interaction.client).view_errors.append(error)


class FeedbackModal(discord.ui.Modal, title="Feedback"):
    """A one-field modal."""

    text: discord.ui.TextInput[FeedbackModal] = discord.ui.TextInput(label="Text", custom_id="feedback:text")

    def __init__(self) -> None:
        super().__init__(custom_id="feedback")

    async def on_submit(self, interaction: discord.Interaction) -> None:
        """Thank the user ephemerally."""
        await interaction.response.send_message(f"thanks: {self.text.value}", ephemeral=True)

    # Modal.on_error drops BaseView's `item` argument; discord.py's own signature trips mypy's override check.
    async def on_error(self, interaction: discord.Interaction, error: Exception, /) -> None:  # type: ignore[override]
        """Surface the error through the bot's error list."""
        cast(TinyBot, interaction.client).view_errors.append(error)


class TinyBot(commands.Bot):
    """A small bot exercising the interaction paths the fake must support."""

    def __init__(self) -> None:
        super().__init__(
            command_prefix="!",
            intents=discord.Intents.default(),
            tree_cls=RecordingTree,
            chunk_guilds_at_startup=False,
            guild_ready_timeout=0.05,
        )
        self.outcomes = Outcomes()
        self.gate = asyncio.Event()
        self.view_errors: list[Exception] = []
        self._add_commands()

    @property
    def recording_tree(self) -> RecordingTree:
        """Give the tree with its recorded errors."""
        return cast(RecordingTree, self.tree)

    async def setup_hook(self) -> None:
        """Register the stateless and persistent components."""
        self.add_dynamic_items(VoteButton)
        self.add_view(PersistentView())

    async def on_message(self, message: discord.Message) -> None:
        """Report gateway messages."""
        self.outcomes.put("on_message", message.content)

    def _add_commands(self) -> None:
        tree = self.tree

        @tree.command(description="Answer pong after thinking")
        async def ping(interaction: discord.Interaction) -> None:
            await interaction.response.defer(thinking=True)
            await interaction.edit_original_response(content="pong")

        @tree.command(description="Report an attachment's size")
        async def size(interaction: discord.Interaction, image: discord.Attachment) -> None:
            await interaction.response.defer()
            data = await image.read()
            await interaction.edit_original_response(content=f"{len(data)} bytes")

        @tree.command(description="Answer with a file")
        async def render(interaction: discord.Interaction) -> None:
            await interaction.response.defer()
            file = discord.File(io.BytesIO(RENDERED_PNG), filename="out.png")
            await interaction.edit_original_response(content="rendered", attachments=[file])

        @tree.command(description="Acknowledge only when the test opens the gate")
        async def slow(interaction: discord.Interaction) -> None:
            await self.gate.wait()
            try:
                await interaction.response.defer()
            except discord.NotFound as exc:
                self.outcomes.put("slow", (exc.status, exc.code))
            else:
                self.outcomes.put("slow", "acknowledged")

        @tree.command(description="Edit only when the test opens the gate")
        async def late_edit(interaction: discord.Interaction) -> None:
            await interaction.response.defer()
            await self.gate.wait()
            try:
                await interaction.edit_original_response(content="too late")
            except discord.HTTPException as exc:
                self.outcomes.put("late_edit", (exc.status, exc.code))
            else:
                self.outcomes.put("late_edit", "edited")

        @tree.command(description="Post in the channel")
        async def announce(interaction: discord.Interaction) -> None:
            await interaction.response.defer(ephemeral=True)
            assert isinstance(interaction.channel, discord.TextChannel)
            try:
                await interaction.channel.send("hello")
            except discord.Forbidden as exc:
                await interaction.edit_original_response(content=f"failed {exc.code}")
            else:
                await interaction.edit_original_response(content="sent")

        @tree.command(description="Show a menu")
        async def menu(interaction: discord.Interaction) -> None:
            await interaction.response.send_message("pick one", view=MenuView(self.outcomes))

        @tree.command(description="Ask for feedback")
        async def feedback(interaction: discord.Interaction) -> None:
            await interaction.response.send_modal(FeedbackModal())

        admin = app_commands.Group(name="admin", description="Administration")
        config = app_commands.Group(name="config", description="Configuration", parent=admin)

        @admin.command(description="Grant a level")
        async def grant(
            interaction: discord.Interaction,
            member: discord.Member,
            level: int,
            reason: str = "none",
            loud: bool = False,
        ) -> None:
            roles = sorted(r.id for r in member.roles if not r.is_default())
            assert isinstance(interaction.user, discord.Member)
            caller_roles = sorted(r.id for r in interaction.user.roles if not r.is_default())
            self.outcomes.put(
                "grant",
                (member.id, roles, level, reason, loud, caller_roles, interaction.permissions.manage_guild),
            )
            await interaction.response.send_message("granted")

        @config.command(name="set", description="Set a key")
        async def config_set(interaction: discord.Interaction, key: str) -> None:
            self.outcomes.put("config_set", key)
            await interaction.response.send_message(f"set {key}")

        tree.add_command(admin)

        async def fruit_choices(
            interaction: discord.Interaction, current: str
        ) -> list[app_commands.Choice[str]]:
            self.outcomes.put("typed", current)
            return [
                app_commands.Choice(name=f, value=f)
                for f in ("apple", "apricot", "banana")
                if f.startswith(current)
            ]

        @tree.command(description="Choose a fruit")
        @app_commands.autocomplete(fruit=fruit_choices)
        async def choose(interaction: discord.Interaction, fruit: str) -> None:
            await interaction.response.send_message(fruit)

        @tree.command(description="Edit a message by id")
        async def edit_other(interaction: discord.Interaction, message_id: str) -> None:
            assert isinstance(interaction.channel, discord.TextChannel)
            try:
                message = await interaction.channel.fetch_message(int(message_id))
                await message.edit(content="edited")
            except discord.HTTPException as exc:
                self.outcomes.put("edit_other", (exc.status, exc.code))
            else:
                self.outcomes.put("edit_other", "edited")
            await interaction.response.send_message("done", ephemeral=True)

        @tree.command(description="Answer with nothing")
        async def empty(interaction: discord.Interaction) -> None:
            try:
                await interaction.response.send_message()
            except discord.HTTPException as exc:
                self.outcomes.put("empty", (exc.status, exc.code))

        @tree.context_menu(name="Count words")
        async def count_words(interaction: discord.Interaction, message: discord.Message) -> None:
            filenames = [a.filename for a in message.attachments]
            self.outcomes.put("count", (message.id, message.content, filenames))
            await interaction.response.send_message(str(len(message.content.split())), ephemeral=True)


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    """Serve a fresh fake Discord, installed into discord.py."""
    async with FakeDiscord() as fake_discord:
        yield fake_discord


@pytest.fixture
async def bot(fake: FakeDiscord) -> AsyncIterator[TinyBot]:
    """Run TinyBot against the fake and fail the test on any error it swallowed."""
    errors = ErrorLog()
    discord_logger = logging.getLogger("discord")
    discord_logger.addHandler(errors)
    tiny = TinyBot()
    try:
        await start_bot(tiny, fake)
        yield tiny
    finally:
        await stop_bot(tiny, fake)
        discord_logger.removeHandler(errors)
    assert tiny.recording_tree.errors == []
    assert tiny.view_errors == []
    assert [r.getMessage() for r in errors.records] == []
    fake.assert_no_violations()


def _shape(calls: list[RecordedCall]) -> list[tuple[str, str, int]]:
    """Reduce calls to (method, path, status) for sequence assertions."""
    return [(c.method, c.path, c.status) for c in calls]


async def _run(fake: FakeDiscord, payload: dict[str, Any], last: str = "PATCH") -> list[RecordedCall]:
    """Send an interaction and return its calls once one with method `last` has been answered."""
    token = payload["token"]
    await fake.send_interaction(payload)
    await fake.wait_for_call(lambda c: c.method == last and token in c.path)
    return fake.interaction_calls(token)


def _callback(payload: dict[str, Any]) -> str:
    """Give the recorded path of the interaction's callback."""
    return f"/interactions/{payload['id']}/{payload['token']}/callback"


def _original(fake: FakeDiscord, payload: dict[str, Any]) -> str:
    """Give the recorded path of the interaction's original response."""
    return f"/webhooks/{fake.application_id}/{payload['token']}/messages/@original"


async def test_login_and_gateway_handshake(fake: FakeDiscord, bot: TinyBot) -> None:
    login = fake.calls[:2]
    assert [(c.method, c.path, c.status) for c in login] == [
        ("GET", "/users/@me", 200),
        ("GET", "/oauth2/applications/@me", 200),
    ]
    # Compare booleans so a failure never prints the token.
    assert [c.auth == "Bot fake-token" for c in login] == [True, True]
    assert bot.user is not None
    assert bot.user.id == fake.bot_user_id
    assert bot.application_id == fake.application_id
    await asyncio.wait_for(bot.wait_until_ready(), 2)
    guild = bot.get_guild(fake.guild_ids[0])
    assert guild is not None
    assert guild.me is not None
    channel = guild.get_channel(fake.channel_id)
    assert isinstance(channel, discord.TextChannel)
    assert channel.permissions_for(guild.me).send_messages
    identify = [f for f in fake.gateway_received if f.get("op") == 2]
    assert len(identify) == 1
    assert identify[0]["d"]["token"] == "<redacted>"
    assert fake.identify_count == 1


async def test_ping_defers_then_edits_original(fake: FakeDiscord, bot: TinyBot) -> None:
    payload = fake.slash("ping")
    start = len(fake.calls)
    calls = await _run(fake, payload)
    assert _shape(calls) == [("POST", _callback(payload), 200), ("PATCH", _original(fake, payload), 200)]
    assert fake.calls_since(start) == calls
    assert calls[0].query == {"with_response": "1"}
    assert calls[0].json == {"type": 5}
    assert calls[1].json["content"] == "pong"
    original = fake.original_reply(payload["token"])
    assert original["content"] == "pong"
    assert original["flags"] == 0  # the edit cleared the "thinking" flag
    assert original["author"]["id"] == str(fake.bot_user_id)
    assert fake.channel_messages(fake.channel_id) == [original]


async def test_attachment_option_is_read_through_the_cdn(fake: FakeDiscord, bot: TinyBot) -> None:
    data = _png(40, 30)
    attachment = fake.add_attachment(data, filename="cat.png")
    assert (attachment["width"], attachment["height"]) == (40, 30)
    payload = fake.slash("size", attachments={"image": attachment})
    assert payload["data"]["options"] == [{"name": "image", "type": 11, "value": attachment["id"]}]
    start = len(fake.calls)
    await _run(fake, payload)
    assert _shape(fake.calls_since(start)) == [
        ("POST", _callback(payload), 200),
        ("GET", f"/cdn/attachments/{attachment['id']}/cat.png", 200),
        ("PATCH", _original(fake, payload), 200),
    ]
    original = fake.original_reply(payload["token"])
    assert original["content"] == f"{len(data)} bytes"


async def test_file_in_edit_is_recorded_as_multipart(fake: FakeDiscord, bot: TinyBot) -> None:
    payload = fake.slash("render")
    calls = await _run(fake, payload)
    patch = calls[-1]
    assert patch.json["content"] == "rendered"
    assert patch.json["attachments"] == [{"id": 0, "filename": "out.png"}]
    assert patch.files == [("out.png", RENDERED_PNG, "application/octet-stream")]
    original = fake.original_reply(payload["token"])
    [uploaded] = original["attachments"]
    assert (uploaded["filename"], uploaded["size"], uploaded["width"], uploaded["height"]) == (
        "out.png",
        len(RENDERED_PNG),
        3,
        2,
    )
    async with aiohttp.ClientSession() as session, session.get(uploaded["url"]) as response:
        assert await response.read() == RENDERED_PNG


async def test_callback_after_the_ack_window_gets_unknown_interaction(
    fake: FakeDiscord, bot: TinyBot
) -> None:
    payload = fake.slash("slow")
    await fake.send_interaction(payload)
    fake.age_interaction(payload["token"], fake.ack_window + 1)
    bot.gate.set()
    assert await bot.outcomes.get("slow") == (404, 10062)
    assert _shape(fake.interaction_calls(payload["token"])) == [("POST", _callback(payload), 404)]


async def test_expired_token_gets_invalid_webhook_token(fake: FakeDiscord, bot: TinyBot) -> None:
    payload = fake.slash("late_edit")
    await fake.send_interaction(payload)
    await fake.wait_for_call(lambda c: c.path == _callback(payload))
    fake.age_interaction(payload["token"], fake.token_lifetime + 1)
    bot.gate.set()
    assert await bot.outcomes.get("late_edit") == (401, 50027)
    assert [c.status for c in fake.interaction_calls(payload["token"])] == [200, 401]


async def test_fail_next_injects_a_forbidden_once(fake: FakeDiscord, bot: TinyBot) -> None:
    fake.fail_next("POST", r"^/channels/\d+/messages$", status=403, code=50013, message="Missing Permissions")
    first = fake.slash("announce")
    await _run(fake, first)
    failed = fake.original_reply(first["token"])
    assert failed["content"] == "failed 50013"
    assert failed["flags"] & 64  # the deferral was ephemeral, so is its message
    assert "hello" not in [m["content"] for m in fake.channel_messages()]

    second = fake.slash("announce")
    await _run(fake, second)
    sent = fake.original_reply(second["token"])
    assert sent["content"] == "sent"
    posts = [
        c for c in fake.calls if c.method == "POST" and c.path == f"/channels/{fake.channel_id}/messages"
    ]
    assert [c.status for c in posts] == [403, 200]
    assert [m["content"] for m in fake.channel_messages(fake.channel_id) if not m["flags"] & 64] == ["hello"]


async def test_fail_next_rate_limit_is_retried(fake: FakeDiscord, bot: TinyBot) -> None:
    fake.fail_next("PATCH", "@original$", status=429, retry_after=0.05)
    payload = fake.slash("ping")
    await fake.send_interaction(payload)
    await fake.wait_for_call(lambda c: c.method == "PATCH" and c.status == 200 and payload["token"] in c.path)
    assert [c.status for c in fake.interaction_calls(payload["token"])] == [200, 429, 200]
    original = fake.original_reply(payload["token"])
    assert original["content"] == "pong"


async def test_message_context_menu_gets_the_resolved_message(fake: FakeDiscord, bot: TinyBot) -> None:
    attachment = fake.add_attachment(b"not really a png", filename="notes.txt", content_type="text/plain")
    target = fake.make_message(content="three little words", attachments=[attachment])
    payload = fake.message_command("Count words", target)
    calls = await _run(fake, payload, last="POST")
    assert await bot.outcomes.get("count") == (int(target["id"]), "three little words", ["notes.txt"])
    assert _shape(calls) == [("POST", _callback(payload), 200)]
    assert calls[0].json["type"] == 4
    original = fake.original_reply(payload["token"])
    assert (original["content"], original["flags"]) == ("3", 64)


async def test_dynamic_item_button_reaches_its_callback(fake: FakeDiscord, bot: TinyBot) -> None:
    row = {"type": 1, "components": [{"type": 2, "style": 1, "label": "yes", "custom_id": "vote:yes"}]}
    message = fake.make_message(content="vote?", author_id=fake.bot_user_id, components=[row])
    payload = fake.button_click("vote:yes", message)
    calls = await _run(fake, payload, last="POST")
    assert await bot.outcomes.get("vote") == "yes"
    assert calls[0].json["type"] == 7
    updated = fake.get_message(int(message["id"]))
    assert updated is not None
    assert updated["content"] == "voted yes"
    assert fake.original_message(payload["token"]) == updated


async def test_persistent_view_button_defers_and_follows_up(fake: FakeDiscord, bot: TinyBot) -> None:
    row = {"type": 1, "components": [{"type": 2, "style": 3, "label": "OK", "custom_id": "persist:ok"}]}
    message = fake.make_message(content="confirm?", author_id=fake.bot_user_id, components=[row])
    payload = fake.button_click("persist:ok", message)
    await fake.send_interaction(payload)
    assert await bot.outcomes.get("persist") == int(message["id"])
    calls = fake.interaction_calls(payload["token"])
    assert _shape(calls) == [
        ("POST", _callback(payload), 200),
        ("POST", f"/webhooks/{fake.application_id}/{payload['token']}", 200),
    ]
    assert calls[0].json == {"type": 6}
    assert calls[1].query["wait"] == "1"  # discord.py asks for the created message back
    [followup] = fake.followup_messages(payload["token"])
    assert (followup["content"], followup["flags"]) == ("ok", 64)


async def test_view_sent_by_a_command_handles_select_and_button(fake: FakeDiscord, bot: TinyBot) -> None:
    command = fake.slash("menu")
    await _run(fake, command, last="POST")
    menu = fake.original_reply(command["token"])
    assert menu["content"] == "pick one"

    pick = fake.select("menu:pick", ["b"], menu)
    await fake.send_interaction(pick)
    assert await bot.outcomes.get("pick") == ["b"]

    go = fake.button_click("menu:go", menu)
    await fake.send_interaction(go)
    assert await bot.outcomes.get("go") == int(menu["id"])
    assert [c.json["type"] for c in fake.interaction_calls(pick["token"])] == [6]
    assert [c.json["type"] for c in fake.interaction_calls(go["token"])] == [7]
    updated = fake.get_message(int(menu["id"]))
    assert updated is not None
    assert (updated["content"], updated["components"]) == ("went", [])


async def test_modal_round_trip(fake: FakeDiscord, bot: TinyBot) -> None:
    command = fake.slash("feedback")
    calls = await _run(fake, command, last="POST")
    assert calls[0].json["type"] == 9
    assert calls[0].json["data"]["custom_id"] == "feedback"
    submit = fake.modal_submit("feedback", {"feedback:text": "great bot"})
    await _run(fake, submit, last="POST")
    thanks = fake.original_reply(submit["token"])
    assert (thanks["content"], thanks["flags"]) == ("thanks: great bot", 64)


async def test_dm_interaction(fake: FakeDiscord, bot: TinyBot) -> None:
    payload = fake.slash("ping", guild_id=None)
    assert "member" not in payload
    assert payload["user"]["id"] == str(fake.default_user_id)
    await _run(fake, payload)
    original = fake.original_reply(payload["token"])
    assert original["content"] == "pong"
    assert original["channel_id"] == str(fake.dm_channel_id(fake.default_user_id))
    assert "guild_id" not in original


async def test_gateway_resume_and_message_events(fake: FakeDiscord, bot: TinyBot) -> None:
    await fake.disconnect_gateway()
    await fake.wait_connected()
    assert (fake.identify_count, fake.resume_count) == (1, 1)
    await fake.dispatch("MESSAGE_CREATE", fake.make_message(content="hi there"))
    assert await bot.outcomes.get("on_message") == "hi there"
    payload = fake.slash("ping")
    await _run(fake, payload)
    assert [c.status for c in fake.interaction_calls(payload["token"])] == [200, 200]


async def test_tree_sync_is_answered_with_command_ids(fake: FakeDiscord, bot: TinyBot) -> None:
    synced = await bot.tree.sync()
    [put] = [c for c in fake.calls if c.method == "PUT"]
    assert put.path == f"/applications/{fake.application_id}/commands"
    assert sorted(c.name for c in synced) == sorted(c["name"] for c in put.json)
    stored = {c["name"]: int(c["id"]) for c in fake.synced_commands()}
    assert {c.name: c.id for c in synced} == stored
    assert int(fake.slash("ping")["data"]["id"]) == stored["ping"]


async def test_malformed_dispatch_crash_is_surfaced(fake: FakeDiscord) -> None:
    tiny = TinyBot()
    await start_bot(tiny, fake)
    await fake.dispatch("INTERACTION_CREATE", {"type": 2})
    # Waits on the fake fail fast (instead of timing out) once the bot's gateway task has died.
    with pytest.raises(RuntimeError, match="gateway task crashed"):
        await fake.wait_for_call(lambda c: False, timeout=5)
    task = connect_task(tiny)
    assert task is not None
    assert isinstance(task.exception(), KeyError)
    with pytest.raises(RuntimeError, match="crashed"):
        await stop_bot(tiny, fake)


async def test_raw_http_contract(fake: FakeDiscord) -> None:
    bad_command = [{"name": "Ping", "description": "x", "type": 1}]
    async with aiohttp.ClientSession(headers={"Authorization": "Bot raw"}) as session:
        async with session.get(f"{fake.base_url}/api/v10/guilds/1/bans") as response:
            assert response.status == 404
            assert response.headers["Content-Type"] == "application/json"
            assert await response.json() == {"message": "Unknown route (fake)", "code": 0}
        url = f"{fake.base_url}/api/v10/applications/{fake.application_id}/commands"
        async with session.put(url, json=bad_command) as response:
            assert response.status == 400
            body = await response.json()
            assert body["code"] == 50035
            assert "0" in body["errors"]
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{fake.base_url}/api/v10/users/@me") as response,
    ):
        assert response.status == 401
    assert _shape(fake.calls) == [
        ("GET", "/guilds/1/bans", 404),
        ("PUT", f"/applications/{fake.application_id}/commands", 400),
        ("GET", "/users/@me", 401),
    ]


async def test_typed_options_roles_and_subcommand_groups(fake: FakeDiscord, bot: TinyBot) -> None:
    target = fake.make_user(777777777777777777, "target")
    payload = fake.slash(
        "admin",
        {"member": target, "level": 3, "loud": True},
        subcommand="grant",
        roles=[888888888888888888],
        permissions=int(discord.Permissions(manage_guild=True).value),
    )
    assert [o["type"] for o in payload["data"]["options"][0]["options"]] == [6, 4, 5]
    await _run(fake, payload, last="POST")
    # The role was unknown to the guild, so the fake announced it with GUILD_ROLE_CREATE first.
    caller_roles = [888888888888888888]
    assert await bot.outcomes.get("grant") == (777777777777777777, [], 3, "none", True, caller_roles, True)

    nested = fake.slash("admin", {"key": "colour"}, subcommand="config set")
    assert nested["data"]["options"][0]["type"] == 2  # a subcommand group holding the subcommand
    await _run(fake, nested, last="POST")
    assert await bot.outcomes.get("config_set") == "colour"


async def test_autocomplete(fake: FakeDiscord, bot: TinyBot) -> None:
    payload = fake.autocomplete("choose", {"fruit": "ap"}, focused="fruit")
    calls = await _run(fake, payload, last="POST")
    assert await bot.outcomes.get("typed") == "ap"
    assert calls[0].json == {
        "type": 8,
        "data": {"choices": [{"name": "apple", "value": "apple"}, {"name": "apricot", "value": "apricot"}]},
    }


async def test_message_edit_rules(fake: FakeDiscord, bot: TinyBot) -> None:
    someone_elses = fake.make_message(content="not yours")
    await _run(fake, fake.slash("edit_other", {"message_id": someone_elses["id"]}), last="POST")
    assert await bot.outcomes.get("edit_other") == (403, 50005)

    mine = fake.make_message(content="mine", author_id=fake.bot_user_id)
    fake.delete_message(int(mine["id"]))
    bot.outcomes = Outcomes()
    await _run(fake, fake.slash("edit_other", {"message_id": mine["id"]}), last="POST")
    assert await bot.outcomes.get("edit_other") == (404, 10008)

    payload = fake.slash("empty")
    await fake.send_interaction(payload)
    assert await bot.outcomes.get("empty") == (400, 50006)
    assert [c.status for c in fake.interaction_calls(payload["token"])] == [400]
    # An empty message is a request Discord refuses: the fake keeps it as a violation.
    assert fake.violations == [f"POST {_callback(payload)}: Cannot send an empty message"]
    fake.violations.clear()


class NoIdentifyDelayBot(TinyBot):
    """TinyBot without discord.py's 5 s pause before a non-initial IDENTIFY (meant for real rate limits)."""

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        """Identify at once."""


async def test_restart_and_non_resumable_reconnect(fake: FakeDiscord) -> None:
    first = TinyBot()
    await start_bot(first, fake)
    await stop_bot(first, fake)

    second = NoIdentifyDelayBot()
    await start_bot(second, fake)
    try:
        await fake.disconnect_gateway(resumable=False)
        await fake.wait_connected()
        payload = fake.slash("ping")
        await _run(fake, payload)
        original = fake.original_reply(payload["token"])
        assert original["content"] == "pong"
    finally:
        await stop_bot(second, fake)
    assert fake.identify_count == 3  # two bots, then a re-identify after the refused RESUME
    assert [f["op"] for f in fake.gateway_received if f.get("op") in (2, 6)] == [2, 2, 6, 2]


# ---------------------------------------------------------------- requests Discord would refuse


def _channel(bot: TinyBot, fake: FakeDiscord) -> discord.PartialMessageable:
    """Give the guild channel without waiting for the guild cache."""
    return bot.get_partial_messageable(fake.channel_id)


def _create_message(fake: FakeDiscord) -> discord.http.Route:
    """Give the route of POST /channels/{id}/messages, for bodies discord.py's typed API would not build."""
    return discord.http.Route("POST", "/channels/{channel_id}/messages", channel_id=fake.channel_id)


def _row(name: str) -> dict[str, Any]:
    """Build an action row with one button."""
    return {"type": 1, "components": [{"type": 2, "style": 1, "label": name, "custom_id": name}]}


def _button(custom_id: str) -> discord.ui.View:
    """Build a view with one button."""
    view = discord.ui.View(timeout=None)
    view.add_item(discord.ui.Button(label="press", custom_id=custom_id))
    return view


# Each sends one message through the bot at a documented limit, or `over` it by one.
async def _send_content(bot: TinyBot, fake: FakeDiscord, over: int) -> None:
    await _channel(bot, fake).send("c" * (2000 + over))


async def _send_action_rows(bot: TinyBot, fake: FakeDiscord, over: int) -> None:
    # discord.py's View has rows 0-4 only, so the bot's HTTP client sends the raw body.
    rows = [_row(f"row{i}") for i in range(5 + over)]
    await bot.http.request(_create_message(fake), json={"content": "rows", "components": rows})


async def _send_custom_id(bot: TinyBot, fake: FakeDiscord, over: int) -> None:
    await _channel(bot, fake).send("press it", view=_button("i" * (100 + over)))


async def _send_embeds(bot: TinyBot, fake: FakeDiscord, over: int) -> None:
    embeds = [discord.Embed(description="d" * 4096), discord.Embed(description="d" * (1904 + over))]
    await _channel(bot, fake).send(embeds=embeds)


async def _send_field_value(bot: TinyBot, fake: FakeDiscord, over: int) -> None:
    embed = discord.Embed(title="t").add_field(name="f", value="v" * (1024 + over))
    await _channel(bot, fake).send(embed=embed)


LIMITS = [
    pytest.param(_send_content, "content", "Must be 2000 or fewer in length.", id="content-2000"),
    pytest.param(_send_action_rows, "components", "Must be 5 or fewer in length.", id="action-rows-5"),
    pytest.param(
        _send_custom_id,
        "components.0.components.0.custom_id",
        "Must be between 1 and 100 in length.",
        id="custom-id-100",
    ),
    pytest.param(_send_embeds, "embeds", "Embed size exceeds maximum size of 6000", id="embeds-6000"),
    pytest.param(
        _send_field_value,
        "embeds.0.fields.0.value",
        "Must be 1024 or fewer in length.",
        id="field-value-1024",
    ),
]
Send = Callable[[TinyBot, FakeDiscord, int], Awaitable[None]]


def _assert_refused(
    fake: FakeDiscord,
    refused: pytest.ExceptionInfo[discord.HTTPException],
    request: str,
    field: str,
    message: str,
) -> None:
    """Check the answer named the field as Discord would, and the fake kept the violation."""
    assert (refused.value.status, refused.value.code) == (400, 50035)
    assert f"In {field}: {message}" in refused.value.text
    assert fake.violations == [f"{request}: {field}: {message}"]
    with pytest.raises(AssertionError, match="Discord would refuse"):
        fake.assert_no_violations()
    fake.violations.clear()  # the bot fixture fails on any violation left


@pytest.mark.parametrize(("send", "field", "message"), LIMITS)
async def test_a_message_over_a_documented_limit_is_refused_and_kept(
    fake: FakeDiscord, bot: TinyBot, send: Send, field: str, message: str
) -> None:
    with pytest.raises(discord.HTTPException) as refused:
        await send(bot, fake, 1)
    _assert_refused(fake, refused, f"POST /channels/{fake.channel_id}/messages", field, message)
    assert fake.channel_messages() == []


@pytest.mark.parametrize(("send", "field", "message"), LIMITS)
async def test_a_message_at_a_documented_limit_is_accepted(
    fake: FakeDiscord, bot: TinyBot, send: Send, field: str, message: str
) -> None:
    await send(bot, fake, 0)
    assert [c.status for c in fake.calls if c.method == "POST"] == [200]
    assert len(fake.channel_messages()) == 1
    assert fake.violations == []


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        pytest.param({"content": "hi", "tts": "yes"}, "tts", "Must be either true or false.", id="tts"),
        pytest.param({"content": "hi", "embeds": "x"}, "embeds", "Must be an array.", id="embeds"),
        pytest.param(
            {"content": "hi", "message_reference": {"message_id": "last"}},
            "message_reference.message_id",
            'Value "last" is not snowflake.',
            id="snowflake",
        ),
    ],
)
async def test_a_body_the_spec_does_not_allow_is_refused_and_kept(
    fake: FakeDiscord, bot: TinyBot, body: dict[str, Any], field: str, message: str
) -> None:
    # discord.py's typed API cannot build these; its HTTP client sends them as they are.
    with pytest.raises(discord.HTTPException) as refused:
        await bot.http.request(_create_message(fake), json=body)
    _assert_refused(fake, refused, f"POST /channels/{fake.channel_id}/messages", field, message)


async def test_a_multipart_body_is_checked_through_its_payload_json(fake: FakeDiscord) -> None:
    form = aiohttp.FormData()
    form.add_field("payload_json", '{"content": "file", "tts": "yes"}', content_type="application/json")
    form.add_field("files[0]", RENDERED_PNG, filename="out.png", content_type="image/png")
    url = f"{fake.base_url}/api/v10/channels/{fake.channel_id}/messages"
    async with (
        aiohttp.ClientSession(headers={"Authorization": "Bot raw"}) as session,
        session.post(url, data=form) as response,
    ):
        assert response.status == 400
        body = await response.json()
    assert body["code"] == 50035
    assert body["errors"] == {
        "tts": {"_errors": [{"code": "BASE_TYPE_BOOLEAN", "message": "Must be either true or false."}]}
    }
    assert fake.violations == [
        f"POST /channels/{fake.channel_id}/messages: tts: Must be either true or false."
    ]


async def test_routes_and_methods_discord_does_not_have_are_refused_and_kept(
    fake: FakeDiscord, bot: TinyBot
) -> None:
    nonsense = discord.http.Route("GET", "/channels/{channel_id}/nonsense", channel_id=fake.channel_id)
    with pytest.raises(discord.NotFound) as unknown:
        await bot.http.request(nonsense)
    with pytest.raises(discord.HTTPException) as wrong_method:
        await bot.http.request(discord.http.Route("PUT", "/users/@me"))
    assert (unknown.value.status, unknown.value.text) == (404, "404: Not Found")
    assert (wrong_method.value.status, wrong_method.value.text) == (405, "405: Method Not Allowed")
    assert fake.violations == [
        f"GET /channels/{fake.channel_id}/nonsense: Discord has no such route",
        "PUT /users/@me: Discord has no PUT for this path",
    ]
    fake.violations.clear()


async def test_interaction_webhooks_are_held_to_the_same_limits(fake: FakeDiscord, bot: TinyBot) -> None:
    payload = fake.slash("late_edit")
    await fake.send_interaction(payload)
    await fake.wait_for_call(lambda c: c.path == _callback(payload))
    webhook = discord.Webhook.partial(fake.application_id, payload["token"], client=bot)
    with pytest.raises(discord.HTTPException) as refused:
        await webhook.send("w" * 2001, wait=True)
    path = f"POST /webhooks/{fake.application_id}/{payload['token']}"
    _assert_refused(fake, refused, path, "content", "Must be 2000 or fewer in length.")
    sent = await webhook.send("w" * 2000, wait=True)
    assert len(sent.content) == 2000
    bot.gate.set()
    assert await bot.outcomes.get("late_edit") == "edited"


async def test_what_real_discord_accepts_beyond_the_spec_is_accepted(fake: FakeDiscord, bot: TinyBot) -> None:
    target = fake.make_message(content="reply to me")
    # Integer snowflakes, as discord.py sends them in replies, mentions and upload indexes.
    body = {
        "content": "a reply",
        "message_reference": {"message_id": int(target["id"]), "channel_id": fake.channel_id},
        "allowed_mentions": {"parse": [], "users": [fake.default_user_id]},
    }
    reply = await bot.http.request(_create_message(fake), json=body)
    assert reply["referenced_message"]["id"] == target["id"]
    # default_member_permissions as the string Discord documents, and as the int discord.py sends.
    commands = discord.http.Route("PUT", "/applications/{app}/commands", app=fake.application_id)
    listed = [
        {"name": "admin", "description": "Administration", "default_member_permissions": "32"},
        {"name": "config", "description": "Configuration", "default_member_permissions": 32},
    ]
    synced = await bot.http.request(commands, json=listed)
    assert [c["default_member_permissions"] for c in synced] == ["32", 32]
    with pytest.raises(discord.HTTPException) as refused:
        await bot.http.request(commands, json=[{**listed[0], "default_member_permissions": "admins"}])
    path = f"PUT /applications/{fake.application_id}/commands"
    _assert_refused(fake, refused, path, "0.default_member_permissions", 'Value "admins" is not int.')


async def test_without_the_spec_check_the_documented_limits_still_hold() -> None:
    async with (
        FakeDiscord(validate_requests=False) as fake,
        aiohttp.ClientSession(headers={"Authorization": "Bot raw"}) as session,
    ):
        url = f"{fake.base_url}/api/v10/channels/{fake.channel_id}/messages"
        async with session.post(url, json={"content": "hi", "tts": "yes"}) as response:
            assert response.status == 200  # the spec's types are not checked
        async with session.post(url, json={"content": "c" * 2001}) as response:
            assert response.status == 400
        assert fake.violations == [
            f"POST /channels/{fake.channel_id}/messages: content: Must be 2000 or fewer in length."
        ]


@pytest.mark.parametrize(
    ("command", "field", "message"),
    [
        pytest.param(
            {"name": "describe", "description": "d", "name_localizations": {"de": "Bild beschreiben"}},
            "0.name_localizations.de",
            "Command name is invalid",
            id="slash name with a space and a capital",
        ),
        pytest.param(
            {"name": "describe", "description": "d", "description_localizations": {"ja": "説" * 101}},
            "0.description_localizations.ja",
            "Must be between 1 and 100 in length.",
            id="description over 100",
        ),
        pytest.param(
            {"name": "describe", "description": "d", "name_localizations": {"german": "beschreiben"}},
            "0.name_localizations.german",
            "Value must be one of",
            id="not a Discord locale",
        ),
        pytest.param(
            {"name": "Describe image", "type": 3, "name_localizations": {"fr": "D" * 33}},
            "0.name_localizations.fr",
            "Must be between 1 and 32 in length.",
            id="menu name over 32",
        ),
        pytest.param(
            {
                "name": "describe",
                "description": "d",
                "options": [
                    {
                        "type": 3,
                        "name": "style",
                        "description": "s",
                        "choices": [{"name": "Short", "value": "short", "name_localizations": {"de": ""}}],
                    }
                ],
            },
            "0.options.0.choices.0.name_localizations.de",
            "Must be between 1 and 100 in length.",
            id="empty choice name",
        ),
    ],
)
async def test_localized_commands_keep_the_rules_of_the_field_they_localize(
    fake: FakeDiscord, bot: TinyBot, command: dict[str, Any], field: str, message: str
) -> None:
    commands = discord.http.Route("PUT", "/applications/{app}/commands", app=fake.application_id)
    with pytest.raises(discord.HTTPException) as refused:
        await bot.http.request(commands, json=[command])
    assert (refused.value.status, refused.value.code) == (400, 50035)
    assert f"In {field}: {message}" in refused.value.text
    [violation] = fake.violations
    assert violation.startswith(f"PUT /applications/{fake.application_id}/commands: {field}: {message}")
    fake.violations.clear()
