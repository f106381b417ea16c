"""Turn the measurements into markdown tables, the targets verdict, and docs/benchmarks.md."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.baseline import PollerResult
from benchmarks.burst import FLOOR, BurstResult
from benchmarks.machine import Machine
from benchmarks.quota import SHARED_LIMIT, QuotaResult

NOTES_START = "<!-- notes:start -->"
NOTES_END = "<!-- notes:end -->"
_MB = 1024 * 1024 / 1_000_000  # MiB -> MB: the targets are in MB


@dataclass(frozen=True, slots=True)
class RunSettings:
    command: str
    bursts: tuple[int, ...]
    seconds_per_state: float
    jitter: float
    edit_coalesce: float
    intervals: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class Results:
    machine: Machine
    settings: RunSettings
    bursts: list[BurstResult]
    pollers: list[PollerResult]
    quotas: list[QuotaResult]
    seconds: float


def percentile(values: Sequence[float], fraction: float) -> float:
    """Return the value below which `fraction` of the values lie (linear between ranks); NaN if none."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * fraction
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _ms(seconds: float) -> str:
    if math.isnan(seconds):
        return "-"
    return f"{seconds * 1000:.0f}" if seconds >= 0.0995 else f"{seconds * 1000:.1f}"


def _delay(seconds: float) -> str:
    if math.isnan(seconds):
        return "-"
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _mean_max(values: Sequence[float]) -> str:
    if not values:
        return "-"
    mean = sum(values) / len(values)
    return f"{mean:.2f} ({max(values):g})"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def bot_table(bursts: Sequence[BurstResult]) -> str:
    rows = []
    for burst in bursts:
        acks = burst.ack_latencies
        size = burst.config.size
        rows.append(
            [
                str(size),
                burst.config.mode,
                _ms(percentile(acks, 0.5)),
                _ms(percentile(acks, 0.95)),
                _ms(percentile(acks, 0.99)),
                _ms(max(acks) if acks else math.nan),
                str(burst.ack_missed),
                _mean_max(burst.discord_calls),
                str(FLOOR),
                str(burst.channel_calls),
                f"{burst.cdn_reads / size:.2f}",
                f"{burst.cpu_seconds * 1000 / size:.1f}",
                f"{burst.peak_rss_mib * _MB:.0f}",
                f"{burst.finished - burst.failed}/{size}",
            ]
        )
    header = [
        "burst",
        "bot",
        "ack p50 ms",
        "ack p95 ms",
        "ack p99 ms",
        "ack max ms",
        "missed 3 s",
        "Discord calls/task mean (max)",
        "floor",
        "channel calls",
        "CDN reads/task",
        "bot CPU ms/task",
        "bot peak RSS MB",
        "done",
    ]
    return _table(header, rows)


def provider_table(bursts: Sequence[BurstResult], pollers: Sequence[PollerResult]) -> str:
    rows = []
    sizes = sorted({burst.config.size for burst in bursts} | {poller.size for poller in pollers})
    for size in sizes:
        for burst in (b for b in bursts if b.config.size == size):
            label = (
                "this bot, webhooks (safety poll 30 s)"
                if burst.config.webhooks
                else "this bot, polling (2 s, x1.5, max 10 s)"
            )
            rows.append(
                [
                    str(size),
                    label,
                    _mean_max(burst.provider_requests),
                    _mean_max(burst.polls),
                    _delay(percentile(burst.completion_delays, 0.5)),
                    _delay(percentile(burst.completion_delays, 0.99)),
                ]
            )
        for poller in (p for p in pollers if p.size == size):
            polls = [requests - 1 for requests in poller.provider_requests]
            rows.append(
                [
                    str(size),
                    f"fixed poller, every {poller.interval:g} s",
                    _mean_max(poller.provider_requests),
                    _mean_max(polls),
                    _delay(percentile(poller.completion_delays, 0.5)),
                    _delay(percentile(poller.completion_delays, 0.99)),
                ]
            )
    header = [
        "burst",
        "approach",
        "provider requests/task mean (max)",
        "of which polls",
        "completion delay p50",
        "completion delay p99",
    ]
    return _table(header, rows)


