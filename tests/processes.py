"""Run the real `python -m bot` (or one of its commands) as its own process, as an admin would.

`BotProcess` streams the process's output line by line so tests wait for what it says, not for time.
As root, `as_bot_user=True` runs it as uid 10001 (the container's user) with no power over other
users' files: only the right to read and search them, so it can still run this interpreter from a
private home folder. Elsewhere it runs as the current user, who cannot write read-only files anyway.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from bot.settings_docs import setting_docs

ROOT = Path(__file__).resolve().parent.parent
BOT_UID = 10001
IS_ROOT = os.geteuid() == 0


def process_env(**settings: str) -> dict[str, str]:
    """Return this environment without any of the bot's settings from the machine, plus `settings`."""
    ours = {doc.env for doc in setting_docs()}
    env = {key: value for key, value in os.environ.items() if key.upper() not in ours}
    env["PYTHONPATH"] = str(ROOT)
    env.update(settings)
    return env


# Nothing listens here: a regression that tried to reach Discord or a provider would get nowhere.
CLOSED_PORT_URL = "http://127.0.0.1:9"


def bot_env(database: Path, **more: str) -> dict[str, str]:
    """The settings of a bot on `database` whose Discord and provider cannot be reached, plus `more`."""
    settings = {
        "DISCORD_TOKEN": "fake-token",
        "NOVITA_API_KEY": "test-novita-key",
        "NOVITA_BASE_URL": CLOSED_PORT_URL,
        "DATABASE_PATH": str(database),
        "FAKE_DISCORD_URL": CLOSED_PORT_URL,
    }
    return process_env(**(settings | more))


def bot_user_prefix() -> list[str]:
    """Return the command prefix that runs a process as the bot's unprivileged user (only as root)."""
    if not IS_ROOT:
        return []
    return [
        "setpriv",
        f"--reuid={BOT_UID}",
        f"--regid={BOT_UID}",
        "--clear-groups",
        "--inh-caps=+dac_read_search",
        "--ambient-caps=+dac_read_search",
    ]


def the_bot_uid() -> int:
    """Return the uid a process started with `as_bot_user=True` runs as."""
    return BOT_UID if IS_ROOT else os.getuid()


def give_to_bot_user(path: Path) -> None:
    """Make `path` belong to the user `as_bot_user=True` runs as."""
    if IS_ROOT:
        os.chown(path, BOT_UID, BOT_UID)


@dataclass(frozen=True, slots=True)
class Finished:
    code: int
    seconds: float
    output: str

    @property
    def lines(self) -> list[str]:
        return self.output.splitlines()

    @property
    def errors(self) -> list[str]:
        return [line for line in self.lines if line.startswith("error:")]


def single_error_line(result: Finished, *, code: int = 2) -> str:
    """Assert the process ended with `code`, printed exactly one error line and no traceback; return it."""
    assert "Traceback" not in result.output, result.output
    assert result.code == code, result.output
    assert len(result.errors) == 1, result.output
    return result.errors[0]


class BotProcess:
    """One process of the bot, its output read as it comes."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.started = time.monotonic()
        self._lines: list[str] = []
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(
        cls,
        *args: str,
        env: Mapping[str, str],
        cwd: Path,
        fake_discord: bool = True,
        as_bot_user: bool = False,
    ) -> BotProcess:
        """Start `python -m tests.fakes.bot_process ARGS` (or `python -m bot ARGS` without a fake Discord)."""
        module = "tests.fakes.bot_process" if fake_discord else "bot"
        prefix = bot_user_prefix() if as_bot_user else []
        process = await asyncio.create_subprocess_exec(
            *prefix,
            sys.executable,
            "-m",
            module,
            *args,
            cwd=cwd,
            env=dict(env),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        return cls(process)

    @property
    def output(self) -> str:
        return "\n".join(self._lines)

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for raw in self.process.stdout:
            self._lines.append(raw.decode(errors="replace").rstrip("\n"))
            self._changed.set()
        self._changed.set()

    async def wait_for_lines(self, pattern: str, count: int = 1, timeout: float = 30) -> list[str]:
        """Wait until `count` lines match `pattern` (re.search); fail with the output if the process ends first."""
        regex = re.compile(pattern)
        async with asyncio.timeout(timeout):
            while True:
                found = [line for line in self._lines if regex.search(line)]
                if len(found) >= count:
                    return found
                if self._reader.done():
                    raise AssertionError(f"the process ended before printing {pattern!r}:\n{self.output}")
                self._changed.clear()
                await self._changed.wait()

    def signal(self, signum: int = signal.SIGTERM) -> float:
        """Send a signal; return the monotonic time it was sent."""
        self.process.send_signal(signum)
        return time.monotonic()

    async def finished(self, timeout: float = 30, since: float | None = None) -> Finished:
        """Wait for the exit (killing the process if it overruns) and return its status, time and output."""
        try:
            async with asyncio.timeout(timeout):
                code = await self.process.wait()
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
            await self._reader
            raise AssertionError(f"still running after {timeout} s; killed. Output:\n{self.output}") from None
        seconds = time.monotonic() - (self.started if since is None else since)
        await self._reader
        return Finished(code, seconds, self.output)

    async def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        await asyncio.gather(self._reader, return_exceptions=True)


async def run_command(
    *args: str, env: Mapping[str, str], cwd: Path, as_bot_user: bool = False, timeout: float = 30
) -> Finished:
    """Run `python -m bot ARGS` to its end."""
    process = await BotProcess.start(*args, env=env, cwd=cwd, fake_discord=False, as_bot_user=as_bot_user)
    return await process.finished(timeout)
