"""Entry: `python -m bot [run|check|describe|invite|backup|restore|copy-to-postgres|health]`."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import threading

from bot import cli
from bot.discord.heartbeat import DEFAULT_MAX_AGE
from bot.discord.runtime import run_bot
from bot.domain.tasks import MAX_SUGGESTIONS, DescribeRequest, DescribeStyle
from bot.logs import configure_logging, secret_values
from bot.providers.registry import BY_NAME
from bot.settings import SettingsError, load_settings


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
    describe.add_argument("--provider", choices=list(BY_NAME))
    describe.add_argument(
        "--style", choices=[style.value for style in DescribeStyle], default=DescribeStyle.DETAILED.value
    )
    describe.add_argument(
        "--suggestions", type=int, choices=range(1, MAX_SUGGESTIONS + 1), default=1, metavar="1-4"
    )
    commands.add_parser("invite", help="print the link that adds the bot to a server")
    backup = commands.add_parser(
        "backup", help="write a consistent copy of the database, safe while the bot runs"
    )
    backup.add_argument(
        "path", help="a file to write, or a folder (existing, or ending in /) for a new timestamped file"
    )
    restore = commands.add_parser(
        "restore",
        help="put a backup in place of the database (the bot must be stopped; the old file is kept)",
    )
    restore.add_argument("backup", metavar="BACKUP")
    copy = commands.add_parser(
        "copy-to-postgres",
        help="copy the SQLite database (DATABASE_PATH) into an empty PostgreSQL database, to run several processes",
    )
    copy.add_argument("url", metavar="URL", help="postgresql://user:password@host:5432/database (empty)")
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
    if threading.current_thread() is threading.main_thread():
        # Until the bot installs its own handlers, a signal ends the process quietly: Ctrl-C while
        # settings load is not worth a KeyboardInterrupt traceback.
        signal.signal(signal.SIGINT, signal.SIG_DFL)
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
        request = DescribeRequest(DescribeStyle(args.style), args.suggestions)
        return asyncio.run(cli.describe(settings, args.source, args.provider, request))
    if command == "invite":
        return cli.invite(settings)
    if command == "backup":
        return asyncio.run(cli.backup(settings, args.path))
    if command == "restore":
        return asyncio.run(cli.restore(settings, args.backup))
    if command == "copy-to-postgres":
        return asyncio.run(cli.copy_to_postgres(settings, args.url))
    if command == "health":
        return asyncio.run(cli.health(settings, max_age=args.max_age))
    problems = settings.run_problems()
    if problems:
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        return 2
    return asyncio.run(run_bot(settings))


if __name__ == "__main__":
    sys.exit(main())
