"""Entry: `python -m bot [run|check|describe|invite|backup|health]`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

import aiohttp
import discord

from bot import cli
from bot.client import ImageBot
from bot.heartbeat import DEFAULT_MAX_AGE
from bot.logs import configure_logging, secret_values
from bot.settings import Settings, SettingsError, load_settings
from bot.store.database import Database

log = logging.getLogger("bot")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bot", description="A Discord bot for image prompts and images."
    )
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("run", help="run the bot (the default)")
    check = commands.add_parser(
        "check", help="validate settings and database; say which providers are configured"
    )
    check.add_argument(
        "--live", action="store_true", help="also try each provider key with its cheapest call"
    )
    describe = commands.add_parser(
        "describe", help="describe one image from the terminal and print the prompt"
    )
    describe.add_argument("source", metavar="PATH_OR_URL")
    describe.add_argument("--provider", choices=["freepik", "novita"])
    commands.add_parser("invite", help="print the link that adds the bot to a server")
    backup = commands.add_parser(
        "backup", help="write a consistent copy of the database, safe while the bot runs"
    )
    backup.add_argument("path")
    health = commands.add_parser(
        "health", help="exit 0 while the running bot is connected to Discord (for container health checks)"
    )
    health.add_argument(
        "--max-age",
        type=float,
        default=DEFAULT_MAX_AGE,
        metavar="SECONDS",
        help=f"the oldest heartbeat that still counts as alive (default {DEFAULT_MAX_AGE:.0f})",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format, secrets=secret_values(settings))
    command = args.command or "run"
    if command == "check":
        return asyncio.run(cli.check(settings, live=args.live))
    if command == "describe":
        return asyncio.run(cli.describe(settings, args.source, args.provider))
    if command == "invite":
        return cli.invite(settings)
    if command == "backup":
        return asyncio.run(cli.backup(settings, args.path))
    if command == "health":
        return asyncio.run(cli.health(settings, max_age=args.max_age))
    problems = settings.run_problems()
    if problems:
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        return 2
    return asyncio.run(run_bot(settings))


async def run_bot(settings: Settings) -> int:
    """Run until stopped; the first SIGTERM or SIGINT closes gracefully, a second exits at once."""
    assert settings.discord_token is not None
    db = await Database.open(settings.database_path)
    try:
        async with (
            aiohttp.ClientSession() as session,
            ImageBot(settings=settings, session=session, db=db) as bot,
        ):
            _install_signal_handlers(bot)
            try:
                await bot.start(settings.discord_token.get_secret_value())
            except discord.LoginFailure:
                print(
                    "error: Discord refused DISCORD_TOKEN: copy the bot token again from the developer portal",
                    file=sys.stderr,
                )
                return 2
            except discord.PrivilegedIntentsRequired:
                print(
                    "error: MENTION_TRIGGER needs the Message Content intent: switch it on in the developer portal "
                    "(Bot > Privileged Gateway Intents)",
                    file=sys.stderr,
                )
                return 2
    finally:
        await db.close()
    return 0


def _install_signal_handlers(bot: ImageBot) -> None:
    loop = asyncio.get_running_loop()
    state = {"signalled": False}

    def on_signal(signum: int) -> None:
        if state["signalled"]:
            # Every state change was saved before it was reported: exiting now loses nothing saved.
            log.warning("second %s: exiting at once", signal.Signals(signum).name)
            os._exit(1)
        state["signalled"] = True
        log.info("%s: finishing in-flight work and closing", signal.Signals(signum).name)
        loop.create_task(bot.close(), name="graceful-close")  # noqa: RUF006 (close() ends the loop's main task)

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)


if __name__ == "__main__":
    sys.exit(main())
