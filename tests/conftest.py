"""Shared fixtures: a fake Discord, fake providers, and the real bot wired to them on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import io
import ipaddress
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.abc import AbstractResolver
from PIL import Image

from bot.core.safe_download import IPAddress, SafeDownloader, is_public_address
from bot.discord.client import ImageBot
from bot.settings import Settings, load_settings
from bot.settings_docs import setting_docs
from bot.store.postgres.database import PgDatabase
from bot.store.sqlite.database import Database
from tests.fakes.discord import FakeDiscord, RecordedCall, start_bot, stop_bot
from tests.fakes.providers import FakeFreepik, FakeNovita
from tests.postgres import REPORT_VARIABLE, PostgresTally, fresh_schema, server_url, unavailable_reason
from tests.stores import Backend

FREEPIK_KEY = "test-freepik-key"
NOVITA_KEY = "test-novita-key"
# 127.0.0.2 stands in for "the public internet" in URL tests; every other loopback address stays refused.
PUBLIC_STAND_IN = ipaddress.ip_address("127.0.0.2")


def allow_stand_in(ip: IPAddress) -> bool:
    return ip == PUBLIC_STAND_IN or is_public_address(ip)


async def eventually(predicate: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    """Wait until `predicate()` holds (checked every few milliseconds); fail saying `what` never came."""
    try:
        async with asyncio.timeout(timeout):
            # A condition over state that has no event of its own (files, counters, other tasks).
            while not predicate():  # noqa: ASYNC110
                await asyncio.sleep(0.005)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


def png_bytes(size: tuple[int, int] = (64, 48), colour: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
async def loopback_connections(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every address the event loop connects to, and stop any that leaves loopback."""
    loop = asyncio.get_running_loop()
    original = loop.sock_connect
    seen: list[str] = []

    async def guarded(sock: socket.socket, address: Any) -> None:
        seen.append(address[0])
        if not ipaddress.ip_address(address[0]).is_loopback:
            raise AssertionError(f"a test tried to connect to {address[0]}")
        await original(sock, address)

    monkeypatch.setattr(loop, "sock_connect", guarded)
    return seen


# discord.py names the tasks that run a command, a component, a modal or an event listener; while one
# of them is pending, the bot is still handling something it was sent.
_HANDLER_TASK_PREFIXES = (
    "CommandTree-invoker",
    "discord-ui-view-dispatch",
    "discord-ui-dynamic-item",
    "discord-ui-modal-dispatch",
    "discord.py: on_message",
    "discord.py: on_interaction",
)


def handler_tasks() -> list[str]:
    return [
        task.get_name()
        for task in asyncio.all_tasks()
        if not task.done() and task.get_name().startswith(_HANDLER_TASK_PREFIXES)
    ]


def handling_something() -> bool:
    return bool(handler_tasks())


