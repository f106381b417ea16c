"""The terminal commands an admin runs: invite, check (and --live), health, and the heartbeat behind it."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from aiohttp import web

from bot import cli
from bot.__main__ import main
from bot.discord.client import ImageBot
from bot.discord.heartbeat import DEFAULT_MAX_AGE, Heartbeat, gateway_connected, heartbeat_age, heartbeat_path
from bot.settings import Settings, load_settings
from bot.settings_docs import setting_docs
from bot.store.sqlite.database import Database
from tests.conftest import FREEPIK_KEY, NOVITA_KEY, Harness, eventually
from tests.fakes.discord import start_bot, stop_bot
from tests.fakes.providers import FakeFreepik, FakeNovita

ROOT = Path(__file__).resolve().parent.parent
APPLICATION_ID = 123456789012345678
# A token has the bot's id in base64 as its first part; the rest is opaque.
TOKEN = base64.b64encode(str(APPLICATION_ID).encode()).decode().rstrip("=") + ".GxYz12.not-a-real-secret-part"
# Worked out by hand from Discord's permission bits, not with the code under test:
# View Channels 1<<10, Send Messages 1<<11, Embed Links 1<<14, Attach Files 1<<15, Send Messages in Threads 1<<38.
PERMISSIONS = 1024 + 2048 + 16384 + 32768 + 274877906944
assert PERMISSIONS == 274877959168
# ... plus Read Message History 1<<16 when the bot answers mentions (it replies to the member's message).
PERMISSIONS_WITH_MENTIONS = PERMISSIONS + 65536


def error_lines(captured: pytest.CaptureResult[str]) -> list[str]:
    assert "Traceback" not in captured.err
    return [line for line in captured.err.splitlines() if line.startswith("error:")]


# --- invite -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mention_trigger", "permissions"), [("false", PERMISSIONS), ("true", PERMISSIONS_WITH_MENTIONS)]
)
def test_invite_prints_the_link_with_both_scopes_and_the_least_permissions(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], mention_trigger: str, permissions: int
) -> None:
    env.setenv("DISCORD_TOKEN", TOKEN)
    env.setenv("MENTION_TRIGGER", mention_trigger)
    assert main(["invite"]) == 0
    captured = capsys.readouterr()
    (line,) = captured.out.splitlines()  # the link alone on stdout, so it can be piped or copied
    url = urlsplit(line)
    assert (url.scheme, url.netloc, url.path) == ("https", "discord.com", "/oauth2/authorize")
    query = parse_qs(url.query)
    assert query["client_id"] == [str(APPLICATION_ID)]
    assert query["scope"] == ["bot applications.commands"]
    assert query["permissions"] == [str(permissions)]
    assert f"permissions {permissions}: View Channels, Send Messages" in captured.err
    assert TOKEN not in captured.out + captured.err


def test_invite_without_a_token_says_why_in_one_line(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["invite"]) == 2
    assert error_lines(capsys.readouterr()) == [
        "error: DISCORD_TOKEN is not set: the link is made from the bot's id, which the token holds"
    ]


# --- check --------------------------------------------------------------------------------------------


def test_check_passes_with_a_token_a_provider_and_a_writable_database(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    env.setenv("DISCORD_TOKEN", TOKEN)
    env.setenv("NOVITA_API_KEY", NOVITA_KEY)
    assert main(["check"]) == 0
    captured = capsys.readouterr()
    assert error_lines(captured) == []
    assert f"ok: database {tmp_path / 'data' / 'bot.sqlite3'} is writable, schema version" in captured.out
    assert "ok: novita is configured" in captured.out
    assert "--: freepik is not configured (FREEPIK_API_KEY is empty)" in captured.out


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        pytest.param(
            {"NOVITA_API_KEY": NOVITA_KEY},
            ["error: DISCORD_TOKEN is not set: put the bot token from the Discord developer portal in .env"],
            id="missing-token",
        ),
        pytest.param(
            {"DISCORD_TOKEN": TOKEN},
            [
                "error: no provider is configured: set FREEPIK_API_KEY, NOVITA_API_KEY or OPENAI_BASE_URL in .env"
            ],
            id="no-provider",
        ),
        pytest.param(
            {"DISCORD_TOKEN": TOKEN, "NOVITA_API_KEY": NOVITA_KEY, "DATABASE_PATH": "{blocker}/bot.sqlite3"},
            [
                "error: DATABASE_PATH {blocker}/bot.sqlite3 cannot be created: {blocker} is a file, not a folder; "
                "point DATABASE_PATH elsewhere or move that file"
            ],
            id="unwritable-database-path",
        ),
        pytest.param(
            {"DATABASE_PATH": "{blocker}/bot.sqlite3"},
            [
                "error: DISCORD_TOKEN is not set",
                "error: no provider is configured",
                "error: DATABASE_PATH {blocker}/bot.sqlite3 cannot be created: {blocker} is a file, not a folder",
            ],
            id="three-problems-three-lines",
        ),
    ],
)
def test_check_reports_each_problem_in_one_line_and_fails(
    env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    variables: dict[str, str],
    expected: list[str],
) -> None:
    # A file where the database's folder should be: unwritable even for root, which this may run as.
    blocker = tmp_path / "a-file-not-a-folder"
    blocker.write_text("")
    for name, value in variables.items():
        env.setenv(name, value.format(blocker=blocker))
    # 2, like a malformed setting: every finding is the admin's to fix.
    assert main(["check"]) == 2
    errors = error_lines(capsys.readouterr())
    assert len(errors) == len(expected), errors
    for line, start in zip(errors, expected, strict=True):
        assert line.startswith(start.format(blocker=blocker)), line


def test_a_malformed_number_is_one_line_that_names_the_setting_not_the_value(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env.setenv("DISCORD_TOKEN", TOKEN)
    env.setenv("NOVITA_API_KEY", NOVITA_KEY)
    env.setenv("POLL_INTERVAL_SECONDS", "two-secret-seconds")
    env.setenv("QUOTA_DESCRIBE_PER_DAY", "lots")
    assert main(["check"]) != 0
    errors = error_lines(capsys.readouterr())
    assert [line.split(":", 2)[1].strip() for line in errors] == [
        "POLL_INTERVAL_SECONDS",
        "QUOTA_DESCRIBE_PER_DAY",
    ]
    assert not any("two-secret-seconds" in line or "lots" in line for line in errors)


def test_check_as_an_admin_runs_it(tmp_path: Path) -> None:
    """`python -m bot check` in a real process: exit code, one line per problem, no traceback."""
    environment = {
        key: value for key, value in os.environ.items() if key.upper() not in {d.env for d in setting_docs()}
    }
    environment.update(
        DATABASE_PATH=str(tmp_path / "bot.sqlite3"), MAX_IMAGE_BYTES="20MB", PYTHONPATH=str(ROOT)
    )
    result = subprocess.run(
        [sys.executable, "-m", "bot", "check"],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        "error: MAX_IMAGE_BYTES: Input should be a valid integer, unable to parse string as an integer"
    ]


# --- check --live -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("freepik_key", "novita_key"), [(FREEPIK_KEY, "wrong-novita-key"), ("wrong-freepik-key", NOVITA_KEY)]
)
async def test_check_live_tries_each_key_and_says_so_in_one_line_per_provider(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], freepik_key: str, novita_key: str
) -> None:
    async with FakeFreepik(FREEPIK_KEY) as freepik, FakeNovita(NOVITA_KEY) as novita:
        env.setenv("DISCORD_TOKEN", TOKEN)
        env.setenv("FREEPIK_API_KEY", freepik_key)
        env.setenv("FREEPIK_BASE_URL", freepik.base_url)
        env.setenv("NOVITA_API_KEY", novita_key)
        env.setenv("NOVITA_BASE_URL", novita.base_url)
        # main() runs its own event loop, as it does from the terminal; the fakes keep serving on this one.
        code = await asyncio.to_thread(main, ["check", "--live"])
        # Each key was tried once, and the check cost nothing: Freepik's list call, Novita's refused empty image.
        assert freepik.count("POST") == 0
        assert freepik.count("GET") == 1
        assert len(novita.calls()) == 1
    assert code == 2
    captured = capsys.readouterr()
    good, bad = ("freepik", "novita") if freepik_key == FREEPIK_KEY else ("novita", "freepik")
    verdicts = [line for line in captured.out.splitlines() if "accepted" in line] + error_lines(captured)
    assert verdicts == [
        f"ok: {good} accepted {good.upper()}_API_KEY",
        f"error: {bad} rejected {bad.upper()}_API_KEY ({verdict_detail(bad)}): copy the key again from the provider's dashboard and check the plan",
    ]
    assert "wrong-" not in captured.out + captured.err


def verdict_detail(provider: str) -> str:
    return {"freepik": "Invalid API key", "novita": "invalid api key"}[provider]


async def test_check_live_passes_when_every_key_is_accepted(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async with FakeFreepik(FREEPIK_KEY) as freepik, FakeNovita(NOVITA_KEY) as novita:
        for name, value in {
            "DISCORD_TOKEN": TOKEN,
            "FREEPIK_API_KEY": FREEPIK_KEY,
            "FREEPIK_BASE_URL": freepik.base_url,
            "NOVITA_API_KEY": NOVITA_KEY,
            "NOVITA_BASE_URL": novita.base_url,
        }.items():
            env.setenv(name, value)
        assert await asyncio.to_thread(main, ["check", "--live"]) == 0
    captured = capsys.readouterr()
    assert error_lines(captured) == []
    assert "ok: freepik accepted FREEPIK_API_KEY" in captured.out
    assert "ok: novita accepted NOVITA_API_KEY" in captured.out


async def test_check_live_says_when_a_provider_cannot_be_reached(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async with FakeNovita(NOVITA_KEY) as novita:
        unreachable = novita.base_url
    env.setenv("DISCORD_TOKEN", TOKEN)
    env.setenv("NOVITA_API_KEY", NOVITA_KEY)
    env.setenv("NOVITA_BASE_URL", unreachable)  # closed: nothing listens there any more
    assert await asyncio.to_thread(main, ["check", "--live"]) == 2
    (line,) = error_lines(capsys.readouterr())
    assert line.startswith("error: novita could not be asked")
    assert "NOVITA_BASE_URL" in line


# --- heartbeat and health -------------------------------------------------------------------------------


def make_settings(tmp_path: Path, **overrides: object) -> Settings:
    return load_settings({"database_path": tmp_path / "data" / "bot.sqlite3", **overrides}, env_file=None)


def test_the_heartbeat_lives_next_to_the_database(tmp_path: Path) -> None:
    assert heartbeat_path(make_settings(tmp_path)) == tmp_path / "data" / "heartbeat"


async def test_heartbeat_beats_only_while_alive_and_is_gone_when_stopped(tmp_path: Path) -> None:
    path = tmp_path / "data" / "heartbeat"
    path.parent.mkdir()
    path.write_text("12345.0\n")  # left over from an earlier run: removed at start, not trusted
    alive = False
    looks = 0

    def is_alive() -> bool:
        nonlocal looks
        looks += 1
        return alive

    beat = Heartbeat(path, is_alive, interval=0.01)
    task = asyncio.create_task(beat.run())
    await eventually(lambda: looks >= 3, "three looks at the connection")
    assert not path.exists()
    alive = True
    await eventually(path.exists, "the first beat")
    age = heartbeat_age(path)
    assert age is not None
    assert 0 <= age < 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not path.exists()
    assert not path.with_name("heartbeat.partial").exists()


async def test_heartbeat_writes_once_per_interval_of_its_clock(tmp_path: Path) -> None:
    path = tmp_path / "heartbeat"
    now = [1000.0]
    looks = [0]

    def clock() -> float:
        looks[0] += 1
        return now[0]

    beat = Heartbeat(path, lambda: True, interval=0.01, clock=clock)

    async def written() -> str:
        seen = looks[0]
        await eventually(lambda: looks[0] >= seen + 3 and path.exists(), "several looks at the clock")
        return path.read_text().strip()

    task = asyncio.create_task(beat.run())
    try:
        assert await written() == "1000.000"
        now[0] = 1000.005  # less than an interval later: nothing new to write
        assert await written() == "1000.000"
        now[0] = 1000.02
        assert await written() == "1000.020"
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_gateway_connected_follows_the_real_client(harness: Harness) -> None:
    """The real discord.py client against the fake Discord: connected once READY, not after closing."""
    settings = harness.settings()
    async with aiohttp.ClientSession() as session:
        db = await Database.open(settings.database_path)
        # discord.py waits this long for more guilds before it is ready; 2 s by default.
        bot = ImageBot(settings=settings, session=session, db=db, guild_ready_timeout=0.05)
        path = heartbeat_path(settings)
        task = asyncio.create_task(Heartbeat(path, lambda: gateway_connected(bot), interval=0.01).run())
        try:
            assert not gateway_connected(bot)
            await start_bot(bot, harness.discord)
            await asyncio.wait_for(bot.wait_until_ready(), 5)
            assert gateway_connected(bot)
            await eventually(path.exists, "the heartbeat file")
            await stop_bot(bot, harness.discord)
            assert not gateway_connected(bot)
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await db.close()
    assert not path.exists()


async def test_health_needs_a_fresh_heartbeat(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = make_settings(tmp_path)
    path = heartbeat_path(settings)
    assert await cli.health(settings, max_age=DEFAULT_MAX_AGE) == 1
    assert capsys.readouterr().err.startswith(f"error: no heartbeat at {path}: the bot is not running")

    path.parent.mkdir(parents=True)
    path.write_text(f"{time.time() - 5:.3f}\n")
    assert await cli.health(settings, max_age=DEFAULT_MAX_AGE) == 0
    assert capsys.readouterr().out.startswith("ok: heartbeat 5 s old")

    path.write_text(f"{time.time() - 300:.3f}\n")
    assert await cli.health(settings, max_age=DEFAULT_MAX_AGE) == 1
    assert "error: the last heartbeat is 300 s old (more than 90 s)" in capsys.readouterr().err


@pytest.mark.parametrize(("status", "expected"), [(200, 0), (503, 1)])
async def test_health_also_asks_the_webhook_listener_when_webhooks_are_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], status: int, expected: int
) -> None:
    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"database": True, "gateway": status == 200}, status=status)

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        settings = make_settings(
            tmp_path,
            webhook_public_url="https://bot.example.org",
            webhook_secret="whsec_x",
            webhook_port=port,
        )
        path = heartbeat_path(settings)
        path.parent.mkdir(parents=True)
        path.write_text(f"{time.time():.3f}\n")
        assert await cli.health(settings, max_age=DEFAULT_MAX_AGE) == expected
    finally:
        await runner.cleanup()
    if expected:
        assert f"error: http://127.0.0.1:{port}/healthz answered 503" in capsys.readouterr().err
