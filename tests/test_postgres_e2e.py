"""The real bot on PostgreSQL, in this process: one bot end to end, then two bots (two processes' worth of
shards) on one database and one fake Discord: a restart hands the job over at once, buttons and the usage
report work whichever bot gets the click, one bot syncs the commands, a webhook reaches the job's driver
through the other one."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import pytest

from bot.discord.client import ImageBot
from bot.domain.tasks import JobState
from tests.conftest import FREEPIK_KEY, NOVITA_KEY, Harness, UnexpectedErrors
from tests.fakes.discord import FakeDiscord
from tests.fakes.providers import DEFAULT_WEBHOOK_SECRET, FakeFreepik, FakeNovita

# Two servers, one on each shard of two: (guild_id >> 22) % 2.
GUILD_ON_SHARD_0 = 222222222222222222 & ~(1 << 22)
GUILD_ON_SHARD_1 = GUILD_ON_SHARD_0 | (1 << 22)
DONE = "Image to prompt · Done"


@pytest.fixture
async def pg_harness(tmp_path: Path, pg_url: str) -> AsyncIterator[Harness]:
    """The harness with two servers (one per shard) and every bot on the test's own PostgreSQL schema."""
    discord = FakeDiscord(guild_ids=(GUILD_ON_SHARD_0, GUILD_ON_SHARD_1))
    freepik, novita = FakeFreepik(FREEPIK_KEY), FakeNovita(NOVITA_KEY)
    for fake in (discord, freepik, novita):
        await fake.start()
    harness = Harness(tmp_path, discord, freepik, novita)
    harness.pg_url = pg_url  # type: ignore[attr-defined]
    unexpected = UnexpectedErrors()
    try:
        with unexpected.watching():
            yield harness
        discord.assert_no_violations()
        assert not unexpected.records, [record.getMessage() for record in unexpected.records]
    finally:
        await harness.close()
        await freepik.close()
        await novita.close()
        await discord.close()
        discord.uninstall()


async def start(harness: Harness, **overrides: Any) -> ImageBot:
    overrides.setdefault("database_url", harness.pg_url)  # type: ignore[attr-defined]
    overrides.setdefault("describe_provider", "freepik")
    return await harness.start_bot(**overrides)


def describe_in(harness: Harness, guild_id: int, **kwargs: Any) -> dict[str, Any]:
    return harness.describe_payload(
        guild_id=guild_id, channel_id=harness.discord.guild_channel_id(guild_id), **kwargs
    )


def title(message: dict[str, Any] | None) -> str:
    assert message is not None
    return str(message["embeds"][0]["title"])


async def test_describe_end_to_end_on_postgres(pg_harness: Harness) -> None:
    harness = pg_harness
    bot = await start(harness)
    token = await harness.interact(bot, describe_in(harness, GUILD_ON_SHARD_0))
    assert title(harness.discord.original_message(token)) == DONE
    db = bot.core.db
    rows = await db.fetch("SELECT state FROM usage")  # type: ignore[union-attr]
    assert [row["state"] for row in rows] == ["committed"]
    job = await db.fetchrow("SELECT finished_at, owner, lease_expires_at FROM jobs")  # type: ignore[union-attr]
    assert job is not None
    assert job["finished_at"] is not None
    assert (job["owner"], job["lease_expires_at"]) == (None, None)  # a finished job holds no lease
    # The same image again is answered from the database's describe cache.
    harness.freepik.reset()
    token = await harness.interact(bot, describe_in(harness, GUILD_ON_SHARD_0))
    assert title(harness.discord.original_message(token)) == DONE
    assert harness.freepik.count("POST") == 0


async def test_a_stopped_bot_hands_its_job_to_the_other_at_once(pg_harness: Harness) -> None:
    harness = pg_harness
    harness.freepik.seconds_per_state = 0.4
    first = await start(harness, shard_count=2, shard_ids=[0])
    second = await start(harness, shard_count=2, shard_ids=[1], job_lease_seconds=1.0)
    payload = describe_in(harness, GUILD_ON_SHARD_0)
    await harness.discord.send_interaction(payload)
    token = payload["token"]
    await harness.discord.wait_for_call(lambda call: call.method == "PATCH" and token in call.path)
    await harness.stop_bot(first)  # graceful: the job is paused and its lease given back

    await asyncio.wait_for(_until_done(harness, token), 10)
    assert harness.freepik.count("POST") == 1  # carried on by polling, never created twice
    rows = await second.core.db.fetch("SELECT state FROM usage")  # type: ignore[union-attr]
    assert [row["state"] for row in rows] == ["committed"]
    await harness.settle(second)


async def _until_done(harness: Harness, token: str) -> None:
    while True:
        message = harness.discord.original_message(token)
        if message and message["embeds"] and message["embeds"][0]["title"] == DONE:
            return
        await harness.discord.wait_for_call(lambda call: token in call.path, since=len(harness.discord.calls))


def _buttons(message: dict[str, Any]) -> dict[str, str]:
    return {
        component["custom_id"].split(":")[1]: component["custom_id"]
        for row in message.get("components") or []
        for component in row.get("components") or []
    }


