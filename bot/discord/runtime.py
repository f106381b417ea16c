"""Running the bot: start-up, staying connected, and ending within 10 s of SIGTERM in every state."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aiohttp
import discord

from bot.discord.client import ImageBot
from bot.discord.connection import (
    FATAL_CLOSE_CODES,
    CappedBackoff,
    install_connection_policy,
    login_until_reachable,
)
from bot.domain.errors import StartupError
from bot.settings import Settings
from bot.store.sqlite.database import Database, DatabaseUnusable

if TYPE_CHECKING:
    from bot.store.postgres.database import PgDatabase

log = logging.getLogger("bot")

# The graceful close (running tasks reach a safe point, the reporter and listener stop) gets this long;
# whatever is still going then is cancelled, and every saved state resumes at the next start.
CLOSE_BUDGET = 7.0
# Whatever happens (a stuck thread, a blocked loop), the process is gone this long after the first signal:
# Docker and Compose send SIGKILL at 10 s.
HARD_DEADLINE = 9.5
EXIT_STARTUP_FAULT = 2
_CANCEL_AGAIN_AFTER = 0.5


@dataclass(slots=True)
class _Running:
    """What the signal handler needs to stop: the bot once it exists."""

    bot: ImageBot | None = None


def fatal(line: str) -> int:
    """Print one line for the admin and return the exit status of a fault they must fix."""
    print(f"error: {line}", file=sys.stderr)
    return EXIT_STARTUP_FAULT


async def run_bot(settings: Settings) -> int:
    """Run until stopped; the first SIGTERM or SIGINT closes gracefully, a second exits at once."""
    install_connection_policy()
    stopping = asyncio.Event()
    _install_signal_handlers(stopping)
    running = _Running()
    serve = asyncio.create_task(_serve(settings, running), name="serve")
    stop_requested = asyncio.create_task(stopping.wait(), name="stop-requested")
    await asyncio.wait({serve, stop_requested}, return_when=asyncio.FIRST_COMPLETED)
    stop_requested.cancel()
    if not serve.done():
        await _stop(serve, running.bot)
    if serve.cancelled():
        return 0
    return serve.result()


async def _serve(settings: Settings, running: _Running) -> int:
    assert settings.discord_token is not None
    db: Database | PgDatabase
    try:
        if settings.database_url is not None:
            db = await open_postgres_until_reachable(settings.database_url.get_secret_value())
        else:
            db = await Database.open(settings.database_path)
    except DatabaseUnusable as exc:
        return fatal(str(exc))
    except StartupError as exc:
        return fatal(str(exc))
    try:
        async with (
            aiohttp.ClientSession() as session,
            ImageBot(settings=settings, session=session, db=db) as bot,
        ):
            running.bot = bot
            try:
                await login_until_reachable(bot, settings.discord_token.get_secret_value())
                await bot.connect(reconnect=True)
            except discord.LoginFailure:
                return fatal(FATAL_CLOSE_CODES[4004])
            except discord.PrivilegedIntentsRequired:
                return fatal(FATAL_CLOSE_CODES[4014])
            except discord.ConnectionClosed as exc:
                if exc.code not in FATAL_CLOSE_CODES:
                    raise
                return fatal(FATAL_CLOSE_CODES[exc.code])
            except StartupError as exc:
                return fatal(str(exc))
    finally:
        await db.close()
    return 0


async def open_postgres_until_reachable(url: str) -> PgDatabase:
    """Connect to PostgreSQL (and migrate), retrying while it cannot be reached, one WARNING line per attempt.

    A fault no retry mends (a refused password, no such database, a schema newer than the bot) raises
    StartupError with one line. The waits are plain sleeps: SIGTERM cancels them at once.
    """
    from bot.store.postgres.database import (  # noqa: PLC0415 (only with DATABASE_URL)
        DatabaseUnreachable,
        PgDatabase,
    )
    from bot.store.postgres.database import DatabaseUnusable as PgUnusable  # noqa: PLC0415

    backoff = CappedBackoff()
    while True:
        try:
            return await PgDatabase.open(url)
        except PgUnusable as exc:
            raise StartupError(str(exc)) from None
        except DatabaseUnreachable as exc:
            wait = max(1.0, backoff.delay())
            log.warning("%s; trying again in %.0f s", exc, wait)
            await asyncio.sleep(wait)


async def _stop(serve: asyncio.Task[int], bot: ImageBot | None) -> None:
    """Close the bot within the budget, then end whatever it was doing (connecting, waiting to retry)."""
    if bot is not None:
        try:
            await asyncio.wait_for(bot.close(), CLOSE_BUDGET)
        except TimeoutError:
            log.warning("closing took longer than %.0f s; stopping what is left", CLOSE_BUDGET)
        except Exception:
            log.exception("closing failed; stopping what is left")
    # asyncio.wait_for in Python 3.11 can swallow a cancellation that lands as the awaited connection
    # fails (discord.py's shard launcher then sleeps and retries): cancel until the task is gone.
    while not serve.done():
        serve.cancel()
        await asyncio.wait({serve}, timeout=_CANCEL_AGAIN_AFTER)


def _install_signal_handlers(stopping: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        name = signal.Signals(signum).name
        if stopping.is_set():
            # Every state change was saved before it was reported: exiting now loses nothing saved.
            log.warning("second %s: exiting at once", name)
            os._exit(1)
        stopping.set()
        log.info("%s: finishing in-flight work and closing", name)
        _arm_watchdog()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)


def _arm_watchdog() -> None:
    """End the process at the hard deadline even if the loop or a thread is stuck."""

    def expire() -> None:
        log.error(
            "could not close within %.1f s; exiting now (saved tasks resume at the next start)", HARD_DEADLINE
        )
        logging.shutdown()
        os._exit(1)

    timer = threading.Timer(HARD_DEADLINE, expire)
    timer.daemon = True  # never what keeps the process alive
    timer.start()
