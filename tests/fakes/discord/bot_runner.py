"""Run a real discord.py client against the fake: log in, connect in the background, stop cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import weakref

import discord

from tests.fakes.discord.fake import FakeDiscord

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
        # A bot that ran some shards (others run the rest) leaves when its shards' sessions close.
        shard_ids = getattr(bot, "shard_ids", None)
        with contextlib.suppress(TimeoutError):
            if shard_ids:
                await fake.wait_shards_gone(shard_ids, timeout)
            else:
                await fake.wait_disconnected(timeout)
