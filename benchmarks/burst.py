"""One burst: N simultaneous /describe commands from distinct members against a fresh bot process.

The bot is the real one (polling or webhooks) or the floor bot; the fake Freepik keeps Freepik's documented
rate limits (429 past them) unless told not to. A series of bursts may share the bot's database, so that
what polling learned in one burst is what the next process starts with, as after any restart.
"""

from __future__ import annotations

import asyncio
import io
import signal
import sqlite3
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from PIL import Image

from benchmarks.botproc import BotOptions, BotProcess
from benchmarks.fakes import BenchDiscord, TimedFreepik, Workload
from benchmarks.machine import cpu_seconds, memory_mib, self_cpu_seconds
from bot.domain.tasks import JobState, TaskKind
from bot.ui.words import Words
from tests.fakes.discord import FakeDiscord, RecordedCall
from tests.fakes.providers import FREEPIK_LIMITS

ACK_WINDOW = 3.0
# The states a Freepik describe goes through that the member is shown: each is one edit at best.
SHOWN_STATES = (JobState.CREATED, JobState.IN_PROGRESS, JobState.COMPLETED)
FLOOR = 1 + len(SHOWN_STATES)  # the acknowledgement, then one edit per new state
_DONE_TITLE = f"{Words().kind(TaskKind.DESCRIBE)} · {Words().state(JobState.COMPLETED)}"
_FAILED_TITLE = f"{Words().kind(TaskKind.DESCRIBE)} · {Words().state(JobState.FAILED)}"
_FIRST_MEMBER = 700_000_000_000_000_000


Mode = Literal["polling", "webhooks", "floor"]
# The two windows Freepik's limits are documented over: the burst (5 s) and the average (2 minutes).
BURST_WINDOW, AVERAGE_WINDOW = (limit.seconds for limit in FREEPIK_LIMITS)


@dataclass(frozen=True, slots=True)
class BurstConfig:
    size: int
    mode: Mode
    workload: Workload
    edit_coalesce: float = 1.0
    profile_out: Path | None = None
    database: Path | None = None  # shared with the other bursts of a series; else a fresh one
    limits: bool = True  # the fake Freepik answers 429 past Freepik's documented limits
    warmup: bool = False  # only there for the bot to learn from: not in the tables
    first_member: int = 0  # members (and their images) are numbered from here: unique within a series

    @property
    def webhooks(self) -> bool:
        return self.mode == "webhooks"

    @property
    def polling(self) -> bool:
        return self.mode == "polling"


@dataclass(slots=True)
class BurstResult:
    config: BurstConfig
    ack_latencies: list[float] = field(default_factory=list)  # seconds, frame sent -> callback received
    ack_missed: int = 0  # no acknowledgement within 3 s of the interaction's creation
    completion_delays: list[float] = field(default_factory=list)  # provider COMPLETED -> final edit
    discord_calls: list[int] = field(default_factory=list)  # per task: callback + webhook (edit) calls
    channel_calls: int = 0
    cdn_reads: int = 0
    other_calls: int = 0
    provider_requests: list[int] = field(default_factory=list)  # per task: create + polls
    polls: list[int] = field(default_factory=list)
    task_seconds: list[float] = field(default_factory=list)  # per task: create -> COMPLETED at the provider
    creates: int = 0
    refused: int = 0  # 429s the limiting fake gave
    peak_burst: int = 0  # most requests the fake received within any 5 s
    peak_average: int = 0  # ... within any 2 minutes
    webhook_deliveries: int = 0
    finished: int = 0
    failed: int = 0
    cpu_seconds: float = 0.0
    rss_before_mib: float = 0.0
    peak_rss_mib: float = 0.0
    load_cpu_seconds: float = 0.0  # this process: the fakes and the load generator
    wall_seconds: float = 0.0
    problems: list[str] = field(default_factory=list)


