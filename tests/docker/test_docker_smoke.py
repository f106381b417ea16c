"""The Docker image as an admin meets it: built from this checkout, run, and stopped with `docker stop`.

Skipped, with the reason, when no Docker daemon answers or the base image is neither present nor pullable,
so a machine without Docker loses no time here. Containers use the host network (`--network host`): the
stopped-bot check runs a fake Discord on 127.0.0.1 in this process and the bot in the container logs into
it. Every container, volume and folder made here is removed at the end, also when a check fails; the image
(`imageprompt-bot:smoke`) is kept so the next run builds from cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fakes.discord import FakeDiscord

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
IMAGE = "imageprompt-bot:smoke"
BASE_IMAGE = "python:3.11-slim-bookworm"
UID = 10001
# On every container and volume made here: `docker ps -a --filter label=imageprompt-bot.smoke` finds leftovers.
LABEL = "imageprompt-bot.smoke=1"
STOP_SECONDS = 10  # the bot exits within this long of SIGTERM, and of a fatal setup error
BUILD_TIMEOUT = 1800  # a cold build installs the lock from PyPI
PULL_TIMEOUT = 60
INFO_TIMEOUT = 5  # a daemon answers at once; one that does not must not slow the suite down


@dataclass
class Result:
    """One finished docker command: its status (None when it was still running at the deadline)."""

    status: int | None
    seconds: float
    stdout: str
    stderr: str

    @property
    def lines(self) -> list[str]:
        return [line for line in (self.stdout + "\n" + self.stderr).splitlines() if line.strip()]

    def __str__(self) -> str:
        return f"status {self.status} after {self.seconds:.1f} s\n--- stdout\n{self.stdout}--- stderr\n{self.stderr}"


def docker(*args: str, timeout: float = 60) -> Result:
    start = time.monotonic()
    try:
        done = subprocess.run(
            ["docker", *args],
            check=False,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        return Result(None, time.monotonic() - start, _text(exc.stdout), _text(exc.stderr))
    return Result(done.returncode, time.monotonic() - start, done.stdout, done.stderr)


def _text(output: bytes | str | None) -> str:
    if isinstance(output, bytes):
        return output.decode(errors="replace")
    return output or ""


async def docker_async(*args: str, timeout: float = 60) -> Result:
    start = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        "docker",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(timeout):
            stdout, stderr = await process.communicate()
    except TimeoutError:
        return Result(None, time.monotonic() - start, "", "")
    finally:
        if process.returncode is None:  # timed out or cancelled: no docker client is left behind
            process.kill()
            await process.wait()
    return Result(process.returncode, time.monotonic() - start, stdout.decode(), stderr.decode())


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def _docker_problem() -> str | None:
    """Say why Docker cannot be used here, quickly; None when a daemon answers and the base image is there."""
    if shutil.which("docker") is None:
        return "docker is not installed (no `docker` on PATH)"
    info = docker("info", "--format", "{{.ServerVersion}}", timeout=INFO_TIMEOUT)
    if info.status is None:
        return f"no Docker daemon answers: `docker info` did not return within {INFO_TIMEOUT} s"
    if info.status != 0:
        return f"no Docker daemon answers: `docker info` failed: {_last_line(info.stderr)}"
    if not info.stdout.strip():
        return "no Docker daemon answers: `docker info` got an answer without a server version"
    if docker("image", "inspect", BASE_IMAGE, timeout=30).status == 0:
        return None
    pull = docker("pull", BASE_IMAGE, timeout=PULL_TIMEOUT)
    if pull.status is None:
        return f"the base image {BASE_IMAGE} is not present locally and `docker pull` did not finish within {PULL_TIMEOUT} s"
    if pull.status != 0:
        return f"the base image {BASE_IMAGE} is not present locally and cannot be pulled: {_last_line(pull.stderr)}"
    return None


@pytest.fixture(scope="module")
def image() -> str:
    """Build this checkout's image once for the module (with the build cache), or skip saying why not."""
    problem = _docker_problem()
    if problem is not None:
        pytest.skip(problem)
    build = docker("build", "--network", "host", "-t", IMAGE, str(ROOT), timeout=BUILD_TIMEOUT)
    if build.status != 0:
        tail = "\n".join((build.stdout + build.stderr).splitlines()[-60:])
        pytest.fail(f"`docker build` failed ({build.status}, {build.seconds:.0f} s):\n{tail}", pytrace=False)
    return IMAGE