def quota_table(quotas: Sequence[QuotaResult]) -> str:
    rows = [
        [
            str(quota.processes),
            str(quota.reservations),
            f"{quota.seconds:.2f}",
            f"{quota.per_second:.0f}",
            str(quota.errors),
            f"{quota.shared_granted} of {SHARED_LIMIT}",
        ]
        for quota in quotas
    ]
    header = [
        "processes on one file",
        "reservations",
        "seconds",
        "reservations/s",
        "errors",
        f"one member raced by all, limit {SHARED_LIMIT}: granted",
    ]
    return _table(header, rows)


def _at(bursts: Sequence[BurstResult], size: int) -> list[BurstResult]:
    return [burst for burst in bursts if burst.config.size == size]


def targets(results: Results) -> list[tuple[str, bool | None, str]]:
    """Return (target, held (None: not measured in this run), the figure) for each target of issue 8."""
    bursts = results.bursts
    verdicts: list[tuple[str, bool | None, str]] = []
    at200 = _at(bursts, 200)
    if at200:
        worst = max(percentile(b.ack_latencies, 0.99) for b in at200)
        verdicts.append(("acknowledgement p99 under 100 ms at 200", worst < 0.1, f"{_ms(worst)} ms"))
    else:
        verdicts.append(("acknowledgement p99 under 100 ms at 200", None, "no burst of 200 in this run"))
    missed = sum(b.ack_missed for b in bursts)
    largest = max((b.config.size for b in bursts), default=0)
    verdicts.append(
        (f"no acknowledgement past 3 s (bursts up to {largest})", missed == 0, f"{missed} missed")
    )
    above = max((max(b.discord_calls, default=0) for b in bursts), default=0)
    webhook_means = [sum(b.discord_calls) / len(b.discord_calls) for b in bursts if b.config.webhooks]
    verdicts.append(
        (
            f"Discord calls per task equal to the floor ({FLOOR})",
            above <= FLOOR and all(b.channel_calls == 0 for b in bursts),
            f"at most {above} per task; with webhooks {min(webhook_means, default=math.nan):.2f}"
            f"-{max(webhook_means, default=math.nan):.2f} on average",
        )
    )
    hooked = [b for b in bursts if b.config.webhooks]
    if hooked:
        polls = max(max(b.polls, default=0) for b in hooked)
        p50 = max(percentile(b.completion_delays, 0.5) for b in hooked)
        verdicts.append(
            (
                "with webhooks: at most one poll per task, completion p50 under 100 ms",
                polls <= 1 and p50 < 0.1,
                f"at most {polls} polls; p50 {_delay(p50)} at worst",
            )
        )
    loaded = [b for b in bursts if b.config.size >= 50] or list(bursts)
    smallest = min((b.config.size for b in loaded), default=0)
    cpu = max((b.cpu_seconds / b.config.size for b in loaded), default=math.nan)
    verdicts.append(
        (
            "bot CPU under 5 ms per task",
            cpu < 0.005,
            f"{cpu * 1000:.1f} ms at worst (bursts of {smallest} and up)",
        )
    )
    at500 = _at(bursts, 500)
    if at500:
        peak = max(b.peak_rss_mib * _MB for b in at500)
        verdicts.append(("peak RSS under 200 MB with 500 tasks in flight", peak < 200, f"{peak:.0f} MB"))
    else:
        verdicts.append(("peak RSS under 200 MB with 500 tasks in flight", None, "no burst of 500"))
    return verdicts


def targets_table(results: Results) -> str:
    marks = {True: "holds", False: "**missed**", None: "not measured"}
    rows = [[name, marks[held], figure] for name, held, figure in targets(results)]
    return _table(["target", "verdict", "measured"], rows)


def tables(results: Results) -> str:
    settings = results.settings
    return "\n\n".join(
        [
            "### The bot process: acknowledgement, Discord calls, cost\n\n" + bot_table(results.bursts),
            "### Provider requests and completion delay, beside fixed-interval pollers\n\n"
            + provider_table(results.bursts, results.pollers),
            "### Quota reservations under contention (one SQLite file)\n\n" + quota_table(results.quotas),
            "### Targets\n\n" + targets_table(results),
            f"_Tasks: {settings.seconds_per_state:g} s per state ±{settings.jitter:.0%}; "
            f"EDIT_COALESCE_SECONDS={settings.edit_coalesce:g}; whole run {results.seconds:.0f} s._",
        ]
    )


