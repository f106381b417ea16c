"""The core's ports kept in memory: jobs, the quota ledger, a recording reporter and scriptable providers.

The core (`bot.core`) sees storage, the place a job is shown and the providers only through
`bot.domain.ports`; these implementations let the unit tests run the real `JobRunner`, `TaskService` and
`DiscordReporter` without SQLite, HTTP or wall-clock waits:

- `MemoryJobRepository` and `MemoryQuotaLedger` keep what `bot.store.sqlite` keeps, in dicts, with the
  semantics the runner and the service rely on (a write changes only the fields it names, settle-once,
  limits per kind, in-flight caps). Nothing they store is shared with a caller: jobs go in and come out
  as copies.
- `RecordingReporter` records every job it is shown, in order, and lets a test await a state.
- `FakeDescriber`, `FakeImaginer`, `FakePoller`, `FakeWebhookReader` and `FakeKeyChecker` answer from a
  `Script` a test writes (snapshots, errors, a hold), and `make_provider` assembles them into a `Provider`.
- `Journal` is one ordered record of what was saved and what was reported, shared by the repository and
  the reporter, so a test can assert that every state is saved before it is shown.
- `Clock` is a settable clock for every `clock=` and `monotonic=` the code takes.

Every wait here waits on an event (something changed) with a timeout as an upper bound only.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from bot.domain.blocklist import phrase_key
from bot.domain.errors import BadInput, LineFull, ProviderError, QuotaExceeded, Refusal
from bot.domain.line import take_order
from bot.domain.ports import ImageRole, Provider, WebhookDelivery
from bot.domain.privacy import FORGOTTEN, pseudonym
from bot.domain.quota import (
    USAGE_COLUMNS,
    KindStatus,
    LimitScope,
    Member,
    Reservation,
    UsageLine,
    UsageReport,
    check_limit,
    kind_status,
    resolve_limit,
    utc_day,
)
from bot.domain.rules import ChannelRule
from bot.domain.tasks import (
    DescribeRequest,
    Fault,
    ImageBytes,
    ImageLimits,
    Job,
    JobState,
    ProviderStatus,
    Route,
    Suggestion,
    TaskKind,
    TaskSnapshot,
)

# A moment well inside a UTC day, so that a test advancing the clock by minutes stays on the same day.
T0 = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
DEFAULT_TIMEOUT = 5.0


class Clock:
    """A clock a test sets: pass it as `clock=` (or `monotonic=`) and move it with `advance`."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Changes:
    """Wake every waiter when something changed, so it checks its condition again."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait_until(
        self, predicate: Callable[[], bool], what: str, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        """Return once `predicate()` holds; fail naming `what` if it does not within `timeout` (a bound)."""
        try:
            async with asyncio.timeout(timeout):
                while not predicate():
                    await self._event.wait()
        except TimeoutError:
            raise AssertionError(f"timed out waiting for {what}") from None


@dataclass(frozen=True, slots=True)
class Entry:
    """One thing that happened to a job: `saved` a state, `reported` a state, `finished`, or a new `route`."""

    what: str
    job_id: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.what} {self.detail}".rstrip()


class Journal:
    """The ordered record the repository and the reporter share."""

    def __init__(self) -> None:
        self.entries: list[Entry] = []

    def add(self, what: str, job_id: str, detail: str = "") -> None:
        self.entries.append(Entry(what, job_id, detail))

    def of(self, job_id: str, *whats: str) -> list[str]:
        """Return one job's entries as text ("saved CREATED", "reported CREATED", ...), optionally filtered."""
        return [str(e) for e in self.entries if e.job_id == job_id and (not whats or e.what in whats)]


# --- jobs ----------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _WriteFault:
    method: str
    error: BaseException
    when: Callable[[Mapping[str, Any]], bool]
    times: int | None  # None: every matching write


