"""Run the real bot (`python -m bot run`, as deployed), or the floor bot, in its own process at the fakes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from benchmarks.fakes import Workload
from bot.settings_docs import setting_docs
from tests.fakes.discord import FakeDiscord
from tests.fakes.providers import DEFAULT_FREEPIK_KEY, DEFAULT_WEBHOOK_SECRET, FakeFreepik

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True, slots=True)
class BotOptions:
    webhooks: bool
    poll_interval: float = 2.0
    poll_max_interval: float = 10.0
    edit_coalesce: float = 1.0
    profile_out: Path | None = None
    database: Path | None = None  # kept across bursts (what polling learned); else one in the working folder
    floor: Workload | None = None  # run the floor bot (benchmarks.floor_bot) with these task times instead


def free_port() -> int:
    """Return a port of 127.0.0.1 that is free now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def bot_environment(
    fake: FakeDiscord, freepik: FakeFreepik | None, workdir: Path, options: BotOptions
) -> dict[str, str]:
    """Return the bot's environment: the caller's, less any bot setting, plus the benchmark's settings."""
    settings_names = {doc.env for doc in setting_docs()}
    env = {key: value for key, value in os.environ.items() if key.upper() not in settings_names}
    if options.floor is not None:
        env.update(
            FAKE_DISCORD_URL=fake.base_url,
            PYTHONPATH=str(ROOT),
            BENCH_WORKLOAD=options.floor.name,
            BENCH_SECONDS_PER_STATE=str(options.floor.seconds_per_state),
            BENCH_JITTER=str(options.floor.jitter),
        )
        return env
    assert freepik is not None
    env.update(
        FAKE_DISCORD_URL=fake.base_url,
        PYTHONPATH=str(ROOT),
        DISCORD_TOKEN="fake-token",
        DATABASE_PATH=str(options.database or workdir / "bot.sqlite3"),
        FREEPIK_API_KEY=DEFAULT_FREEPIK_KEY,
        FREEPIK_BASE_URL=freepik.base_url,
        NOVITA_API_KEY="",
        POLL_INTERVAL_SECONDS=str(options.poll_interval),
        POLL_MAX_INTERVAL_SECONDS=str(options.poll_max_interval),
        EDIT_COALESCE_SECONDS=str(options.edit_coalesce),
        MAX_INFLIGHT_PER_USER="1000",
        MAX_INFLIGHT_PER_PROVIDER="1000",
        QUOTA_DESCRIBE_PER_DAY="100000",
        LOG_LEVEL="WARNING",
    )
    if options.webhooks:
        port = free_port()
        env.update(
            WEBHOOK_PUBLIC_URL=f"http://127.0.0.1:{port}",
            WEBHOOK_SECRET=DEFAULT_WEBHOOK_SECRET,
            WEBHOOK_PORT=str(port),
        )
    if options.profile_out is not None:
        env["BENCH_PROFILE_OUT"] = str(options.profile_out)
    return env


class BotProcess:
    """One bot process; its output goes to a log file in its working folder."""

    def __init__(self, process: asyncio.subprocess.Process, log_path: Path, log_file: IO[bytes]) -> None:
        self.process = process
        self.log_path = log_path
        self._log_file = log_file

    @property
    def pid(self) -> int:
        return self.process.pid

    @classmethod
    async def start(
        cls, fake: FakeDiscord, freepik: FakeFreepik | None, workdir: Path, options: BotOptions
    ) -> BotProcess:
        """Spawn the bot and wait until it is connected to the fake gateway (its commands synced)."""
        env = bot_environment(fake, freepik, workdir, options)
        if options.floor is not None:
            module = "benchmarks.floor_bot"
        else:
            module = "benchmarks.profiled_bot" if options.profile_out else "tests.fakes.bot_process"
        log_path = workdir / "bot.log"
        log_file = log_path.open("wb")
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            module,
            "run",
            cwd=workdir,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log_file,
            stderr=asyncio.subprocess.STDOUT,
        )
        bot = cls(process, log_path, log_file)
        waiter = asyncio.ensure_future(fake.wait_connected(timeout=60))
        exited = asyncio.ensure_future(process.wait())
        done, _ = await asyncio.wait({waiter, exited}, return_when=asyncio.FIRST_COMPLETED)
        if waiter not in done or waiter.exception() is not None:
            waiter.cancel()
            await bot.stop()
            raise RuntimeError(f"the bot did not connect; its output:\n{bot.output()}")
        exited.cancel()
        return bot

    def signal(self, signum: int) -> None:
        if self.process.returncode is None:
            self.process.send_signal(signum)

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    async def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM (a graceful close), then SIGKILL if it is still running after `timeout`."""
        try:
            if self.process.returncode is None:
                self.process.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(self.process.wait(), timeout)
                except TimeoutError:
                    self.process.kill()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.process.wait(), 5)
        finally:
            self._log_file.close()
        return self.process.returncode