class Harness:
    """The fakes plus a factory for bots pointed at them; everything is closed at the end of a test."""

    def __init__(
        self, tmp_path: Path, discord: FakeDiscord, freepik: FakeFreepik, novita: FakeNovita
    ) -> None:
        self.tmp_path = tmp_path
        self.discord = discord
        self.freepik = freepik
        self.novita = novita
        self.bots: list[ImageBot] = []
        # Settings every bot of the test starts with (the `store` fixture puts them on PostgreSQL).
        self.defaults: dict[str, Any] = {}
        self._resources: list[tuple[aiohttp.ClientSession, Database | PgDatabase]] = []

    def settings(self, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "discord_token": "fake-token",
            "database_path": self.tmp_path / "bot.sqlite3",
            "freepik_api_key": FREEPIK_KEY,
            "freepik_base_url": self.freepik.base_url,
            "novita_api_key": NOVITA_KEY,
            "novita_base_url": self.novita.base_url,
            # Fast polls and no coalescing so a test sees every state within milliseconds.
            "poll_interval_seconds": 0.02,
            "poll_max_interval_seconds": 0.05,
            "task_timeout_seconds": 5,
            "edit_coalesce_seconds": 0,
        }
        values.update(self.defaults)
        values.update(overrides)
        return load_settings(values, env_file=None)

    async def start_bot(
        self,
        settings: Settings | None = None,
        *,
        clock: Callable[[], float] = time.time,
        resolver: AbstractResolver | None = None,
        **overrides: Any,
    ) -> ImageBot:
        settings = settings or self.settings(**overrides)
        session = aiohttp.ClientSession()
        db: Database | PgDatabase
        if settings.database_url is not None:
            db = await PgDatabase.open(settings.database_url.get_secret_value())
        else:
            db = await Database.open(settings.database_path)
        downloader = SafeDownloader(
            max_bytes=settings.max_image_bytes, timeout=1.0, address_allowed=allow_stand_in, resolver=resolver
        )
        bot = ImageBot(settings=settings, session=session, db=db, downloader=downloader, clock=clock)
        self._resources.append((session, db))
        self.bots.append(bot)
        await start_bot(bot, self.discord)
        return bot

    async def stop_bot(self, bot: ImageBot) -> None:
        if bot in self.bots:
            self.bots.remove(bot)
            await stop_bot(bot, self.discord)

    async def settle(self, bot: ImageBot, timeout: float = 15.0) -> None:
        """Wait until the bot has handled everything it was sent and no job of it runs."""
        try:
            async with asyncio.timeout(timeout):
                await asyncio.sleep(0)
                # discord.py's handler tasks announce nothing when they end: look at them often.
                while bot.core.runner.running_count or handling_something():  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
        except TimeoutError:
            raise AssertionError(
                f"{bot.core.runner.running_count} jobs still running after {timeout} s; handlers: {handler_tasks()}"
            ) from None

    async def interact(self, bot: ImageBot, payload: dict[str, Any]) -> str:
        """Send an interaction, wait until it is handled and its jobs are done, and return its token."""
        await self.discord.send_interaction(payload)
        # Once the bot has answered, the task that handles the interaction exists: settle waits for it.
        await self.discord.wait_for_call(lambda call: payload["token"] in call.path)
        await self.settle(bot)
        return str(payload["token"])

    async def answer(self, bot: ImageBot, payload: dict[str, Any]) -> dict[str, Any]:
        """Send an interaction, let it finish, and return its reply as it stands (the original response)."""
        return self.discord.original_reply(await self.interact(bot, payload))

    def describe_payload(self, data: bytes | None = None, **kwargs: Any) -> dict[str, Any]:
        attachment = self.discord.add_attachment(
            data if data is not None else png_bytes(), "photo.png", "image/png"
        )
        options = kwargs.pop("options", None)
        return self.discord.slash("describe", options, attachments={"image": attachment}, **kwargs)

    def calls_for(self, token: str) -> list[RecordedCall]:
        return self.discord.interaction_calls(token)

    async def close(self) -> None:
        for bot in list(self.bots):
            await self.stop_bot(bot)
        for session, db in self._resources:
            await session.close()
            await db.close()


class UnexpectedErrors(logging.Handler):
    """Collect the errors the bot's command tree and component handlers log as unexpected."""

    LOGGERS = ("bot.discord.tree", "bot.discord.interactions", "cogs")

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    @contextlib.contextmanager
    def watching(self) -> Iterator[None]:
        loggers = [logging.getLogger(name) for name in self.LOGGERS]
        for logger in loggers:
            logger.addHandler(self)
        try:
            yield
        finally:
            for logger in loggers:
                logger.removeHandler(self)


# --- PostgreSQL -------------------------------------------------------------------------------------

# Fixtures that need the PostgreSQL server: a test using one is marked `postgres` and counted.
POSTGRES_FIXTURES = frozenset({"pg_url", "pg_backend"})
_TALLY = PostgresTally(url=server_url())


@contextlib.asynccontextmanager
async def _fresh_schema_or_skip() -> AsyncIterator[str]:
    """A DATABASE_URL pointed at a fresh, empty schema of the test server; skips, saying why, when none answers."""
    reason = await unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    async with fresh_schema() as url:
        yield url


