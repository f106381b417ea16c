"""The floor: a bare discord.py bot that answers /describe as the real bot is seen to, and does nothing else.

It acknowledges (`defer(thinking=True)`), then edits the reply three times as a describe's states would
come (created at once, in progress at half the task's time, done at its end), with the same titles. No
database, no provider, no image, no settings: what is left is what discord.py and aiohttp cost for the
same Discord calls on the same machine in the same run, the yardstick for the bot's acknowledgement
latency and CPU per task. Run as `FAKE_DISCORD_URL=... python -m benchmarks.floor_bot`, with
BENCH_WORKLOAD_* naming the task times (see `benchmarks.fakes.Workload`).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys

import discord
from discord import app_commands

from benchmarks.fakes import Workload
from bot.domain.tasks import JobState, TaskKind
from bot.ui.words import Words
from tests.fakes.bot_process import point_discord_at

_WORDS = Words()
_TITLES = [
    f"{_WORDS.kind(TaskKind.DESCRIBE)} · {_WORDS.state(state)}"
    for state in (JobState.CREATED, JobState.IN_PROGRESS, JobState.COMPLETED)
]


def workload_from_env() -> Workload:
    return Workload(
        os.environ.get("BENCH_WORKLOAD", "steady"),
        seconds_per_state=float(os.environ.get("BENCH_SECONDS_PER_STATE", "3")),
        jitter=float(os.environ.get("BENCH_JITTER", "0.25")),
    )


class FloorBot(discord.Client):
    def __init__(self, workload: Workload) -> None:
        super().__init__(intents=discord.Intents.default())
        self.tree = app_commands.CommandTree(self)
        self.workload = workload
        self.random = random.Random(8)
        self.edits: set[asyncio.Task[None]] = set()

        @self.tree.command(name="describe", description="image to prompt")
        async def describe(
            interaction: discord.Interaction, image: discord.Attachment | None = None, url: str | None = None
        ) -> None:
            await interaction.response.defer(thinking=True)
            task = asyncio.create_task(self.report(interaction, self.workload.draw(self.random)))
            self.edits.add(task)
            task.add_done_callback(self.edits.discard)

    async def report(self, interaction: discord.Interaction, seconds: float) -> None:
        """Edit the reply as a describe's states come: created at once, in progress at half, done at the end."""
        await interaction.edit_original_response(embed=discord.Embed(title=_TITLES[0]))
        await asyncio.sleep(seconds / 2)
        await interaction.edit_original_response(embed=discord.Embed(title=_TITLES[1]))
        await asyncio.sleep(seconds / 2)
        done = discord.Embed(title=_TITLES[2], description="```\na red fox sitting in fresh snow\n```")
        await interaction.edit_original_response(embed=done)


async def main() -> None:
    bot = FloorBot(workload_from_env())
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    runner = asyncio.create_task(bot.start("fake-token"))
    await asyncio.wait([runner, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
    await bot.close()
    await asyncio.gather(runner, return_exceptions=True)


if __name__ == "__main__":
    point_discord_at(os.environ["FAKE_DISCORD_URL"])
    asyncio.run(main())
    sys.exit(0)
