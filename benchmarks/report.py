"""Turn the measurements into markdown tables, the targets verdict, and docs/benchmarks.md."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.baseline import FixedPoller, at_same_cost, fixed_poller, percentile
from benchmarks.burst import AVERAGE_WINDOW, BURST_WINDOW, FLOOR, BurstResult
from benchmarks.machine import Machine
from benchmarks.quota import SHARED_LIMIT, QuotaResult
from tests.fakes.providers import FREEPIK_LIMITS

NOTES_START = "<!-- notes:start -->"
NOTES_END = "<!-- notes:end -->"
_MB = 1024 * 1024 / 1_000_000  # MiB -> MB
# The targets, each a ratio or a count from the same run.
TRADE_RATIO = 0.7  # completion delay p50 against the fixed poller that spends as many polls
ACK_RATIO = 1.2  # ack p99 against the floor bot's
CPU_RATIO = 1.5  # CPU per task against the floor bot's
ACK_WINDOW_SECONDS = 3.0
TRADE_BURST = 50  # the steady burst the trade is read at
BURST_LIMIT, AVERAGE_LIMIT = FREEPIK_LIMITS


@dataclass(frozen=True, slots=True)
class RunSettings:
    command: str
    bursts: tuple[int, ...]
    workloads: tuple[str, ...]  # one line each
    edit_coalesce: float
    limits: bool
    runtime: str  # the event loop and JSON library the bot ran with
    tail_burst: int  # the long-tail burst the trade is read at


@dataclass(frozen=True, slots=True)
class Results:
    machine: Machine
    settings: RunSettings
    bursts: list[BurstResult]  # warm-ups left out
    quotas: list[QuotaResult]
    seconds: float


@dataclass(frozen=True, slots=True)
class Trade:
    """The bot's polling beside fixed pollers on the same task times."""

    polls: float
    delay_p50: float
    every_2s: FixedPoller
    every_5s: FixedPoller
    same_cost: FixedPoller | None

    @property
    def ratio(self) -> float:
        return self.delay_p50 / self.same_cost.delay_p50 if self.same_cost else math.nan


def trade(burst: BurstResult) -> Trade:
    polls = sum(burst.polls) / len(burst.polls) if burst.polls else math.nan
    return Trade(
        polls,
        percentile(burst.completion_delays, 0.5),
        fixed_poller(burst.task_seconds, 2.0),
        fixed_poller(burst.task_seconds, 5.0),
        at_same_cost(burst.task_seconds, polls) if burst.task_seconds else None,
    )


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


def _ratio(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f}"


def _over(value: float, floor: float) -> float:
    """Return value / floor; NaN when the floor measured nothing (CPU ticks are 10 ms)."""
    return value / floor if floor > 0 else math.nan


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _cpu(burst: BurstResult) -> float:
    return burst.cpu_seconds / burst.config.size


def _ack_p99(burst: BurstResult) -> float:
    return percentile(burst.ack_latencies, 0.99)


def _floor_of(bursts: Sequence[BurstResult], size: int) -> BurstResult | None:
    return next((b for b in bursts if b.config.mode == "floor" and b.config.size == size), None)