def _name(what: str) -> str:
    return f"imageprompt-smoke-{what}-{uuid.uuid4().hex[:8]}"


def _remove_container(name: str) -> None:
    docker("rm", "--force", "--volumes", name, timeout=60)


@pytest.fixture
def volume() -> Iterator[str]:
    """A fresh named volume; Docker copies the image's /app/data (owned by the bot's user) into it."""
    name = _name("data")
    created = docker("volume", "create", "--label", LABEL, name)
    assert created.status == 0, str(created)
    try:
        yield name
    finally:
        docker("volume", "rm", "--force", name)


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A folder on the host, removed at the end (pytest's tmp_path would keep it)."""
    path = Path(tempfile.mkdtemp(prefix="imageprompt-smoke-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def run_container(name: str, args: Sequence[str], *, timeout: float) -> Result:
    """`docker run` in the foreground; after `timeout` the container's log so far, status None. Always removed."""
    try:
        result = docker("run", "--name", name, "--label", LABEL, "--network", "host", *args, timeout=timeout)
        if result.status is None:
            logs = docker("logs", name)
            return Result(None, result.seconds, logs.stdout, logs.stderr)
        return result
    finally:
        _remove_container(name)


def _no_traceback(result: Result) -> None:
    assert "Traceback" not in result.stdout + result.stderr, str(result)


# ------------------------------------------------------------------ the checks


def test_empty_env_file_exits_2_with_one_line_per_missing_setting(image: str, scratch: Path) -> None:
    env_file = scratch / "empty.env"
    env_file.write_text("")
    result = run_container(_name("empty-env"), ["--env-file", str(env_file), image], timeout=60)

    assert result.status == 2, str(result)
    assert result.seconds < STOP_SECONDS, str(result)
    _no_traceback(result)
    errors = [line for line in result.lines if line.startswith("error:")]
    assert len(errors) == 2, str(result)
    assert errors[0].startswith("error: DISCORD_TOKEN"), str(result)
    assert errors[1].startswith("error: no provider is configured"), str(result)
    assert result.lines == errors, str(result)  # nothing else is printed


def test_runs_as_uid_10001_with_python_m_bot_as_the_default_command(image: str) -> None:
    result = run_container(
        _name("uid"), [image, "sh", "-c", "id -u; id -g; stat -c %u:%g /app/data"], timeout=60
    )

    assert result.status == 0, str(result)
    assert result.seconds < STOP_SECONDS, str(result)
    assert result.lines == [str(UID), str(UID), f"{UID}:{UID}"], str(result)
    assert result.stderr == "", str(result)

    config = docker("image", "inspect", "--format", "{{json .Config}}", image)
    assert config.status == 0, str(config)
    settings = json.loads(config.stdout)
    assert settings["Cmd"] == ["python", "-m", "bot"]
    assert settings.get("Entrypoint") in (None, [])
    assert settings["User"] in ("bot", str(UID), f"{UID}:{UID}")
    assert settings["WorkingDir"] == "/app"
    assert "/app/data" in settings["Volumes"]
    assert settings["StopSignal"] == "SIGTERM"
    assert settings["Healthcheck"]["Test"] == ["CMD", "python", "-m", "bot", "health"]


def _bot_env(**extra: str) -> list[str]:
    env = {"DISCORD_TOKEN": "fake-token", "NOVITA_API_KEY": "fake", "LOG_LEVEL": "INFO", **extra}
    return [arg for key, value in env.items() for arg in ("--env", f"{key}={value}")]


def _unwritable_folder(scratch: Path, volume: str, image: str) -> list[str]:
    """An empty bind-mounted folder, mode 0755, of the user running the tests: uid 10001 cannot write it.

    As `./data:/app/data` without the README's chown (Docker makes a missing ./data owned by root, 0755).
    """
    folder = scratch / "data"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    return ["--volume", f"{folder}:/app/data"]


def _read_only_database_file(scratch: Path, volume: str, image: str) -> list[str]:
    """A volume the bot's user owns, holding a bot.sqlite3 owned by root with mode 0444."""
    made = docker(
        "run",
        "--rm",
        "--network",
        "host",
        "--label",
        LABEL,
        "--user",
        "0:0",
        "--volume",
        f"{volume}:/app/data",
        image,
        "sh",
        "-c",
        "touch /app/data/bot.sqlite3 && chown 0:0 /app/data/bot.sqlite3 && chmod 0444 /app/data/bot.sqlite3",
    )
    assert made.status == 0, str(made)
    return ["--volume", f"{volume}:/app/data"]


@pytest.mark.parametrize("data", [_unwritable_folder, _read_only_database_file], ids=["folder", "file"])
def test_database_it_cannot_write_exits_at_once_with_one_error_line(
    image: str, scratch: Path, volume: str, data: Callable[[Path, str, str], list[str]]
) -> None:
    mounts = data(scratch, volume, image)
    # A deadline past STOP_SECONDS, so a bot that hangs fails here with its log rather than blocking the run.
    result = run_container(_name("read-only"), [*mounts, *_bot_env(), image], timeout=STOP_SECONDS + 20)

    assert result.status is not None, f"still running after {result.seconds:.0f} s (then removed):\n{result}"
    assert result.status == 2, str(result)
    assert result.seconds < STOP_SECONDS, str(result)
    _no_traceback(result)
    errors = [line for line in result.lines if line.startswith("error:")]
    assert len(errors) == 1, str(result)
    # The owner, as whom the bot runs, and the fix, said where a bind mount's fix is run.
    (line,) = errors
    assert line.startswith("error: DATABASE_PATH /app/data/bot.sqlite3 cannot be written: the "), line
    assert re.search(r" belongs to uid \d+ \(mode \d+\) ", line), line
    assert line.endswith(
        f"and the bot runs as uid {UID}; fix it with `chown -R {UID}:{UID} /app/data` "
        "(for a bind-mounted folder, on the host's folder)"
    ), line


# ------------------------------------------------------------------ docker stop


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A loopback port bound but never listening: every connection to it is refused at once."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


@contextlib.asynccontextmanager
async def detached_container(name: str, args: Sequence[str]) -> AsyncIterator[str]:
    started = await docker_async(
        "run", "--detach", "--name", name, "--label", LABEL, "--network", "host", *args
    )
    try:
        assert started.status == 0, str(started)
        yield name
    finally:
        await docker_async("rm", "--force", "--volumes", name)


async def _logs(name: str) -> str:
    logs = await docker_async("logs", name)
    return f"--- container log\n{logs.stdout}{logs.stderr}"


async def test_docker_stop_of_an_idle_bot_exits_0_within_10_s(
    image: str, fake_discord: FakeDiscord, volume: str, refused_port: int
) -> None:
    env = _bot_env(
        FAKE_DISCORD_URL=fake_discord.base_url,
        NOVITA_BASE_URL=f"http://127.0.0.1:{refused_port}",  # no task runs; if one did, it would fail fast
        DATABASE_PATH="/app/data/bot.sqlite3",
    )
    args = [
        *env,
        "--volume",
        f"{volume}:/app/data",
        # The image has no tests/: the fake's entry point comes from this checkout, read-only.
        "--volume",
        f"{TESTS}:/app/tests:ro",
        image,
        "python",
        "-m",
        "tests.fakes.bot_process",
        "run",
    ]
    async with detached_container(_name("stop"), args) as name:
        # Connected, or the container gave up: whichever comes first (a crashed bot fails here, not in 60 s).
        connected = asyncio.create_task(fake_discord.wait_connected(timeout=60))
        exited = asyncio.create_task(docker_async("wait", name, timeout=60))
        done, pending = await asyncio.wait([connected, exited], return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if connected not in done or connected.exception() is not None:
            pytest.fail(f"the bot did not connect to the fake Discord:\n{await _logs(name)}", pytrace=False)

        # A long grace, so the time measured is the bot's own, not Docker's SIGKILL after 10 s.
        stop = await docker_async("stop", "-t", "30", name, timeout=60)
        assert stop.status == 0, str(stop)
        state = await docker_async("inspect", "--format", "{{json .State}}", name)
        assert state.status == 0, str(state)
        exit_code = json.loads(state.stdout)["ExitCode"]
        log = await _logs(name)

    assert exit_code == 0, f"exit code {exit_code} after `docker stop`\n{log}"
    assert stop.seconds < STOP_SECONDS, f"`docker stop` took {stop.seconds:.1f} s\n{log}"
    assert "Traceback" not in log, log