async def test_buttons_and_the_usage_report_work_whichever_bot_gets_the_click(pg_harness: Harness) -> None:
    harness = pg_harness
    first = await start(harness, shard_count=2, shard_ids=[0])
    second = await start(harness, shard_count=2, shard_ids=[1])
    await harness.discord.wait_shards([0, 1])
    token = await harness.interact(first, describe_in(harness, GUILD_ON_SHARD_0))
    described = harness.discord.original_message(token)
    assert title(described) == DONE
    assert described is not None

    # The click reaches the other bot (another process, after a reshard or a restart): the job row says all.
    click = harness.discord.button_click(_buttons(described)["text"], described, guild_id=GUILD_ON_SHARD_0)
    await harness.discord.send_interaction(click, shard=1)
    await harness.discord.wait_for_call(lambda call: click["token"] in call.path and call.method == "POST")
    await harness.settle(second)
    followup = harness.calls_for(click["token"])[-1]
    assert followup.json["content"] == harness.freepik.prompt_text

    usage = harness.discord.slash(
        "quota-admin", {"period": "today"}, subcommand="usage", permissions=1 << 5, guild_id=GUILD_ON_SHARD_0
    )
    await harness.discord.send_interaction(usage, shard=1)
    report = await harness.discord.wait_for_call(
        lambda call: (
            usage["token"] in call.path and call.method == "POST" and call.path.startswith("/webhooks/")
        )
    )
    await harness.settle(second)
    assert "1 completed" in str(report.json["embeds"][0])


async def test_one_bot_syncs_the_commands(pg_harness: Harness) -> None:
    harness = pg_harness
    bots = await asyncio.gather(
        start(harness, shard_count=2, shard_ids=[0]), start(harness, shard_count=2, shard_ids=[1])
    )
    await harness.discord.wait_shards([0, 1])
    syncs = [call for call in harness.discord.calls if call.method == "PUT" and "/commands" in call.path]
    assert len(syncs) == 1
    assert bots


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_a_webhook_received_by_the_other_bot_reaches_the_driver(pg_harness: Harness) -> None:
    harness = pg_harness
    harness.freepik.seconds_per_state = 0.1
    ports = [_free_port(), _free_port()]
    # Behind one public URL (a load balancer): here every delivery goes to the second bot.
    common = {
        "webhook_public_url": f"http://127.0.0.1:{ports[1]}",
        "webhook_secret": DEFAULT_WEBHOOK_SECRET,
        "poll_interval_seconds": 10,
        "poll_max_interval_seconds": 10,
        "shard_count": 2,
    }
    driver = await start(harness, shard_ids=[0], webhook_port=ports[0], **common)
    await start(harness, shard_ids=[1], webhook_port=ports[1], **common)
    await harness.discord.wait_shards([0, 1])
    token = await harness.interact(driver, describe_in(harness, GUILD_ON_SHARD_0))
    assert title(harness.discord.original_message(token)) == DONE
    assert harness.freepik.polls() == []  # the webhooks did it
    deliveries = harness.freepik.deliveries
    assert deliveries
    assert {delivery.url for delivery in deliveries} == {f"http://127.0.0.1:{ports[1]}/webhooks/freepik"}
    assert {delivery.answered for delivery in deliveries} == {204}
    assert await driver.core.jobs.unfinished() == []
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{ports[0]}/healthz") as response,
    ):
        assert (await response.json())["database"] is True  # the health check asks the pool
    rows = await driver.core.db.fetch("SELECT state FROM jobs")  # type: ignore[union-attr]
    assert [JobState(row["state"]) for row in rows] == [JobState.COMPLETED]


class _Proxy:
    """A TCP proxy to the PostgreSQL server that a test can cut (every connection dropped) and restore."""

    def __init__(self, target_port: int) -> None:
        self._target = target_port
        self.port = _free_port()
        self._server: asyncio.Server | None = None
        self._links: list[asyncio.StreamWriter] = []

    async def open(self) -> None:
        self._server = await asyncio.start_server(self._link, "127.0.0.1", self.port)

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        for writer in self._links:
            writer.transport.abort()
        self._links.clear()

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self._target)
        self._links += [writer, upstream_writer]

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                sink.transport.abort()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))


@pytest.fixture
async def proxy(pg_url: str) -> AsyncIterator[_Proxy]:
    """A cuttable way to the test's PostgreSQL (set up before the harness, so it closes after the bots)."""
    found = _Proxy(urlsplit(pg_url).port or 5432)
    await found.open()
    try:
        yield found
    finally:
        await found.cut()


async def test_a_task_paused_while_postgres_is_away_carries_on_when_it_is_back(
    proxy: _Proxy, pg_harness: Harness
) -> None:
    harness = pg_harness
    harness.freepik.seconds_per_state = 0.5
    parts = urlsplit(harness.pg_url)  # type: ignore[attr-defined]
    through_proxy = urlunsplit(
        parts._replace(netloc=parts.netloc.replace(f":{parts.port}", f":{proxy.port}"))
    )
    bot = await start(harness, database_url=through_proxy, job_lease_seconds=1.0)
    payload = describe_in(harness, GUILD_ON_SHARD_0)
    await harness.discord.send_interaction(payload)
    token = payload["token"]
    await harness.discord.wait_for_call(lambda call: call.method == "PATCH" and token in call.path)

    await proxy.cut()  # the database goes away mid-task: the job keeps its saved state
    await asyncio.sleep(1.5)
    assert title(harness.discord.original_message(token)) != DONE
    await proxy.open()  # back: the next lease renewal carries the job on
    await asyncio.wait_for(_until_done(harness, token), 15)
    assert harness.freepik.count("POST") == 1
    await harness.settle(bot)
    rows = await bot.core.db.fetch("SELECT state FROM usage")  # type: ignore[union-attr]
    assert [row["state"] for row in rows] == ["committed"]