@contextlib.asynccontextmanager
async def _pg_store() -> AsyncIterator[Backend]:
    """The PostgreSQL store in a fresh schema, migrated, closed before its schema is dropped."""
    async with _fresh_schema_or_skip() as url:
        store = Backend("postgres", await PgDatabase.open(url), url)
        try:
            yield store
        finally:
            await store.close()


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    """A DATABASE_URL pointed at a fresh, empty schema of the test server (skips when none answers)."""
    async with _fresh_schema_or_skip() as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    """Each store in turn, fresh and migrated: SQLite in a new file, PostgreSQL in a new schema."""
    if request.param == "sqlite":
        path = tmp_path / "store.sqlite3"
        store = Backend("sqlite", await Database.open(path), path)
        try:
            yield store
        finally:
            await store.close()
        return
    async with _pg_store() as store:
        yield store


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[dict[str, Any]]:
    """Each store in turn for a harness's bots, as settings: SQLite (the default), then a fresh PostgreSQL
    schema. A module whose end-to-end tests run on both overrides `harness` to request this first (so the
    bots are closed before the schema is dropped) and sets the harness's defaults to it."""
    if request.param == "sqlite":
        yield {}
        return
    async with _fresh_schema_or_skip() as url:
        yield {"database_url": url}


@pytest.fixture
async def pg_backend() -> AsyncIterator[Backend]:
    """The PostgreSQL store alone, fresh and migrated (for what only a shared store does)."""
    async with _pg_store() as store:
        yield store


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if POSTGRES_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.postgres)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if "postgres" not in report.keywords:
        return
    if report.skipped and report.when in ("setup", "call"):
        _TALLY.skipped += 1
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reason = str(reason).removeprefix("Skipped: ")
        if reason not in _TALLY.skip_reasons:
            _TALLY.skip_reasons.append(str(reason))
    elif report.when == "call":
        _TALLY.ran += 1
        if report.passed:
            _TALLY.passed += 1
        else:
            _TALLY.failed += 1
    elif report.when == "setup" and report.failed:
        _TALLY.ran += 1
        _TALLY.failed += 1


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _TALLY.ran or _TALLY.skipped:
        terminalreporter.write_line(_TALLY.line())
    target = os.environ.get(REPORT_VARIABLE)
    if target:
        _TALLY.write(Path(target))


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[pytest.MonkeyPatch]:
    """No setting from the machine, no .env, a database in tmp_path; logging handed back to pytest after."""
    for doc in setting_docs():
        monkeypatch.delenv(doc.env, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_PATH", str(tmp_path / "data" / "bot.sqlite3"))
    loggers = [logging.getLogger(name) for name in ("", "discord", "aiohttp.access")]
    handlers, levels = loggers[0].handlers[:], [logger.level for logger in loggers]
    yield monkeypatch
    loggers[0].handlers[:] = handlers
    for logger, level in zip(loggers, levels, strict=True):
        logger.setLevel(level)


@pytest.fixture
async def fake_discord() -> AsyncIterator[FakeDiscord]:
    """A fake Discord on 127.0.0.1 for a bot in another process (nothing in this one is pointed at it)."""
    fake = FakeDiscord()
    await fake.start()
    try:
        yield fake
        fake.assert_no_violations()
    finally:
        await fake.close()
        fake.uninstall()


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    discord = FakeDiscord()
    freepik = FakeFreepik(FREEPIK_KEY)
    novita = FakeNovita(NOVITA_KEY)
    await discord.start()
    await freepik.start()
    await novita.start()
    h = Harness(tmp_path, discord, freepik, novita)
    unexpected = UnexpectedErrors()
    try:
        with unexpected.watching():
            yield h
        # Every request the bot sent was one Discord would accept (its OpenAPI spec and documented limits).
        discord.assert_no_violations()
        # An error that reached a member as "something went wrong" is a bug, even when the test's own
        # assertions passed: the command tree and the component handlers log each one.
        assert not unexpected.records, [record.getMessage() for record in unexpected.records]
    finally:
        await h.close()
        await freepik.close()
        await novita.close()
        await discord.close()
        discord.uninstall()