_METHOD = """\
## How it is measured

- One fresh fake Discord (REST, CDN, gateway), one fresh fake Freepik and one fresh bot process per burst and
  mode, all on 127.0.0.1. The bot is `python -m tests.fakes.bot_process run`: the real `python -m bot` entry
  point, with only discord.py's base URLs pointed at the fake. Settings as deployed except: a fresh SQLite
  file, `MAX_INFLIGHT_PER_USER`/`MAX_INFLIGHT_PER_PROVIDER` 1000, `QUOTA_DESCRIBE_PER_DAY` 100000,
  `LOG_LEVEL=WARNING`; polling at the defaults (`POLL_INTERVAL_SECONDS=2`, `POLL_MAX_INTERVAL_SECONDS=10`);
  the webhook run adds `WEBHOOK_PUBLIC_URL`/`WEBHOOK_SECRET`/`WEBHOOK_PORT` on 127.0.0.1.
- Provider tasks go CREATED, then IN_PROGRESS, then COMPLETED, each state lasting the set time (3 s) ±25%,
  drawn per task from a seeded generator (`--jitter 0` makes every task exactly the set time), so that no
  poller gains or loses by its phase. The fakes listen with a backlog of 4096: aiohttp's 128 overflows when
  500 connections open at once, and each dropped SYN costs the client a 1 s retransmit.
- A burst is N `/describe` interactions, one per distinct member, each with its own small PNG (one pixel
  differs, so the describe cache never answers), sent at once over the gateway.
- **Acknowledgement latency**: from the moment the fake wrote the INTERACTION_CREATE frame to the moment the
  bot's callback reached it. **Missed 3 s** counts callbacks later than 3 s after the interaction was created
  (or none at all); the fake's own window is widened to 60 s so a late one is still measured.
- **Completion delay**: from the moment the task is COMPLETED at the provider to the final edit reaching
  Discord. The fake's webhook ticker looks every 10 ms, which is included.
- **Discord calls per task**: the callback plus every webhook (edit) call made with that interaction's token;
  the floor is the acknowledgement plus one edit per state (created, in progress, done). With polling a task
  may pass a state between two polls, so fewer calls than the floor is possible. Channel calls (the bot's own
  token) are counted apart, and so are CDN reads (the attachment download, not a REST call).
- **Provider requests per task**: the create plus the task-status polls, as the fake received them. The fixed
  pollers run in the benchmark process against their own fake Freepik: create at once, then poll every 2 s
  (or 5 s) until the end, as other bots of this kind do.
- **CPU** is the bot process's user+system time (`/proc/<pid>/stat`, all threads) from just before the burst
  to 0.5 s after the last final edit, divided by N; it includes the image checks, re-encoding and the
  thumbnail of each result. **Peak RSS** is `VmHWM` of the bot process after the burst.
- **Quota reservations**: `SqliteQuotaLedger.reserve` on one SQLite file opened as the bot opens it, every member's
  reservations fired at once in one process, then split over two processes on the same file; both processes
  also race for the last units of one member with a limit of 25, where exactly 25 must be granted.
"""


def document(results: Results, notes: str) -> str:
    machine = results.machine
    return "\n".join(
        [
            "# Benchmarks: what the bot costs",
            "",
            "Generated by `python -m benchmarks.run` (see the README); the tables below are its output. "
            "The part between the notes markers is written by hand and kept when the file is regenerated.",
            "",
            f"- Date: {machine.date}",
            f"- Machine: {machine.line()}",
            f"- Command: `{results.settings.command}`",
            "",
            "## Results",
            "",
            tables(results),
            "",
            "## Notes",
            "",
            NOTES_START,
            notes.strip("\n"),
            NOTES_END,
            "",
            _METHOD,
        ]
    )


def kept_notes(path: Path) -> str:
    """Return the hand-written notes of an existing document, or a placeholder."""
    try:
        existing = path.read_text(encoding="utf-8")
    except OSError:
        return "(none yet)"
    start = existing.find(NOTES_START)
    end = existing.find(NOTES_END)
    if start < 0 or end < start:
        return "(none yet)"
    return existing[start + len(NOTES_START) : end]
