"""The bot as deployed, in its own process: a kill mid-task loses nothing, SIGTERM closes gracefully."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from bot.domain.tasks import JobState
from tests.conftest import FREEPIK_KEY, Harness

ROOT = Path(__file__).resolve().parent.parent


async def _spawn_bot(harness: Harness) -> asyncio.subprocess.Process:
    env = {
        **os.environ,
        "FAKE_DISCORD_URL": harness.discord.base_url,
        "PYTHONPATH": str(ROOT),
        "DISCORD_TOKEN": "fake-token",
        "DATABASE_PATH": str(harness.tmp_path / "bot.sqlite3"),
        "FREEPIK_API_KEY": FREEPIK_KEY,
        "FREEPIK_BASE_URL": harness.freepik.base_url,
        "NOVITA_API_KEY": "",
        "POLL_INTERVAL_SECONDS": "0.05",
        "POLL_MAX_INTERVAL_SECONDS": "0.1",
        "EDIT_COALESCE_SECONDS": "0",
        "LOG_LEVEL": "INFO",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.fakes.bot_process",
        "run",
        cwd=harness.tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        await harness.discord.wait_connected(timeout=30)
    except TimeoutError:
        process.kill()
        output, _ = await process.communicate()
        raise AssertionError(output.decode()) from None
    return process


async def _start_task_in_process(harness: Harness) -> str:
    # Long enough that the task is still running when the process is stopped.
    harness.freepik.seconds_per_state = 1.0
    process = await _spawn_bot(harness)
    harness.process = process  # type: ignore[attr-defined]
    payload = harness.describe_payload()
    await harness.discord.send_interaction(payload)
    token = str(payload["token"])
    await harness.discord.wait_for_call(lambda c: c.method == "PATCH" and token in c.path, timeout=10)
    return token


async def _finish_in_a_new_bot(harness: Harness, token: str) -> None:
    bot = await harness.start_bot(describe_provider="freepik")
    await harness.settle(bot, timeout=10)
    assert harness.discord.original_message(token)["embeds"][0]["title"] == "Image to prompt · Done"
    rows = await bot.core.db.fetchall("SELECT state FROM usage")
    assert [row["state"] for row in rows] == ["committed"]
    assert harness.freepik.count("POST") == 1


async def test_kill_mid_task_loses_nothing(harness: Harness) -> None:
    token = await _start_task_in_process(harness)
    process: asyncio.subprocess.Process = harness.process  # type: ignore[attr-defined]
    process.kill()  # no graceful shutdown at all
    await process.wait()
    await harness.discord.wait_disconnected(timeout=5)
    await _finish_in_a_new_bot(harness, token)


async def test_sigterm_closes_gracefully_and_the_job_resumes(harness: Harness) -> None:
    token = await _start_task_in_process(harness)
    process: asyncio.subprocess.Process = harness.process  # type: ignore[attr-defined]
    process.send_signal(signal.SIGTERM)
    output, _ = await asyncio.wait_for(process.communicate(), timeout=20)
    assert process.returncode == 0, output.decode()
    assert b"finishing in-flight work and closing" in output
    await _finish_in_a_new_bot(harness, token)


async def test_sigterm_leaves_the_job_saved_in_its_state(harness: Harness) -> None:
    token = await _start_task_in_process(harness)
    process: asyncio.subprocess.Process = harness.process  # type: ignore[attr-defined]
    process.send_signal(signal.SIGTERM)
    await asyncio.wait_for(process.communicate(), timeout=20)
    from bot.store.sqlite.database import Database
    from bot.store.sqlite.jobs import SqliteJobRepository

    db = await Database.open(harness.tmp_path / "bot.sqlite3")
    try:
        jobs = await SqliteJobRepository(db).unfinished()
    finally:
        await db.close()
    assert [job.state for job in jobs] in ([JobState.CREATED], [JobState.IN_PROGRESS])
    assert jobs[0].route.interaction_token  # kept: the next start reports with it
    assert token


async def test_a_second_signal_exits_at_once_and_loses_nothing_saved(harness: Harness) -> None:
    token = await _start_task_in_process(harness)
    process: asyncio.subprocess.Process = harness.process  # type: ignore[attr-defined]
    process.send_signal(signal.SIGTERM)
    process.send_signal(signal.SIGTERM)
    await asyncio.wait_for(process.communicate(), timeout=20)
    assert process.returncode in (0, 1)  # 1: the second signal won the race, as it should
    await _finish_in_a_new_bot(harness, token)