class MemoryJobRepository:
    """`JobRepository` in dicts, with the SQLite repository's semantics.

    A write changes only the fields it names (the stored route stays what `save_route` made it, whatever
    route the caller's job carries), `update` stamps `updated_at` and returns the caller's job with the
    changes, and writes to an unknown job change nothing. Jobs are copied in and out.
    """

    def __init__(self, *, clock: Callable[[], float] = time.time, journal: Journal | None = None) -> None:
        self._clock = clock
        self.journal = journal if journal is not None else Journal()
        self._jobs: dict[str, Job] = {}
        self._images: dict[tuple[str, ImageRole], tuple[ImageBytes, ...]] = {}
        self._cache: dict[tuple[str, str, str], tuple[tuple[Suggestion, ...], float]] = {}
        self._faults: list[_WriteFault] = []
        self.changes = Changes()
        # Every write, in order: (method, job id, the fields it named).
        self.writes: list[tuple[str, str, tuple[str, ...]]] = []

    # --- the port ---------------------------------------------------------------------------------

    async def create(self, job: Job, inputs: Sequence[ImageBytes] = ()) -> None:
        self._maybe_fail("create", {"state": job.state})
        if job.id in self._jobs:
            raise ValueError(f"job {job.id} exists already")
        self._jobs[job.id] = copy.deepcopy(job)
        self._images[(job.id, "input")] = tuple(inputs)
        self._wrote("create", job.id, ("*",), state=job.state)

    async def update(self, job: Job, **changes: Any) -> Job:
        updated = self._apply("update", job, changes)
        self._wrote("update", job.id, tuple(changes), state=changes.get("state"))
        return updated

    async def save_outputs(self, job: Job, images: Sequence[ImageBytes], **changes: Any) -> Job:
        updated = self._apply("save_outputs", job, changes)
        if job.id in self._jobs:
            self._images[(job.id, "output")] = self._images.get((job.id, "output"), ()) + tuple(images)
        self._wrote("save_outputs", job.id, tuple(changes), state=changes.get("state"))
        return updated

    async def finish(self, job: Job) -> Job:
        self._maybe_fail("finish", {})
        now = self._clock()
        stored = self._jobs.get(job.id)
        if stored is not None:
            route = replace(stored.route, interaction_token=None)
            self._jobs[job.id] = replace(stored, finished_at=now, updated_at=now, route=route)
        self.journal.add("finished", job.id)
        self._wrote("finish", job.id, ("finished_at", "updated_at", "interaction_token"))
        return replace(job, finished_at=now, updated_at=now, route=replace(job.route, interaction_token=None))

    async def save_route(self, job_id: str, route: Route) -> None:
        self._maybe_fail("save_route", {"route": route})
        stored = self._jobs.get(job_id)
        if stored is not None:
            self._jobs[job_id] = replace(stored, route=route, updated_at=self._clock())
        self.journal.add("route", job_id, f"{route.via} {route.message_id}")
        self._wrote("save_route", job_id, ("route",))

    async def get(self, job_id: str) -> Job | None:
        stored = self._jobs.get(job_id)
        return copy.deepcopy(stored) if stored is not None else None

    async def find_by_task(self, provider: str, task_id: str) -> Job | None:
        for job in self._jobs.values():
            if job.provider == provider and job.provider_task_id == task_id:
                return copy.deepcopy(job)
        return None

    async def unfinished(self) -> list[Job]:
        waiting = [job for job in self._jobs.values() if job.finished_at is None]
        return [copy.deepcopy(job) for job in sorted(waiting, key=lambda job: job.created_at)]

    async def next_in_line(
        self, provider: str, *, max_running: int, max_running_per_member: int
    ) -> Job | None:
        running = [job for job in self._jobs.values() if _running(job)]
        if sum(1 for job in running if job.provider == provider) >= max_running:
            return None
        per_member = Counter(job.user_id for job in running)
        for job in take_order(*self._line_of(provider)):
            if per_member[job.user_id] < max_running_per_member:
                now = self._clock()
                self._jobs[job.id] = replace(self._jobs[job.id], dispatched_at=now, updated_at=now)
                self._wrote("next_in_line", job.id, ("dispatched_at",))
                return copy.deepcopy(self._jobs[job.id])
        return None

    async def line(self, provider: str) -> list[Job]:
        order = take_order(*self._line_of(provider))
        return [replace(copy.deepcopy(job), place=place) for place, job in enumerate(order, start=1)]

    async def cancel_waiting(self, job_id: str) -> Job | None:
        job = self._jobs.get(job_id)
        if job is None or not _waiting(job):
            return None
        self._jobs[job_id] = replace(job, state=JobState.CANCELLED, updated_at=self._clock())
        self._wrote("cancel_waiting", job_id, ("state",), state=JobState.CANCELLED)
        return copy.deepcopy(self._jobs[job_id])

    async def tasks_of(self, user_id: int, guild_id: int | None = None) -> tuple[int, int]:
        mine = [
            job for job in self._jobs.values() if job.user_id == user_id and guild_id in (None, job.guild_id)
        ]
        return sum(1 for job in mine if _running(job)), sum(1 for job in mine if _waiting(job))

    async def forget_member(self, guild_id: int, user_id: int) -> tuple[int, int, int]:
        mine = [job for job in self._jobs.values() if (job.guild_id, job.user_id) == (guild_id, user_id)]
        unfinished = sum(1 for job in mine if job.finished_at is None)
        if unfinished:
            raise BadInput(Refusal.FORGET_WHILE_RUNNING, count=unfinished)
        hashes = {job.input_hash for job in mine if job.kind is TaskKind.DESCRIBE and job.input_hash}
        prompts = [key for key in self._cache if key[0] in hashes]
        for key in prompts:
            del self._cache[key]
        images = 0
        for job in mine:
            del self._jobs[job.id]
            for role in ("input", "output"):
                images += len(self._images.pop((job.id, role), ()))
        return len(mine), images, len(prompts)

    # One process on its own store, as SQLite: it drives every job and never loses one.

    @property
    def shared(self) -> bool:
        return False

    async def claim(self, limit: int) -> list[Job]:
        return await self.unfinished()

    async def renew(self) -> set[str]:
        return {job.id for job in self._jobs.values() if job.finished_at is None}

    async def next_expiry(self) -> float | None:
        return None

    async def release(self) -> None:
        """Nothing to give back."""

    async def request_cancel(self, job_id: str) -> bool:
        return False

    async def cancel_requested(self) -> set[str]:
        return set()

    def _line_of(self, provider: str) -> tuple[list[Job], dict[int, float]]:
        waiting = [job for job in self._jobs.values() if job.provider == provider and _waiting(job)]
        served: dict[int, float] = {}
        for job in self._jobs.values():
            if job.provider == provider and job.dispatched_at is not None:
                served[job.user_id] = max(served.get(job.user_id, job.dispatched_at), job.dispatched_at)
        return waiting, served

    async def images(self, job_id: str, role: ImageRole) -> list[ImageBytes]:
        return list(self._images.get((job_id, role), ()))

    async def cached_suggestions(
        self, image_hash: str, provider: str, variant: str, max_age_days: int
    ) -> tuple[Suggestion, ...] | None:
        if max_age_days <= 0:
            return None
        cached = self._cache.get((image_hash, provider, variant))
        if cached is None or cached[1] <= self._clock() - max_age_days * 86400:
            return None
        return cached[0]

    async def cache_suggestions(
        self, image_hash: str, provider: str, variant: str, suggestions: tuple[Suggestion, ...]
    ) -> None:
        self._maybe_fail("cache_suggestions", {})
        self._cache[(image_hash, provider, variant)] = (suggestions, self._clock())
        self.changes.notify()

    async def prune(self, retention_days: int) -> int:
        cutoff = self._clock() - retention_days * 86400
        gone = [
            job_id
            for job_id, job in self._jobs.items()
            if job.finished_at is not None and job.finished_at < cutoff
        ]
        for job_id in gone:
            del self._jobs[job_id]
            for role in ("input", "output"):
                self._images.pop((job_id, role), None)
        for key in [key for key, (_, at) in self._cache.items() if at < cutoff]:
            del self._cache[key]
        return len(gone)

    # --- for tests ----------------------------------------------------------------------------------

    def saved(self, job_id: str) -> Job:
        """Return the job as saved now (a copy); KeyError when there is none."""
        return copy.deepcopy(self._jobs[job_id])

    def all(self) -> list[Job]:
        return [copy.deepcopy(job) for job in self._jobs.values()]

    def usage_ids(self, *, unfinished_only: bool = False) -> set[int]:
        """The reservations jobs point at (as the `jobs.usage_id` column does for the SQLite ledger)."""
        return {
            job.usage_id
            for job in self._jobs.values()
            if job.usage_id is not None and (job.finished_at is None or not unfinished_only)
        }

    def fail(
        self,
        method: str,
        error: BaseException,
        *,
        when: Callable[[Mapping[str, Any]], bool] = lambda changes: True,
        times: int | None = 1,
    ) -> None:
        """Make the next `times` calls of a write `method` whose changes match `when` raise `error`."""
        self._faults.append(_WriteFault(method, error, when, times))

    async def wait_until(
        self, predicate: Callable[[], bool], what: str, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        await self.changes.wait_until(predicate, what, timeout)

    async def wait_finished(self, job_id: str, timeout: float = DEFAULT_TIMEOUT) -> Job:
        """Wait until the job's end was reported and the job closed; return it as saved."""
        await self.wait_until(
            lambda: job_id in self._jobs and self._jobs[job_id].finished_at is not None,
            f"job {job_id[:8]} to finish",
            timeout,
        )
        return self.saved(job_id)

    # --- inside ---------------------------------------------------------------------------------------

    def _maybe_fail(self, method: str, changes: Mapping[str, Any]) -> None:
        for fault in self._faults:
            if fault.method == method and fault.when(changes):
                if fault.times is not None:
                    fault.times -= 1
                    if fault.times == 0:
                        self._faults.remove(fault)
                raise fault.error.with_traceback(None)

    def _apply(self, method: str, job: Job, changes: dict[str, Any]) -> Job:
        if "route" in changes:
            raise ValueError("a job's route is saved with save_route")
        self._maybe_fail(method, changes)
        changes["updated_at"] = self._clock()
        updated = replace(job, **changes)  # as the SQLite repository: unknown fields fail here
        stored = self._jobs.get(job.id)
        if stored is not None:
            self._jobs[job.id] = replace(stored, **copy.deepcopy(changes))
        return updated

    def _wrote(
        self, method: str, job_id: str, names: tuple[str, ...], *, state: JobState | None = None
    ) -> None:
        if state is not None:
            self.journal.add("saved", job_id, state.value)
        self.writes.append((method, job_id, names))
        self.changes.notify()


# --- quotas --------------------------------------------------------------------------------------------


class SharedMemoryJobRepository(MemoryJobRepository):
    """The memory repository as a store several processes share: nothing to claim (every job here is the
    driving runner's), and a member's request to cancel a job kept for its driver's next renewal."""

    def __init__(self, *, clock: Callable[[], float] = time.time, journal: Journal | None = None) -> None:
        super().__init__(clock=clock, journal=journal)
        self.cancel_requests: set[str] = set()

    @property
    def shared(self) -> bool:
        return True

    async def claim(self, limit: int) -> list[Job]:
        return []

    async def request_cancel(self, job_id: str) -> bool:
        job = self._jobs.get(job_id)
        if job is None or not _running(job):
            return False
        self.cancel_requests.add(job_id)
        self.changes.notify()
        return True

    async def cancel_requested(self) -> set[str]:
        return {job_id for job_id in self.cancel_requests if self._jobs[job_id].finished_at is None}


def _waiting(job: Job) -> bool:
    return job.finished_at is None and job.dispatched_at is None and job.state is JobState.QUEUED


def _running(job: Job) -> bool:
    return job.finished_at is None and job.dispatched_at is not None and not job.state.finished


@dataclass(slots=True)
class UsageRow:
    """One row of the usage log, as the SQLite ledger's `usage` table holds it."""

    id: int
    guild_id: int
    user_id: int
    kind: TaskKind
    provider: str
    state: str  # reserved, committed, refunded or cached
    day: str
    started_at: float
    provider_task_id: str | None = None
    outcome: str | None = None
    forgiven: bool = False
    ended_at: float | None = None


# The memory ledger's key for forgotten members' stand-in ids (the SQLite ledger keeps one per database).
_SECRET = b"memory-ledger"


class MemoryQuotaLedger:
    """`QuotaLedger` in lists, with the SQLite ledger's rules.

    `reserve` counts and writes without awaiting in between, so on one event loop it is as exact as the
    SQLite ledger's write transaction. A reservation older than `reservation_ttl` no longer counts as used
    or running. `expire` and `prune` leave alone the reservations a job in `jobs` still points at.
    """

    def __init__(
        self,
        *,
        defaults: Mapping[TaskKind, int] | None = None,
        max_inflight_per_provider: int = 10,
        max_queue_per_provider: int = 0,
        reservation_ttl: float = 3600.0,
        clock: Callable[[], float] = time.time,
        jobs: MemoryJobRepository | None = None,
    ) -> None:
        self._defaults = dict(defaults or {TaskKind.DESCRIBE: 10, TaskKind.IMAGINE: 10})
        self._max_inflight_per_provider = max_inflight_per_provider
        self._max_queue_per_provider = max_queue_per_provider
        self._ttl = reservation_ttl
        self._clock = clock
        self._jobs = jobs
        self._rows: dict[int, UsageRow] = {}
        self._ids = itertools.count(1)
        self._limits: dict[tuple[int, LimitScope, int, TaskKind], int] = {}
        self._grants: list[tuple[int, int, TaskKind, str, int]] = []  # guild, user, kind, day, amount
        self.audit: list[tuple[int, int, str, dict[str, object]]] = []  # guild, actor, action, detail
        # Every settle, in order: (commit or refund, usage id, outcome, whether it settled anything).
        self.settles: list[tuple[str, int, str, bool]] = []

    # --- the member's side ----------------------------------------------------------------------------

    async def reserve(self, member: Member, kind: TaskKind, provider: str) -> Reservation:
        now = self._clock()
        day = utc_day(now)
        status = self._status(member, kind, now)
        if status.left == 0:
            raise QuotaExceeded(kind, status.limit, status.renews_at)
        held = sum(1 for row in self._rows.values() if row.provider == provider and self._held(row, now))
        if held >= self._max_inflight_per_provider + self._max_queue_per_provider:
            raise LineFull(provider, self._max_queue_per_provider)
        usage_id = next(self._ids)
        self._rows[usage_id] = UsageRow(
            usage_id, member.guild_id, member.user_id, kind, provider, "reserved", day, now
        )
        return Reservation(usage_id=usage_id)

    async def commit(self, usage_id: int, *, outcome: str = "COMPLETED") -> bool:
        return self._settle("commit", usage_id, "committed", outcome)

    async def refund(self, usage_id: int, *, outcome: str) -> bool:
        return self._settle("refund", usage_id, "refunded", outcome)

    async def move(self, usage_id: int, provider: str) -> None:
        row = self._rows.get(usage_id)
        if row is not None and row.state == "reserved":
            row.provider = provider

    async def record_task_id(self, usage_id: int, task_id: str) -> None:
        row = self._rows.get(usage_id)
        if row is not None:
            row.provider_task_id = task_id

    async def record_cached(self, member: Member, kind: TaskKind, provider: str) -> None:
        now = self._clock()
        usage_id = next(self._ids)
        self._rows[usage_id] = UsageRow(
            usage_id,
            member.guild_id,
            member.user_id,
            kind,
            provider,
            "cached",
            utc_day(now),
            now,
            outcome="COMPLETED",
            ended_at=now,
        )

    async def status(self, member: Member) -> list[KindStatus]:
        now = self._clock()
        return [self._status(member, kind, now) for kind in TaskKind]

    async def forget_member(self, guild_id: int, user_id: int) -> int:
        today = utc_day(self._clock())
        stand_in = pseudonym(_SECRET, guild_id, user_id)
        changed = 0
        for row in self._rows.values():
            if (row.guild_id, row.user_id) == (guild_id, user_id):
                row.user_id = stand_in if row.day == today else FORGOTTEN
                changed += 1
        return changed

    async def expire(self) -> int:
        now = self._clock()
        kept = self._jobs.usage_ids(unfinished_only=True) if self._jobs is not None else set()
        expired = 0
        for row in self._rows.values():
            if row.state == "reserved" and row.started_at <= now - self._ttl and row.id not in kept:
                row.state, row.outcome, row.ended_at = "refunded", "EXPIRED", now
                expired += 1
        return expired

    # --- the admin's side -----------------------------------------------------------------------------

    async def set_limit(
        self,
        guild_id: int,
        scope: LimitScope,
        target_id: int,
        kind: TaskKind,
        limit: int | None,
        actor_id: int,
    ) -> None:
        check_limit(scope, limit)
        key = (guild_id, scope, target_id, kind)
        if limit is None:
            self._limits.pop(key, None)
        else:
            self._limits[key] = limit
        detail: dict[str, object] = {
            "scope": scope,
            "target_id": target_id,
            "kind": kind.value,
            "limit": limit,
        }
        self.audit.append((guild_id, actor_id, "set", detail))

    async def grant(self, guild_id: int, user_id: int, kind: TaskKind, amount: int, actor_id: int) -> None:
        if amount <= 0:
            raise ValueError(f"a grant is one task or more, not {amount}")
        day = utc_day(self._clock())
        self._grants.append((guild_id, user_id, kind, day, amount))
        detail: dict[str, object] = {"user_id": user_id, "kind": kind.value, "amount": amount, "day": day}
        self.audit.append((guild_id, actor_id, "grant", detail))

    async def reset_today(self, guild_id: int, user_id: int, kind: TaskKind | None, actor_id: int) -> int:
        kinds = {kind} if kind else set(TaskKind)
        day = utc_day(self._clock())
        forgiven = 0
        for row in self._rows.values():
            if (
                (row.guild_id, row.user_id, row.day) == (guild_id, user_id, day)
                and row.state == "committed"
                and not row.forgiven
                and row.kind in kinds
            ):
                row.forgiven = True
                forgiven += 1
        detail: dict[str, object] = {
            "user_id": user_id,
            "kind": kind.value if kind else "all",
            "forgiven": forgiven,
        }
        self.audit.append((guild_id, actor_id, "reset", detail))
        return forgiven

    async def usage_report(self, guild_id: int, days: int, *, top: int = 10) -> UsageReport:
        if days < 1:
            raise ValueError(f"a report covers one day or more, not {days}")
        until = datetime.fromtimestamp(self._clock(), UTC)
        first_day = until.date() - timedelta(days=days - 1)
        since = datetime.combine(first_day, datetime.min.time(), tzinfo=UTC)
        rows = [
            row
            for row in sorted(self._rows.values(), key=lambda row: row.id)
            if row.guild_id == guild_id and row.day >= first_day.isoformat()
        ]
        groups: dict[tuple[str, str], list[UsageRow]] = {}
        for row in rows:
            groups.setdefault((row.kind.value, row.provider), []).append(row)
        lines = [
            UsageLine(
                kind,
                provider,
                completed=sum(r.state == "committed" and r.outcome == "COMPLETED" for r in group),
                failed=sum(
                    r.state in ("committed", "refunded") and (r.outcome or "") != "COMPLETED" for r in group
                ),
                refunded=sum(r.state == "refunded" for r in group),
                cached=sum(r.state == "cached" for r in group),
                running=sum(r.state == "reserved" for r in group),
            )
            for (kind, provider), group in sorted(groups.items())
        ]
        spent = Counter(row.user_id for row in rows if row.state == "committed")
        top_members = sorted(spent.items(), key=lambda item: (-item[1], item[0]))[:top]
        return UsageReport(guild_id, since, until, lines, top_members, [_usage_dict(row) for row in rows])

    async def prune(self, retention_days: int) -> int:
        cutoff = (
            datetime.fromtimestamp(self._clock(), UTC).date() - timedelta(days=retention_days)
        ).isoformat()
        kept = self._jobs.usage_ids() if self._jobs is not None else set()
        gone = [
            row.id
            for row in self._rows.values()
            if row.day < cutoff and row.state != "reserved" and row.id not in kept
        ]
        for usage_id in gone:
            del self._rows[usage_id]
        self._grants = [grant for grant in self._grants if grant[3] >= cutoff]
        return len(gone)

    # --- for tests ----------------------------------------------------------------------------------

    def row(self, usage_id: int) -> UsageRow:
        """Return a copy of one usage row; KeyError when there is none."""
        return copy.copy(self._rows[usage_id])

    def rows(self) -> list[UsageRow]:
        return [copy.copy(row) for row in sorted(self._rows.values(), key=lambda row: row.id)]

    def states(self) -> list[str]:
        """Every usage row's state, oldest first ("reserved", "committed", "refunded", "cached")."""
        return [row.state for row in self.rows()]

    # --- inside ---------------------------------------------------------------------------------------

    def _settle(self, verb: str, usage_id: int, state: str, outcome: str) -> bool:
        row = self._rows.get(usage_id)
        settled = row is not None and row.state == "reserved"
        if row is not None and settled:
            row.state, row.outcome, row.ended_at = state, outcome, self._clock()
        self.settles.append((verb, usage_id, outcome, settled))
        return settled

    def _status(self, member: Member, kind: TaskKind, now: float) -> KindStatus:
        day = utc_day(now)
        limits = (
            (scope, target, value)
            for (guild, scope, target, limit_kind), value in self._limits.items()
            if guild == member.guild_id and limit_kind is kind
        )
        limit, source = resolve_limit(limits, member, self._defaults[kind])
        ids = (member.user_id, pseudonym(_SECRET, member.guild_id, member.user_id))
        used = sum(
            1
            for row in self._rows.values()
            if (row.guild_id, row.kind, row.day) == (member.guild_id, kind, day)
            and row.user_id in ids
            and not row.forgiven
            and (row.state == "committed" or self._held(row, now))
        )
        granted = sum(
            amount
            for guild, user, grant_kind, grant_day, amount in self._grants
            if (guild, user, grant_kind, grant_day) == (member.guild_id, member.user_id, kind, day)
        )
        return kind_status(kind, limit, source, used, granted, now)

    def _held(self, row: UsageRow, now: float) -> bool:
        """A reservation holds while a job carries it unfinished, or while it is recent."""
        if row.state != "reserved":
            return False
        carried = self._jobs is not None and row.id in self._jobs.usage_ids(unfinished_only=True)
        return carried or row.started_at > now - self._ttl


def _usage_dict(row: UsageRow) -> dict[str, object]:
    values: dict[str, object] = {
        "id": row.id,
        "day": row.day,
        "user_id": row.user_id,
        "kind": row.kind.value,
        "provider": row.provider,
        "provider_task_id": row.provider_task_id,
        "state": row.state,
        "outcome": row.outcome,
        "forgiven": int(row.forgiven),
        "started_at": row.started_at,
        "ended_at": row.ended_at,
    }
    return {column: values[column] for column in USAGE_COLUMNS}


# --- the reporter --------------------------------------------------------------------------------------


class MemoryRules:
    """`RulesRepository` in dicts: channel rules and the blocklist of each server, and every change made."""

    def __init__(self) -> None:
        self._channels: dict[int, dict[int, ChannelRule]] = {}
        self._blocked: dict[int, dict[str, str]] = {}
        self.audit: list[tuple[int, int, str]] = []  # guild, actor, action

    async def channel_rules(self, guild_id: int) -> dict[int, ChannelRule]:
        return dict(self._channels.get(guild_id, {}))

    async def set_channel_rule(self, guild_id: int, rule: ChannelRule, actor_id: int) -> None:
        self._channels.setdefault(guild_id, {})[rule.channel_id] = rule
        self.audit.append((guild_id, actor_id, "rules-channel"))

    async def blocklist(self, guild_id: int) -> list[tuple[str, str]]:
        return list(self._blocked.get(guild_id, {}).items())

    async def add_blocked(self, guild_id: int, phrases: Sequence[str], actor_id: int) -> tuple[int, int]:
        blocked = self._blocked.setdefault(guild_id, {})
        new = {phrase_key(p): p for p in phrases if phrase_key(p) and phrase_key(p) not in blocked}
        blocked.update(new)
        self.audit.append((guild_id, actor_id, "blocklist-add"))
        return len(new), len(blocked)

    async def remove_blocked(self, guild_id: int, phrases: Sequence[str], actor_id: int) -> tuple[int, int]:
        blocked = self._blocked.setdefault(guild_id, {})
        gone = [key for key in {phrase_key(p) for p in phrases} if blocked.pop(key, None) is not None]
        self.audit.append((guild_id, actor_id, "blocklist-remove"))
        return len(gone), len(blocked)


class RecordingReporter:
    """`JobReporter` that records every job it is shown, in order, and what it was told to forget."""

    def __init__(self, *, journal: Journal | None = None) -> None:
        self.journal = journal
        self.shown: list[Job] = []
        self.forgotten: list[str] = []
        self.changes = Changes()
        # Ends not taken before one is: each such report returns False, as when Discord answered 5xx.
        self.refuse_ends = 0
        self.refused: list[Job] = []

    async def report(self, job: Job) -> bool:
        if job.finished and self.refuse_ends > 0:
            # As a reporter whose Discord did not take the end (a 5xx, a lost connection).
            self.refuse_ends -= 1
            self.refused.append(job)
            self.changes.notify()
            return False
        self.shown.append(job)
        if self.journal is not None:
            self.journal.add("reported", job.id, job.state.value)
        self.changes.notify()
        return True

    async def forget(self, job_id: str) -> None:
        self.forgotten.append(job_id)
        self.changes.notify()

    def states(self, job_id: str) -> list[JobState]:
        """The states shown for one job, in order."""
        return [job.state for job in self.shown if job.id == job_id]

    async def reached(self, job_id: str, state: JobState, timeout: float = DEFAULT_TIMEOUT) -> Job:
        """Wait until the job was shown in `state`; return it as shown."""
        await self.changes.wait_until(
            lambda: state in self.states(job_id), f"job {job_id[:8]} to be shown {state.value}", timeout
        )
        return next(job for job in self.shown if job.id == job_id and job.state is state)

    async def forgot(self, job_id: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        await self.changes.wait_until(
            lambda: job_id in self.forgotten, f"job {job_id[:8]} forgotten", timeout
        )


# --- providers -----------------------------------------------------------------------------------------

Step = TaskSnapshot | BaseException


def snapshot(
    task_id: str,
    status: ProviderStatus | str,
    *,
    prompt: str | None = None,
    image_urls: Iterable[str] = (),
) -> TaskSnapshot:
    prompts = (Suggestion(prompt),) if prompt else ()
    return TaskSnapshot(task_id, ProviderStatus(status), suggestions=prompts, image_urls=tuple(image_urls))


class Script:
    """A capability's answers to successive calls: snapshots or errors, in order; the last one repeats.

    `hold`, when set to an unset event, keeps every answer back until the test sets it; `before_answer`
    runs just before each answer (to move a clock, say). `wait_for_calls` waits on calls, not on time.
    """

    def __init__(self, *steps: Step) -> None:
        if not steps:
            raise ValueError("a script needs at least one answer")
        self._steps: deque[Step] = deque(steps)
        self.calls = 0
        self.hold: asyncio.Event | None = None
        self.before_answer: Callable[[], None] | None = None
        self.changes = Changes()

    def then(self, *steps: Step) -> None:
        """Add answers after the ones still to come (the last of those stops repeating)."""
        self._steps.extend(steps)

    async def answer(self) -> TaskSnapshot:
        self.calls += 1
        self.changes.notify()
        if self.hold is not None:
            await self.hold.wait()
        if self.before_answer is not None:
            self.before_answer()
        step = self._steps.popleft() if len(self._steps) > 1 else self._steps[0]
        if isinstance(step, BaseException):
            raise step.with_traceback(None)
        return step

    async def wait_for_calls(self, count: int, timeout: float = DEFAULT_TIMEOUT) -> None:
        await self.changes.wait_until(lambda: self.calls >= count, f"{count} call(s)", timeout)


@dataclass(frozen=True, slots=True)
class DescribeCall:
    image: ImageBytes
    webhook_url: str | None


@dataclass(frozen=True, slots=True)
class ImagineCall:
    prompt: str
    references: tuple[ImageBytes, ...]
    webhook_url: str | None


class FakeDescriber:
    """`Describer` answering from a script."""

    def __init__(self, *steps: Step) -> None:
        self.script = Script(*steps)
        self.calls: list[DescribeCall] = []

    async def describe(
        self, image: ImageBytes, request: DescribeRequest, *, webhook_url: str | None
    ) -> TaskSnapshot:
        self.calls.append(DescribeCall(image, webhook_url))
        return await self.script.answer()


class FakeImaginer:
    """`Imaginer` answering creates from a script; `fetch_results` hands over `results` (or raises)."""

    def __init__(
        self,
        *steps: Step,
        results: Sequence[ImageBytes] = (),
        fetch_error: ProviderError | None = None,
    ) -> None:
        self.script = Script(*steps)
        self.calls: list[ImagineCall] = []
        self.results = tuple(results)
        self.fetch_error = fetch_error
        self.fetched: list[TaskSnapshot] = []

    async def imagine(
        self, prompt: str, references: Sequence[ImageBytes], *, webhook_url: str | None
    ) -> TaskSnapshot:
        self.calls.append(ImagineCall(prompt, tuple(references), webhook_url))
        return await self.script.answer()

    async def fetch_results(self, snapshot: TaskSnapshot) -> TaskSnapshot:
        self.fetched.append(snapshot)
        if self.fetch_error is not None:
            raise self.fetch_error.with_traceback(None)
        return replace(snapshot, images=self.results)


class FakePoller:
    """`TaskPoller` answering from a script."""

    def __init__(self, *steps: Step) -> None:
        self.script = Script(*steps)
        self.calls: list[tuple[TaskKind, str]] = []

    async def poll(self, kind: TaskKind, task_id: str, *, chance: float = 1.0) -> TaskSnapshot:
        self.calls.append((kind, task_id))
        return await self.script.answer()


def webhook_body(task_id: str, status: str, *, prompt: str | None = None, urls: Sequence[str] = ()) -> bytes:
    """A delivery as `FakeWebhookReader` reads it: the task object, as JSON."""
    body: dict[str, object] = {"task_id": task_id, "status": status}
    if prompt is not None:
        body["prompt"] = prompt
    if urls:
        body["urls"] = list(urls)
    return json.dumps(body).encode()


class FakeWebhookReader:
    """`WebhookReader` of `webhook_body` deliveries; anything else is a BAD_RESULT."""

    def __init__(self, provider: str) -> None:
        self.provider = provider
        self.read: list[str] = []  # task ids, in order

    def read_delivery(self, body: bytes) -> WebhookDelivery:
        try:
            parsed = json.loads(body)
        except ValueError:
            raise ProviderError(self.provider, Fault.BAD_RESULT, "malformed JSON") from None
        if not (
            isinstance(parsed, dict)
            and isinstance(parsed.get("task_id"), str)
            and isinstance(parsed.get("status"), str)
        ):
            raise ProviderError(self.provider, Fault.BAD_RESULT, "unexpected body shape")
        self.read.append(parsed["task_id"])
        return WebhookDelivery(task_id=parsed["task_id"], body=parsed)

    def snapshot(self, kind: TaskKind, delivery: WebhookDelivery) -> TaskSnapshot:
        assert isinstance(delivery.body, dict)
        body: dict[str, Any] = delivery.body
        status = ProviderStatus.__members__.get(str(body["status"]).upper(), ProviderStatus.IN_PROGRESS)
        if status is not ProviderStatus.COMPLETED:
            return TaskSnapshot(delivery.task_id, status)
        if kind is TaskKind.DESCRIBE:
            prompt = body.get("prompt")
            return TaskSnapshot(delivery.task_id, status, suggestions=(Suggestion(prompt),) if prompt else ())
        return TaskSnapshot(delivery.task_id, status, image_urls=tuple(body.get("urls", ())))


class FakeKeyChecker:
    """`KeyChecker` that passes, or raises the error it was given."""

    def __init__(self, error: ProviderError | None = None) -> None:
        self.error = error
        self.calls = 0

    async def check_key(self) -> None:
        self.calls += 1
        if self.error is not None:
            raise self.error.with_traceback(None)


DEFAULT_LIMITS = ImageLimits(max_side=2048, max_bytes=4_000_000)


def make_provider(
    name: str,
    *,
    describer: FakeDescriber | None = None,
    imaginer: FakeImaginer | None = None,
    poller: FakePoller | None = None,
    webhooks: FakeWebhookReader | None = None,
    key_checker: FakeKeyChecker | None = None,
    limits: ImageLimits = DEFAULT_LIMITS,
) -> Provider:
    """Assemble fake capabilities into a provider; leave `poller` out for a synchronous one."""
    return Provider(
        name=name,
        image_limits=limits,
        key_checker=key_checker or FakeKeyChecker(),
        describer=describer,
        imaginer=imaginer,
        poller=poller,
        webhooks=webhooks,
    )