def bot_table(bursts: Sequence[BurstResult]) -> str:
    rows = []
    for burst in bursts:
        acks = burst.ack_latencies
        size = burst.config.size
        floor = _floor_of(bursts, size)
        is_floor = burst.config.mode == "floor"
        rows.append(
            [
                str(size),
                burst.config.mode
                if burst.config.workload.name == "steady"
                else f"{burst.config.mode}, long tail",
                _ms(percentile(acks, 0.5)),
                _ms(percentile(acks, 0.95)),
                _ms(_ack_p99(burst)),
                _ms(max(acks) if acks else math.nan),
                "1" if is_floor else _ratio(_over(_ack_p99(burst), _ack_p99(floor))) if floor else "-",
                str(burst.ack_missed),
                _mean_max(burst.discord_calls),
                str(burst.channel_calls),
                f"{burst.cdn_reads / size:.2f}",
                f"{_cpu(burst) * 1000:.1f}",
                "1" if is_floor else _ratio(_over(_cpu(burst), _cpu(floor))) if floor else "-",
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
        "ack p99 / floor's",
        "missed 3 s",
        f"Discord calls/task mean (max); floor {FLOOR}",
        "channel calls",
        "CDN reads/task",
        "CPU ms/task",
        "CPU / floor's",
        "peak RSS MB",
        "done",
    ]
    return _table(header, rows)


def provider_table(bursts: Sequence[BurstResult]) -> str:
    rows = []
    for burst in bursts:
        if burst.config.mode == "floor":
            continue
        label = f"{burst.config.workload.name}, {burst.config.mode}"
        if burst.config.webhooks:
            rows.append(
                [
                    str(burst.config.size),
                    label,
                    _mean_max(burst.polls),
                    _delay(percentile(burst.completion_delays, 0.5)),
                    _delay(percentile(burst.completion_delays, 0.99)),
                    *["-"] * 5,
                ]
            )
            continue
        t = trade(burst)
        same = t.same_cost
        rows.append(
            [
                str(burst.config.size),
                label,
                _mean_max(burst.polls),
                _delay(t.delay_p50),
                _delay(percentile(burst.completion_delays, 0.99)),
                f"{t.every_2s.polls_per_task:.2f} / {_delay(t.every_2s.delay_p50)}",
                f"{t.every_5s.polls_per_task:.2f} / {_delay(t.every_5s.delay_p50)}",
                f"{same.interval:.2f} s / {_delay(same.delay_p50)}" if same else "-",
                _ratio(t.ratio),
                _ratio(t.polls / t.every_2s.polls_per_task),
            ]
        )
    header = [
        "burst",
        "workload, bot",
        "polls/task mean (max)",
        "completion delay p50",
        "p99",
        "fixed every 2 s: polls/task / p50",
        "fixed every 5 s: polls/task / p50",
        "fixed poller with the bot's polls/task: interval / p50",
        "p50 / that poller's",
        "polls / 2 s poller's",
    ]
    return _table(header, rows)


def limits_table(bursts: Sequence[BurstResult]) -> str:
    rows = []
    for burst in bursts:
        if burst.config.mode == "floor":
            continue
        rows.append(
            [
                str(burst.config.size),
                f"{burst.config.workload.name}, {burst.config.mode}",
                str(burst.creates),
                str(sum(burst.polls)),
                str(burst.refused),
                f"{burst.peak_burst / BURST_WINDOW:.1f}",
                f"{BURST_LIMIT.requests / BURST_LIMIT.seconds:g}",
                f"{burst.peak_average / AVERAGE_WINDOW:.2f}",
                f"{AVERAGE_LIMIT.requests / AVERAGE_LIMIT.seconds:g}",
            ]
        )
    header = [
        "burst",
        "workload, bot",
        "creates",
        "polls",
        "429s",
        f"peak {BURST_WINDOW:g} s rate, req/s",
        "limit",
        f"peak {AVERAGE_WINDOW / 60:g}-min average, req/s",
        "limit",
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


Verdict = tuple[str, bool | None, str]


def _measured_size(bursts: Sequence[BurstResult], wanted: int) -> int | None:
    """Return the burst size a target is read at: `wanted`, or the largest below it in this run."""
    sizes = sorted({b.config.size for b in bursts if b.config.size <= wanted})
    return sizes[-1] if sizes else None


def _trade_target(bursts: Sequence[BurstResult], workload: str, wanted: int) -> Verdict:
    name = f"a better trade than any fixed poller: {workload} workload"
    polling = [b for b in bursts if b.config.polling and b.config.workload.name == workload]
    size = _measured_size(polling, wanted)
    burst = next((b for b in polling if b.config.size == size), None)
    if burst is None:
        return name, None, f"no {workload} burst with polling in this run"
    t = trade(burst)
    if t.same_cost is None:
        return (
            name,
            False,
            f"at {size}: {t.polls:.2f} polls/task, outside the fixed pollers' curve (0.5-10 s)",
        )
    held = t.ratio <= TRADE_RATIO and t.polls <= t.every_2s.polls_per_task
    return (
        name,
        held,
        f"at {size}: p50 {t.ratio:.2f} x the fixed poller's with the same {t.polls:.2f} polls/task "
        f"(every {t.same_cost.interval:.2f} s: {_delay(t.delay_p50)} against {_delay(t.same_cost.delay_p50)}); "
        f"polls {t.polls / t.every_2s.polls_per_task:.2f} x the 2 s poller's ({t.every_2s.polls_per_task:.2f}); "
        f"peak {BURST_WINDOW:g} s rate {burst.peak_burst / BURST_WINDOW:.0f} req/s of "
        f"{BURST_LIMIT.requests / BURST_LIMIT.seconds:g}",
    )


def targets(results: Results) -> list[Verdict]:
    """Return (target, held (None: not measured in this run), the figure) for each target of issue 16."""
    bursts = results.bursts
    # The trade is read where Freepik's limits leave the schedule alone (50 tasks at once, and the
    # long-tail burst): above that the limits ration polls, which no fixed poller is held to here.
    verdicts = [
        _trade_target(bursts, "steady", TRADE_BURST),
        _trade_target(bursts, "long-tail", results.settings.tail_burst),
    ]

    largest = max((b.config.size for b in bursts if b.config.mode != "floor"), default=0)
    at_largest = [b for b in bursts if b.config.size == largest and b.config.mode != "floor"]
    name = f"inside Freepik's limits at any load (a burst of {largest})"
    if not results.settings.limits or not at_largest:
        verdicts.append((name, None, "the fake Freepik did not enforce the limits in this run"))
    else:
        refused = sum(b.refused for b in at_largest)
        done = min(b.finished - b.failed for b in at_largest)
        rate = max(b.peak_burst for b in at_largest) / BURST_WINDOW
        average = max(b.peak_average for b in at_largest) / AVERAGE_WINDOW
        verdicts.append(
            (
                name,
                refused == 0 and done == largest,
                f"{refused} 429s; {done}/{largest} finished; peak {BURST_WINDOW:g} s rate {rate:.1f} req/s "
                f"(limit {BURST_LIMIT.requests / BURST_LIMIT.seconds:g}), {AVERAGE_WINDOW / 60:g}-min average "
                f"{average:.2f} req/s (limit {AVERAGE_LIMIT.requests / AVERAGE_LIMIT.seconds:g})",
            )
        )

    steady = [b for b in bursts if b.config.workload.name == "steady"]
    size = _measured_size([b for b in steady if b.config.mode == "floor"], 200)
    floor = _floor_of(steady, size) if size is not None else None
    bots = [b for b in steady if b.config.size == size and b.config.mode != "floor"]
    if floor is None or not bots:
        verdicts.append(("acknowledgement close to the floor", None, "no floor bot in this run"))
        verdicts.append(("CPU close to the floor", None, "no floor bot in this run"))
    else:
        worst = max(bots, key=_ack_p99)
        ack = _over(_ack_p99(worst), _ack_p99(floor))
        verdicts.append(
            (
                f"acknowledgement close to the floor: ack p99 at {size} at most {ACK_RATIO:g} x the floor bot's",
                ack <= ACK_RATIO,
                f"{ack:.2f} x ({worst.config.mode} {_ms(_ack_p99(worst))} ms, floor {_ms(_ack_p99(floor))} ms)",
            )
        )
        hungriest = max(bots, key=_cpu)
        cpu = _over(_cpu(hungriest), _cpu(floor))
        verdicts.append(
            (
                f"CPU close to the floor: CPU per task at {size} at most {CPU_RATIO:g} x the floor bot's",
                cpu <= CPU_RATIO,
                f"{cpu:.2f} x ({hungriest.config.mode} {_cpu(hungriest) * 1000:.1f} ms, "
                f"floor {_cpu(floor) * 1000:.1f} ms)",
            )
        )

    real = [b for b in bursts if b.config.mode != "floor"]
    at_most = max((b.config.size for b in real), default=0)
    missed = sum(b.ack_missed for b in real if b.config.size == at_most)
    verdicts.append(
        (
            f"unchanged: no acknowledgement past 3 s at {at_most}",
            missed == 0 if real else None,
            f"{missed} missed",
        )
    )
    above = max((max(b.discord_calls, default=0) for b in real), default=0)
    channel = sum(b.channel_calls for b in real)
    verdicts.append(
        (
            f"unchanged: Discord calls per task at the floor ({FLOOR})",
            above <= FLOOR and channel == 0 if real else None,
            f"at most {above} per task; {channel} channel calls",
        )
    )
    hooked = [b for b in real if b.config.webhooks]
    polls = max((max(b.polls, default=0) for b in hooked), default=0)
    verdicts.append(
        (
            "unchanged: webhooks, 0 polls",
            polls == 0 if hooked else None,
            f"at most {polls} polls per task" if hooked else "no webhook burst in this run",
        )
    )
    return verdicts


def targets_table(results: Results) -> str:
    marks = {True: "holds", False: "**missed**", None: "not measured"}
    rows = [[name, marks[held], figure] for name, held, figure in targets(results)]
    return _table(["target", "verdict", "measured (same run)"], rows)


def tables(results: Results) -> str:
    settings = results.settings
    return "\n\n".join(
        [
            "### Targets\n\n" + targets_table(results),
            "### The bot process beside the floor bot: acknowledgement, Discord calls, cost\n\n"
            + bot_table(results.bursts),
            "### Polling beside fixed-interval pollers on the same task times\n\n"
            + provider_table(results.bursts),
            "### Requests as the limiting fake Freepik received them\n\n" + limits_table(results.bursts),
            "### Quota reservations under contention (one SQLite file)\n\n" + quota_table(results.quotas),
            f"_Workloads: {'; '.join(settings.workloads)}. EDIT_COALESCE_SECONDS={settings.edit_coalesce:g}; "
            f"the bot ran on {settings.runtime}; whole run {results.seconds:.0f} s._",
        ]
    )


_METHOD = """\
## How it is measured

- One fresh fake Discord (REST, CDN, gateway), one fresh fake Freepik and one fresh bot process per burst,
  all on 127.0.0.1. The bot is `python -m tests.fakes.bot_process run`: the real `python -m bot` entry
  point, with only discord.py's base URLs pointed at the fake. Settings as deployed except:
  `MAX_INFLIGHT_PER_USER`/`MAX_INFLIGHT_PER_PROVIDER` 1000, `QUOTA_DESCRIBE_PER_DAY` 100000,
  `LOG_LEVEL=WARNING`; polling at the defaults (`POLL_INTERVAL_SECONDS=2`, `POLL_MAX_INTERVAL_SECONDS=10`,
  Freepik's limits at their documented values); the webhook bot adds `WEBHOOK_PUBLIC_URL`/`WEBHOOK_SECRET`/
  `WEBHOOK_PORT` on 127.0.0.1.
- The bursts of one bot share its SQLite file (a restart between them, as in a deployment), so what polling
  learned is what the next burst starts with; the polling bot first runs a warm-up burst (not in the tables)
  to learn from. Members and their images never repeat, so neither the describe cache nor a quota answers.
- **The floor bot** (`benchmarks/floor_bot.py`) is a bare discord.py client with one `/describe` command: it
  acknowledges (`defer(thinking=True)`) and edits the reply three times as the states would come (created at
  once, in progress at half the task's time, done at its end), with no database, no provider and no image. It
  runs in the same run at every burst size: the bot's acknowledgement p99 and CPU per task are divided by its.
- **Workloads.** Steady: each task goes CREATED, then IN_PROGRESS, then COMPLETED, each state lasting the set
  time ±25%, drawn per task from a seeded generator. Long tail: the whole task is log-normal (median and p95 as
  stated), drawn again past the cut, IN_PROGRESS at half. The fakes listen with a backlog of 4096: aiohttp's 128
  overflows when 500 connections open at once, and each dropped SYN costs the client a 1 s retransmit.
- **Freepik's limits.** The fake Freepik answers 429 to any request that would make more than 250 requests
  arrive within 5 s, or 1,200 within 2 minutes (50/s and 10/s, Freepik's documented limits; every API request
  counts, refused ones too). The peak rates are the most requests the fake received within any 5 s (and
  2 min) window of the burst, divided by the window.
- **Acknowledgement latency**: from the moment the fake wrote the INTERACTION_CREATE frame to the moment the
  bot's callback reached it. **Missed 3 s** counts callbacks later than 3 s after the interaction was created
  (or none at all); the fake's own window is widened to 60 s so a late one is still measured.
- **Completion delay**: from the moment the task is COMPLETED at the provider to the final edit reaching
  Discord (the bot's own work and the edit included). The fake's webhook ticker looks every 10 ms.
- **The fixed-interval pollers** are computed, not run, on the very tasks of the same burst: a task of T
  seconds polled every I seconds costs ceil(T / I) polls and is seen ceil(T / I) x I - T seconds after its end.
  The curve over I = 0.5 to 10 s (steps of 0.05 s) gives the poller that spends as many polls per task as the
  bot (interpolated), and its completion delay p50 is the one the bot's is divided by. That poller waits for
  no rate limit and no edit, so the comparison is read at bursts where the limits do not bind.
- **Discord calls per task**: the callback plus every webhook (edit) call made with that interaction's token;
  the floor is the acknowledgement plus one edit per state (created, in progress, done). With polling a task
  may pass a state between two polls, so fewer calls than the floor is possible. Channel calls (the bot's own
  token) are counted apart, and so are CDN reads (the attachment download, not a REST call).
- **CPU** is the bot process's user+system time (`/proc/<pid>/stat`, all threads) from just before the burst
  to 0.5 s after the last final edit, divided by N; it includes the image checks, re-encoding and the
  thumbnail of each result. **Peak RSS** is `VmHWM` of the bot process after the burst.
- **Quota reservations**: `SqliteQuotaLedger.reserve` on one SQLite file opened as the bot opens it, every
  member's reservations fired at once in one process, then split over two processes on the same file; both
  processes also race for the last units of one member with a limit of 25, where exactly 25 must be granted.
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
