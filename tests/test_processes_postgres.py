"""Several real bot processes (`python -m bot`, each running its own shards) on one PostgreSQL and one fake
Discord: members racing for their last units across 2 and 4 processes get exactly the limit; a process
killed with SIGKILL mid-task has its task finished by the other on the original message (one create,
the quota settled once); a webhook delivered to the process that does not drive the task completes it;
one provider's line shared by two processes keeps its cap and the members' turns; Cancel clicked in the
process that does not drive a task reaches it, waiting in line (free) or at its provider (it counts)."""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.conftest import FREEPIK_KEY, eventually, png_bytes
from tests.fakes.discord import FakeDiscord
from tests.fakes.providers import DEFAULT_WEBHOOK_SECRET, FakeFreepik
from tests.processes import BotProcess, process_env

GUILD = 222222222222222222 & ~(3 << 22)  # on shard 0 of 2 and of 4: (guild_id >> 22) % count == 0
OTHER_GUILD = GUILD | (1 << 22)  # on shard 1 of 2
ALICE, BOB, CAROL = 501, 502, 503
LEASE = 2.0
DONE = "Image to prompt · Done"
USED_UP = "You have used all 5 descriptions for today"


@dataclass
class Cluster:
    """The fakes, the database and the bot processes of one test."""

    tmp_path: Path
    pg_url: str
    discord: FakeDiscord
    freepik: FakeFreepik
    processes: list[BotProcess] = field(default_factory=list)

    async def start(self, count: int, **settings: str) -> list[BotProcess]:
        """Start `count` processes, process i running shard i of `count`; wait until every shard is connected."""
        started = await asyncio.gather(*(self._start_one(i, count, settings) for i in range(count)))
        self.processes += started
        try:
            await self.discord.wait_shards(list(range(count)), timeout=60)
        except TimeoutError:
            raise AssertionError("\n\n".join(p.output for p in started)) from None
        return list(started)

    async def _start_one(self, shard: int, count: int, settings: dict[str, str]) -> BotProcess:
        folder = self.tmp_path / f"process-{shard}"
        folder.mkdir(exist_ok=True)
        env = process_env(
            DISCORD_TOKEN="fake-token",
            FAKE_DISCORD_URL=self.discord.base_url,
            DATABASE_URL=self.pg_url,
            DATABASE_PATH=str(folder / "bot.sqlite3"),  # only the heartbeat lives here
            FREEPIK_API_KEY=FREEPIK_KEY,
            FREEPIK_BASE_URL=self.freepik.base_url,
            NOVITA_API_KEY="",
            POLL_INTERVAL_SECONDS="0.05",
            POLL_MAX_INTERVAL_SECONDS="0.1",
            EDIT_COALESCE_SECONDS="0",
            JOB_LEASE_SECONDS=str(LEASE),
            SHARD_COUNT=str(count),
            SHARD_IDS=str(shard),
            LOG_LEVEL="INFO",
            **settings,
        )
        return await BotProcess.start("run", env=env, cwd=folder)

    def describe(self, colour: tuple[int, int, int], guild_id: int = GUILD, **kwargs: Any) -> dict[str, Any]:
        attachment = self.discord.add_attachment(png_bytes(colour=colour), "photo.png", "image/png")
        return self.discord.slash(
            "describe",
            None,
            attachments={"image": attachment},
            guild_id=guild_id,
            channel_id=self.discord.guild_channel_id(guild_id),
            **kwargs,
        )

    def answer(self, token: str) -> str:
        """The interaction's message as it stands: its content, or its embed's title."""
        message = self.discord.original_message(token)
        if message is None:
            return ""
        if message.get("embeds"):
            return str(message["embeds"][0]["title"])
        return str(message.get("content") or "")

    async def rows(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(self.pg_url)
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()

    def outputs(self) -> str:
        return "\n\n".join(f"--- process {i}\n{p.output}" for i, p in enumerate(self.processes))


@pytest.fixture
async def cluster(tmp_path: Path, pg_url: str) -> AsyncIterator[Cluster]:
    discord = FakeDiscord(guild_ids=(GUILD, OTHER_GUILD))
    freepik = FakeFreepik(FREEPIK_KEY)
    await discord.start()
    await freepik.start()
    found = Cluster(tmp_path, pg_url, discord, freepik)
    try:
        yield found
        discord.assert_no_violations()
    finally:
        for process in found.processes:
            await process.kill()
        await freepik.close()
        await discord.close()


@pytest.mark.parametrize("count", [2, 4])
async def test_processes_racing_for_a_members_last_units_grant_exactly_the_limit(
    cluster: Cluster, count: int
) -> None:
    limit, spent = 5, 3
    await cluster.start(
        count,
        QUOTA_DESCRIBE_PER_DAY=str(limit),
        MAX_INFLIGHT_PER_USER="100",
        MAX_INFLIGHT_PER_PROVIDER="1000",
    )
    syncs = [call for call in cluster.discord.calls if call.method == "PUT" and "/commands" in call.path]
    assert len(syncs) == 1, (
        cluster.outputs()
    )  # one process synced the commands, whichever took the lock first

    member = cluster.discord.default_user_id
    conn = await asyncpg.connect(cluster.pg_url)
    try:
        day = time.strftime("%Y-%m-%d", time.gmtime())
        for _ in range(spent):  # the member used 3 of 5 earlier today: 2 are left
            await conn.execute(
                "INSERT INTO usage (guild_id, user_id, kind, provider, state, outcome, day, started_at, ended_at) "
                "VALUES ($1, $2, 'describe', 'freepik', 'committed', 'COMPLETED', $3, $4, $4)",
                GUILD,
                member,
                day,
                time.time(),
            )
    finally:
        await conn.close()

    # The member's commands reach every process at the same moment (three per process).
    payloads = [cluster.describe((40 * i % 256, 255 - 20 * i, 60 + 15 * i)) for i in range(3 * count)]
    await asyncio.gather(
        *(cluster.discord.send_interaction(p, shard=i % count) for i, p in enumerate(payloads))
    )
    tokens = [str(p["token"]) for p in payloads]
    try:
        await eventually(
            lambda: all(cluster.answer(t) == DONE or cluster.answer(t).startswith(USED_UP) for t in tokens),
            "every command's answer",
            timeout=30,
        )
    except AssertionError:
        raise AssertionError(f"{[cluster.answer(t) for t in tokens]}\n{cluster.outputs()}") from None
    answers = [cluster.answer(t) for t in tokens]
    granted = answers.count(DONE)
    print(
        f"{count} processes, {len(tokens)} commands racing for {limit - spent} last units: {granted} granted"
    )
    assert granted == limit - spent, answers
    assert cluster.freepik.count("POST") == limit - spent
    rows = await cluster.rows("SELECT state FROM usage WHERE user_id = $1", member)
    assert sorted(row["state"] for row in rows) == ["committed"] * limit


async def test_a_killed_process_has_its_task_finished_by_the_other_on_the_original_message(
    cluster: Cluster,
) -> None:
    cluster.freepik.seconds_per_state = 1.5  # CREATED, then IN_PROGRESS at 1.5 s, COMPLETED at 3 s
    first, second = await cluster.start(2)
    payload = cluster.describe((200, 30, 30))
    token = str(payload["token"])
    await cluster.discord.send_interaction(payload)  # the server is on shard 0: the first process
    await cluster.discord.wait_for_call(lambda c: c.method == "PATCH" and token in c.path, timeout=10)
    job = (await cluster.rows("SELECT id, owner, state FROM jobs"))[0]

    first.process.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    await first.process.wait()
    lines = await second.wait_for_lines(rf"taking over job {job['id']}", timeout=LEASE * 4)
    taken = time.monotonic()
    await eventually(lambda: cluster.answer(token) == DONE, "the task's end on its message", timeout=15)

    print(
        f"kill -9 to takeover: {taken - killed:.2f} s (lease {LEASE:.0f} s); creates at the provider: "
        f"{cluster.freepik.count('POST')}; {lines[0]}"
    )
    assert taken - killed < LEASE + LEASE / 3 + 2
    assert cluster.freepik.count("POST") == 1  # never created twice
    usage = await cluster.rows("SELECT state FROM usage")
    assert [row["state"] for row in usage] == ["committed"]  # settled once
    finished = await cluster.rows("SELECT finished_at, owner FROM jobs WHERE id = $1", job["id"])
    assert finished[0]["finished_at"] is not None
    assert finished[0]["owner"] is None
    assert f":{first.process.pid}:" in job["owner"]  # it was the killed process's, before
    # Every state was shown on the one original message, the end included; nothing posted anew.
    assert not [c for c in cluster.discord.calls if c.method == "POST" and c.path.startswith("/channels/")]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_a_webhook_delivered_to_the_process_that_does_not_drive_the_task_completes_it(
    cluster: Cluster,
) -> None:
    cluster.freepik.seconds_per_state = 0.3
    ports = [_free_port(), _free_port()]
    public = f"http://127.0.0.1:{ports[1]}"  # the load balancer sends every delivery to the second process
    first = await cluster._start_one(
        0,
        2,
        {
            "WEBHOOK_PUBLIC_URL": public,
            "WEBHOOK_SECRET": DEFAULT_WEBHOOK_SECRET,
            "WEBHOOK_PORT": str(ports[0]),
        },
    )
    second = await cluster._start_one(
        1,
        2,
        {
            "WEBHOOK_PUBLIC_URL": public,
            "WEBHOOK_SECRET": DEFAULT_WEBHOOK_SECRET,
            "WEBHOOK_PORT": str(ports[1]),
        },
    )
    cluster.processes += [first, second]
    await cluster.discord.wait_shards([0, 1], timeout=60)
    await first.wait_for_lines("webhook listener on port", timeout=30)
    await second.wait_for_lines("webhook listener on port", timeout=30)

    payload = cluster.describe((30, 200, 30))
    token = str(payload["token"])
    started = time.monotonic()
    await cluster.discord.send_interaction(payload)  # shard 0: the first process drives it
    await eventually(lambda: cluster.answer(token) == DONE, "the task's end on its message", timeout=15)
    elapsed = time.monotonic() - started
    deliveries = cluster.freepik.deliveries
    print(
        f"webhook to the other process: done in {elapsed:.2f} s; deliveries {[d.status for d in deliveries]} "
        f"answered {[d.answered for d in deliveries]} at {public}; polls {len(cluster.freepik.polls())}"
    )
    assert cluster.freepik.polls() == []  # the deliveries finished it, not a poll (the safety net is 30 s)
    assert deliveries
    assert {d.url for d in deliveries} == {f"{public}/webhooks/freepik"}
    assert {d.answered for d in deliveries} == {204}
    usage = await cluster.rows("SELECT state FROM usage")
    assert [row["state"] for row in usage] == ["committed"]
    owners = await cluster.rows("SELECT owner FROM jobs")
    assert owners[0]["owner"] is None


async def _saved(cluster: Cluster, count: int) -> None:
    """Wait until `count` jobs are saved (whichever process saved them)."""
    async with asyncio.timeout(15):
        # Rows written by other processes announce nothing here: look often.
        while len(await cluster.rows("SELECT id FROM jobs")) < count:  # noqa: ASYNC110
            await asyncio.sleep(0.02)


def _buttons(message: dict[str, Any] | None) -> dict[str, str]:
    assert message is not None
    return {b["label"]: b["custom_id"] for row in message.get("components", []) for b in row["components"]}


async def test_a_line_shared_by_two_processes_keeps_the_provider_cap_and_the_members_turns(
    cluster: Cluster,
) -> None:
    first, second = await cluster.start(
        2, MAX_INFLIGHT_PER_PROVIDER="2", MAX_INFLIGHT_PER_USER="10", QUOTA_DESCRIBE_PER_DAY="20"
    )
    cluster.freepik.seconds_per_state = 0.1
    cluster.freepik.hold = asyncio.Event()  # nothing Freepik is sent is answered yet
    # Bob's first task starts in the second process, Alice's in the first; everything after waits in the
    # one line of Freepik, saved by either process (Bob's server is on shard 1, Alice's and Carol's on 0).
    asks = [(BOB, OTHER_GUILD)] + [(ALICE, GUILD)] * 4 + [(BOB, OTHER_GUILD)] * 2 + [(CAROL, GUILD)] * 3
    tokens = []
    for number, (user_id, guild_id) in enumerate(asks, start=1):
        payload = cluster.describe((20 * number, 250 - 20 * number, user_id % 256), guild_id, user_id=user_id)
        tokens.append(str(payload["token"]))
        await cluster.discord.send_interaction(payload)
        await _saved(cluster, number)  # one at a time: the line's order is the order asked in
    # Carol's first goes ahead of everyone (she was never served), then Bob's (served before Alice).
    places = dict(zip(tokens[2:], [3, 6, 8, 2, 5, 1, 4, 7], strict=True))
    ordinal = {1: "1st", 2: "2nd", 3: "3rd"}
    shown = {
        token: f"Image to prompt · Queued · {ordinal.get(n, f'{n}th')} in line" for token, n in places.items()
    }
    try:
        await eventually(
            lambda: all(cluster.answer(t) == shown[t] for t in shown), "every waiting task's place"
        )
    except AssertionError:
        raise AssertionError([cluster.answer(t) for t in shown]) from None

    cluster.freepik.hold.set()
    try:
        await eventually(
            lambda: all(cluster.answer(t) == DONE for t in tokens), "every task done", timeout=30
        )
    except AssertionError:
        raise AssertionError(f"{[cluster.answer(t) for t in tokens]}\n{cluster.outputs()}") from None

    # Never more than two at Freepik at once, whichever process dispatched them.
    assert len(cluster.freepik.running_at_create) == len(asks)
    assert max(cluster.freepik.running_at_create) == 2, cluster.freepik.running_at_create
    rows = await cluster.rows("SELECT user_id, state, finished_at FROM jobs ORDER BY dispatched_at")
    # Turns: Bob and Alice first (each asked when there was room), then Carol (never served), Bob (served
    # longest ago), Alice, and round again until Alice, who asked most, has the line to herself.
    assert [row["user_id"] for row in rows] == [
        BOB,
        ALICE,
        CAROL,
        BOB,
        ALICE,
        CAROL,
        BOB,
        ALICE,
        CAROL,
        ALICE,
    ]
    assert {(row["state"], row["finished_at"] is not None) for row in rows} == {("COMPLETED", True)}
    usage = await cluster.rows("SELECT state FROM usage")
    assert [row["state"] for row in usage] == ["committed"] * len(asks)
    finished_in = [len(re.findall(r"task finished", p.output)) for p in (first, second)]
    print(f"a line of {len(asks)} on two processes, cap 2: tasks finished by each process {finished_in}")
    assert sum(finished_in) == len(asks)


async def test_cancel_clicked_in_the_other_process_reaches_a_waiting_task_and_a_running_one(
    cluster: Cluster,
) -> None:
    driver, other = await cluster.start(2, MAX_INFLIGHT_PER_PROVIDER="1")
    cluster.freepik.seconds_per_state = 3600  # the running task stays at Freepik
    running = cluster.describe((200, 30, 30))  # Alice's server is on shard 0: the first process drives it
    await cluster.discord.send_interaction(running)
    await _saved(cluster, 1)
    waiting = cluster.describe((30, 200, 30))
    await cluster.discord.send_interaction(waiting)
    await eventually(lambda: "in line" in cluster.answer(str(waiting["token"])), "the waiting task's place")
    created = "Image to prompt · Task created, waiting for the provider"
    await eventually(lambda: cluster.answer(str(running["token"])) == created, "the task at Freepik")

    # Cancel of the waiting task, clicked where the other process receives it: free.
    message = cluster.discord.original_message(str(waiting["token"]))
    click = cluster.discord.button_click(_buttons(message)["Cancel"], message, guild_id=GUILD)
    await cluster.discord.send_interaction(click, shard=1)
    await eventually(
        lambda: cluster.answer(str(click["token"])) == "Cancelled; it did not count against the quota.",
        "the waiting task's Cancel answered",
    )
    await eventually(
        lambda: cluster.answer(str(waiting["token"])) == "Image to prompt · Cancelled",
        "the waiting one cancelled",
    )

    # Cancel of the task the first process drives, clicked in the second: it asks first, then asks the driver.
    message = cluster.discord.original_message(str(running["token"]))
    click = cluster.discord.button_click(_buttons(message)["Cancel"], message, guild_id=GUILD)
    await cluster.discord.send_interaction(click, shard=1)
    await eventually(lambda: "Cancel it anyway?" in cluster.answer(str(click["token"])), "the question")
    question = cluster.discord.original_message(str(click["token"]))
    sure = cluster.discord.button_click(_buttons(question)["Cancel anyway"], question, guild_id=GUILD)
    await cluster.discord.send_interaction(sure, shard=1)
    await eventually(
        lambda: (
            cluster.answer(str(click["token"]))
            == "Cancelled; it counted against the quota, since Freepik had already taken it."
        ),
        "the answer to Cancel anyway",
    )
    (line,) = await driver.wait_for_lines(
        r"cancelled by its member through another process", timeout=LEASE * 2
    )
    await eventually(
        lambda: cluster.answer(str(running["token"])) == "Image to prompt · Cancelled",
        "the driver showing the task cancelled",
    )
    print(f"the driver: {line}")

    # The end is shown before the job is closed (settled, lease given back): wait for that write too.
    async with asyncio.timeout(15):
        # Rows written by other processes announce nothing here: look often.
        while await cluster.rows("SELECT id FROM jobs WHERE finished_at IS NULL"):  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    jobs = await cluster.rows("SELECT state, finished_at, owner FROM jobs ORDER BY created_at")
    assert [(row["state"], row["finished_at"] is not None, row["owner"]) for row in jobs] == [
        ("CANCELLED", True, None),
        ("CANCELLED", True, None),
    ]
    usage = await cluster.rows("SELECT state, outcome FROM usage ORDER BY id")
    assert [tuple(row.values()) for row in usage] == [("committed", "CANCELLED"), ("refunded", "CANCELLED")]
    assert "cancelled by its member" not in other.output  # the second process only asked
    assert cluster.freepik.count("POST") == 1