def member_png(index: int) -> bytes:
    """Return a small PNG that differs from every other member's, even once re-encoded for the provider.

    The describe cache keys on the hash of the image as sent; the index is drawn as 16 black or white
    blocks (its bits), which no re-encoding can merge.
    """
    image = Image.new("RGB", (64, 48), (200, 30, 30))
    for bit in range(16):
        if index >> bit & 1:
            left, top = (bit % 4) * 16, (bit // 4) * 12
            image.paste((255, 255, 255), (left, top, left + 16, top + 12))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


class _CallScanner:
    """Read the fake's call log once, as it grows: acknowledgements, edits and final edits per token."""

    def __init__(self, fake: FakeDiscord, start: int, tokens: set[str]) -> None:
        self._fake = fake
        self._next = start
        self._tokens = tokens
        self.per_token: Counter[str] = Counter()
        self.ack: dict[str, RecordedCall] = {}
        self.final: dict[str, RecordedCall] = {}
        self.final_failed: set[str] = set()
        self.channel = 0
        self.cdn = 0
        self.other = 0

    def scan(self) -> None:
        calls = self._fake.calls
        while self._next < len(calls):
            self._take(calls[self._next])
            self._next += 1

    def _take(self, call: RecordedCall) -> None:
        parts = call.path.split("/")
        if call.path.startswith("/cdn/"):
            self.cdn += 1
            return
        if len(parts) >= 4 and parts[1] in ("interactions", "webhooks") and parts[3] in self._tokens:
            token = parts[3]
            self.per_token[token] += 1
            if parts[1] == "interactions":
                self.ack.setdefault(token, call)
            elif call.method == "PATCH" and token not in self.final and _is_final(call):
                self.final[token] = call
                if not _is_done(call):
                    self.final_failed.add(token)
            return
        if len(parts) >= 2 and parts[1] == "channels":
            self.channel += 1
        else:
            self.other += 1


def _embed_title(call: RecordedCall) -> str | None:
    body = call.json if isinstance(call.json, dict) else {}
    embeds = body.get("embeds") or []
    return str(embeds[0].get("title")) if embeds else None


def _is_done(call: RecordedCall) -> bool:
    return _embed_title(call) == _DONE_TITLE


def _is_final(call: RecordedCall) -> bool:
    """Tell whether an edit shows an end: the result, a failure, or a one-sentence error reply."""
    title = _embed_title(call)
    if title is None:
        body = call.json if isinstance(call.json, dict) else {}
        return bool(body.get("content"))
    return title in (_DONE_TITLE, _FAILED_TITLE)


def _task_ids_by_user(database: Path) -> dict[int, str]:
    """Read which provider task each member's job got (the job rows keep both)."""
    connection = sqlite3.connect(database, timeout=10)
    try:
        rows = connection.execute(
            "SELECT user_id, provider_task_id FROM jobs WHERE provider_task_id IS NOT NULL"
        ).fetchall()
    finally:
        connection.close()
    return {int(user_id): str(task_id) for user_id, task_id in rows}


def _keep_log(path: Path, output: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(output)


async def run_burst(config: BurstConfig, *, log_dir: Path | None = None) -> BurstResult:
    """Start fresh fakes and a fresh bot, fire the burst, wait for every task's end and measure."""
    result = BurstResult(config)
    # The fake enforces a window; a wide one lets a late acknowledgement through so the tail is measured,
    # and misses are counted against Discord's 3 s below.
    # The spec check costs the fake ~0.4 ms a request on the machine it shares with the bot: the tests
    # hold the bot to the spec; the benchmark measures it.
    fake = BenchDiscord(ack_window=60.0, validate_requests=False)
    freepik = TimedFreepik(
        workload=config.workload,
        seed=config.size + (1000 if config.warmup else 0),
        ticker_interval=0.01,
        limits=FREEPIK_LIMITS if config.limits else (),
    )
    await fake.start()
    await freepik.start()
    bot: BotProcess | None = None
    try:
        with tempfile.TemporaryDirectory(prefix="bench-bot-") as folder:
            workdir = Path(folder)
            options = BotOptions(
                webhooks=config.webhooks,
                edit_coalesce=config.edit_coalesce,
                profile_out=config.profile_out,
                database=config.database,
                floor=config.workload if config.mode == "floor" else None,
            )
            bot = await BotProcess.start(fake, freepik, workdir, options)
            await _measure(config, result, fake, freepik, bot, options.database or workdir / "bot.sqlite3")
            code = await bot.stop()
            if code not in (0, None):
                result.problems.append(f"the bot exited with {code}")
            if log_dir is not None:
                _keep_log(
                    log_dir / f"bot-{config.mode}-{config.workload.name}-{config.size}.log", bot.output()
                )
            bot = None
    finally:
        if bot is not None:
            await bot.stop()
        await freepik.close()
        await fake.close()
        fake.uninstall()
    return result


async def _measure(
    config: BurstConfig,
    result: BurstResult,
    fake: FakeDiscord,
    freepik: TimedFreepik,
    bot: BotProcess,
    database: Path,
) -> None:
    size = config.size
    # Members and images new to the database, so that neither the describe cache nor a quota answers.
    indexes = range(config.first_member, config.first_member + size)
    users = [_FIRST_MEMBER + index for index in indexes]
    payloads: list[dict[str, Any]] = []
    for index, user_id in zip(indexes, users, strict=True):
        attachment = fake.add_attachment(member_png(index), "photo.png", "image/png")
        payloads.append(fake.slash("describe", attachments={"image": attachment}, user_id=user_id))
    tokens = {str(payload["token"]) for payload in payloads}
    user_of = {str(payload["token"]): user for payload, user in zip(payloads, users, strict=True)}
    await asyncio.sleep(0.5)  # let the start-up's last writes settle before the clock starts
    scanner = _CallScanner(fake, len(fake.calls), tokens)
    provider_start = len(freepik.requests)
    cpu_before = cpu_seconds(bot.pid)
    load_before = self_cpu_seconds()
    result.rss_before_mib = memory_mib(bot.pid)[0]
    if config.profile_out is not None:
        bot.signal(signal.SIGUSR1)

    async def fire(payload: dict[str, Any]) -> tuple[str, float, float]:
        fired = time.monotonic()
        await fake.send_interaction(payload)
        return str(payload["token"]), fired, time.monotonic()

    started = time.monotonic()
    sent = await asyncio.gather(*(fire(payload) for payload in payloads))
    # Bounded: the slowest task ends after the workload's longest time, plus the bot's longest wait
    # between polls, plus slack for the burst itself and for creates paced by the rate limits.
    deadline = started + config.workload.longest + 2 * 10.0 + 30.0 + size * 0.05 + size / 50
    while time.monotonic() < deadline:
        scanner.scan()
        if len(scanner.final) == size:
            break
        if bot.process.returncode is not None:
            result.problems.append(f"the bot process exited early:\n{bot.output()}")
            break
        await asyncio.sleep(0.05)
    result.wall_seconds = time.monotonic() - started
    await asyncio.sleep(0.5)  # the bot closes each job after its final edit: count that too
    scanner.scan()
    if config.profile_out is not None:
        bot.signal(signal.SIGUSR2)
        await asyncio.sleep(1.0)
    result.cpu_seconds = cpu_seconds(bot.pid) - cpu_before
    result.load_cpu_seconds = self_cpu_seconds() - load_before
    result.peak_rss_mib = memory_mib(bot.pid)[1]

    for token, fired, frame_sent in sent:
        ack = scanner.ack.get(token)
        if ack is None or ack.status >= 300:
            result.ack_missed += 1
            continue
        result.ack_latencies.append(ack.at - frame_sent)
        if ack.at - fired > ACK_WINDOW:
            result.ack_missed += 1
    result.finished = len(scanner.final)
    result.failed = len(scanner.final_failed)
    if result.finished < size:
        result.problems.append(f"{size - result.finished} of {size} tasks showed no end before the deadline")
    result.discord_calls = [scanner.per_token[token] for token in sorted(tokens)]
    result.channel_calls = scanner.channel
    result.cdn_reads = scanner.cdn
    result.other_calls = scanner.other

    if config.mode == "floor":
        return
    requests = freepik.requests[provider_start:]
    since = requests[0].at - 1e-6 if requests else time.monotonic()
    result.refused = sum(1 for request in requests if request.status == 429)
    result.peak_burst = freepik.peak(BURST_WINDOW, since)
    result.peak_average = freepik.peak(AVERAGE_WINDOW, since)
    polls: Counter[str] = Counter()
    prefix = "/v1/ai/image-to-prompt/"
    for request in requests:
        if request.status == 429:
            continue  # refused: counted apart, and no target allows one
        if request.method == "POST" and request.path == "/v1/ai/image-to-prompt":
            result.creates += 1
        elif request.method == "GET" and request.path.startswith(prefix):
            polls[request.path[len(prefix) :]] += 1
    result.webhook_deliveries = len(freepik.deliveries)
    task_of = _task_ids_by_user(database)
    for token in sorted(tokens):
        task_id = task_of.get(user_of[token])
        if task_id is None:
            continue
        result.polls.append(polls[task_id])
        result.provider_requests.append(1 + polls[task_id])
        if task_id in freepik.tasks:
            result.task_seconds.append(freepik.duration_of(task_id))
        final = scanner.final.get(token)
        if final is not None and token not in scanner.final_failed and task_id in freepik.tasks:
            result.completion_delays.append(final.at - freepik.completed_at(task_id))
    if result.creates != size:
        result.problems.append(f"{result.creates} task creates for {size} commands")
    if result.refused:
        result.problems.append(f"the limiting fake answered {result.refused} requests 429")
