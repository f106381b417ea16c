"""The seams the core needs: storage, the place a job is shown, and what a provider can do.

Implementations live elsewhere (`bot.store.sqlite`, `bot.discord.reporting`, `bot.providers`); the core
depends only on these. A provider offers the capabilities it has and no others: a synchronous one has no
poller, one without webhooks no webhook reader.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from bot.domain.quota import KindStatus, LimitScope, Member, Reservation, UsageReport
from bot.domain.rules import ChannelRule
from bot.domain.tasks import (
    DescribeRequest,
    DescribeStyle,
    ImageBytes,
    ImageLimits,
    Job,
    Route,
    Suggestion,
    TaskDuration,
    TaskKind,
    TaskSnapshot,
)

ImageRole = Literal["input", "output"]


class JobRepository(Protocol):
    """Jobs as saved: every state is saved before it is reported."""

    async def create(self, job: Job, inputs: Sequence[ImageBytes] = ()) -> None:
        """Save a new job and its input images together."""
        ...

    async def update(self, job: Job, **changes: Any) -> Job:
        """Save the given fields of a job (not its route); return the caller's job with those changes."""
        ...

    async def save_outputs(self, job: Job, images: Sequence[ImageBytes], **changes: Any) -> Job:
        """Save generated images and the job's new fields together."""
        ...

    async def finish(self, job: Job) -> Job:
        """Close a job whose end was reported: note when, and drop its interaction token."""
        ...

    async def save_route(self, job_id: str, route: Route) -> None:
        """Save where the job's message now is."""
        ...

    async def get(self, job_id: str) -> Job | None: ...

    async def find_by_task(self, provider: str, task_id: str) -> Job | None: ...

    async def unfinished(self) -> list[Job]:
        """Return every job whose end has not been reported yet, oldest first."""
        ...

    async def next_in_line(
        self, provider: str, *, max_running: int, max_running_per_member: int
    ) -> Job | None:
        """Take the next job from the provider's line and mark it dispatched, in one atomic step; None when
        the line is empty or the provider (or every waiting member) is at its cap of running tasks.

        Members take turns: the next job is the oldest of the member whose last task left the line longest
        ago (never served first), among members under their cap.
        """
        ...

    async def line(self, provider: str) -> list[Job]:
        """Return the jobs waiting for the provider, in the order they will be taken, with their `place`."""
        ...

    async def cancel_waiting(self, job_id: str) -> Job | None:
        """End a job that still waits in line as CANCELLED, atomically; None when it is no longer waiting."""
        ...

    async def tasks_of(self, user_id: int, guild_id: int | None = None) -> tuple[int, int]:
        """Return how many of the member's tasks run at a provider, and how many wait in line (in one
        server, or in all)."""
        ...

    async def forget_member(self, guild_id: int, user_id: int) -> tuple[int, int, int]:
        """Delete the member's tasks in a server, their images and the cached prompts of images they sent;
        return (tasks, images, prompts). Raises BadInput while any of those tasks is unfinished."""
        ...

    # Which process drives which job. One process on its own store (SQLite) drives every job: `claim`
    # returns them all at once and none is ever lost. On a store several processes share (PostgreSQL)
    # each unfinished job is leased to one live process, which renews its leases while it lives; the
    # jobs of a process that died are claimed by another once its leases run out.

    @property
    def shared(self) -> bool:
        """Whether other processes use this store too (the runner then renews and claims periodically)."""
        ...

    async def claim(self, limit: int) -> list[Job]:
        """Take unfinished jobs no live process drives (at most `limit`, oldest first): now this process's."""
        ...

    async def renew(self) -> set[str]:
        """Extend this process's leases; return the ids of the unfinished jobs it still holds."""
        ...

    async def next_expiry(self) -> float | None:
        """Return in how many seconds the next lease of another process runs out (None: no such lease)."""
        ...

    async def release(self) -> None:
        """Give back every job this process holds (a graceful stop), for another process to carry on now."""
        ...

    async def request_cancel(self, job_id: str) -> bool:
        """Ask whichever process drives a job at its provider to cancel it (a shared store); False when the
        job no longer runs, or when the store is not shared (this process drives every job itself)."""
        ...

    async def cancel_requested(self) -> set[str]:
        """Return the ids of the unfinished jobs this process holds that another process asked to cancel."""
        ...

    async def images(self, job_id: str, role: ImageRole) -> list[ImageBytes]: ...

    async def cached_suggestions(
        self, image_hash: str, provider: str, variant: str, max_age_days: int
    ) -> tuple[Suggestion, ...] | None:
        """Return what this provider answered for the same image and request within the cache's lifetime."""
        ...

    async def cache_suggestions(
        self, image_hash: str, provider: str, variant: str, suggestions: tuple[Suggestion, ...]
    ) -> None: ...

    async def prune(self, retention_days: int) -> int:
        """Delete finished jobs older than the retention; return how many went."""
        ...


class TaskDurations(Protocol):
    """How long each provider's tasks took lately, kept so that a restart does not forget them."""

    async def record(
        self, provider: str, kind: TaskKind, durations: Sequence[TaskDuration], *, keep: int
    ) -> None:
        """Add these ends, and let go of all but the newest `keep` tasks (by start) of this provider and kind."""
        ...

    async def recent(self, provider: str, kind: TaskKind, limit: int) -> list[TaskDuration]:
        """Return the ends of the newest `limit` tasks (by start) of a provider and kind, oldest first."""
        ...


class QuotaLedger(Protocol):
    """Limits, reservations and the usage log.

    `reserve` is the one check-and-write that must be exact whatever the concurrency: it counts what the
    member used and holds one unit in a single atomic step, or refuses. An implementation says how it
    keeps that true (one SQLite write transaction; a row lock on the member's day in PostgreSQL).
    """

    async def reserve(self, member: Member, kind: TaskKind, provider: str) -> Reservation:
        """Hold one task for the member, or raise QuotaExceeded or LineFull (the provider's line is full)."""
        ...

    async def commit(self, usage_id: int, *, outcome: str = "COMPLETED") -> bool:
        """Spend a reservation; False when it was already settled."""
        ...

    async def refund(self, usage_id: int, *, outcome: str) -> bool:
        """Give a reservation back; False when it was already settled."""
        ...

    async def move(self, usage_id: int, provider: str) -> None: ...

    async def record_task_id(self, usage_id: int, task_id: str) -> None: ...

    async def record_cached(self, member: Member, kind: TaskKind, provider: str) -> None: ...

    async def status(self, member: Member) -> list[KindStatus]: ...

    async def expire(self) -> int: ...

    async def forget_member(self, guild_id: int, user_id: int) -> int:
        """Take the member's id off their rows in a server (today's keep counting); return usage rows changed."""
        ...

    async def set_limit(
        self,
        guild_id: int,
        scope: LimitScope,
        target_id: int,
        kind: TaskKind,
        limit: int | None,
        actor_id: int,
    ) -> None: ...

    async def grant(
        self, guild_id: int, user_id: int, kind: TaskKind, amount: int, actor_id: int
    ) -> None: ...

    async def reset_today(self, guild_id: int, user_id: int, kind: TaskKind | None, actor_id: int) -> int: ...

    async def usage_report(self, guild_id: int, days: int, *, top: int = 10) -> UsageReport: ...

    async def prune(self, retention_days: int) -> int: ...


class RulesRepository(Protocol):
    """A server's rules: what each channel allows, and the phrases no prompt may contain."""

    async def channel_rules(self, guild_id: int) -> dict[int, ChannelRule]: ...

    async def set_channel_rule(self, guild_id: int, rule: ChannelRule, actor_id: int) -> None: ...

    async def blocklist(self, guild_id: int) -> list[tuple[str, str]]:
        """Return (matched form, as written) of each blocked phrase."""
        ...

    async def add_blocked(self, guild_id: int, phrases: Sequence[str], actor_id: int) -> tuple[int, int]: ...

    async def remove_blocked(
        self, guild_id: int, phrases: Sequence[str], actor_id: int
    ) -> tuple[int, int]: ...


class DeliveryRelay(Protocol):
    """Webhook deliveries between processes that share a store: any may receive one, its driver takes it."""

    async def post(self, provider: str, task_id: str, body: bytes) -> bool:
        """Leave a verified delivery for whichever process drives (or will drive) the task; False if not kept."""
        ...

    async def take(self, provider: str, task_id: str) -> list[bytes]:
        """Take the deliveries left for a task (once, whoever asks first), oldest first."""
        ...

    async def listen(self, on_posted: Callable[[str, str], None]) -> None:
        """Call `on_posted(provider, task_id)` whenever some process posts a delivery, until `close`."""
        ...

    async def close(self) -> None: ...


class JobReporter(Protocol):
    """Where a job's saved state is shown (a Discord message, a terminal)."""

    async def report(self, job: Job) -> bool:
        """Show the job; a final state is shown before this returns, earlier ones may be coalesced.

        Return False only when it was not shown for a reason that may pass (worth offering again).
        """
        ...

    async def forget(self, job_id: str) -> None:
        """Drop what is kept for a job whose runner stopped (shutdown)."""
        ...


class Describer(Protocol):
    async def describe(
        self, image: ImageBytes, request: DescribeRequest, *, webhook_url: str | None
    ) -> TaskSnapshot:
        """Create an image-to-prompt task (a synchronous provider answers with its end)."""
        ...


class Imaginer(Protocol):
    async def imagine(
        self, prompt: str, references: Sequence[ImageBytes], *, webhook_url: str | None
    ) -> TaskSnapshot:
        """Create an image generation task."""
        ...

    async def fetch_results(self, snapshot: TaskSnapshot) -> TaskSnapshot:
        """Download what a COMPLETED snapshot points at (provider URLs expire)."""
        ...


class TaskPoller(Protocol):
    async def poll(self, kind: TaskKind, task_id: str, *, chance: float = 1.0) -> TaskSnapshot:
        """Read a task's current state.

        `chance` is how likely this look is to find the task ended (0 to 1): a provider that rations its
        requests sends likelier looks first.
        """
        ...


@dataclass(frozen=True, slots=True)
class WebhookDelivery:
    """A delivery's body read once: the task it is about, and the provider's own parsed object."""

    task_id: str
    body: object


class WebhookReader(Protocol):
    def read_delivery(self, body: bytes) -> WebhookDelivery:
        """Parse a verified delivery; raise ProviderError (BAD_RESULT) when it has the wrong shape."""
        ...

    def snapshot(self, kind: TaskKind, delivery: WebhookDelivery) -> TaskSnapshot:
        """Read the delivery as an observation of a task of this kind."""
        ...


class KeyChecker(Protocol):
    async def check_key(self) -> None:
        """Prove the key works with the cheapest call there is; raise ProviderError if not."""
        ...


@dataclass(frozen=True, slots=True)
class Provider:
    """A configured provider: its name, its limits, and the capabilities it has."""

    name: str
    image_limits: ImageLimits
    key_checker: KeyChecker
    describer: Describer | None = None
    imaginer: Imaginer | None = None
    poller: TaskPoller | None = None  # None: the answer comes with the request (synchronous)
    webhooks: WebhookReader | None = None
    # What its describer can be asked beyond one detailed prompt.
    describe_styles: frozenset[DescribeStyle] = frozenset({DescribeStyle.DETAILED})
    max_suggestions: int = 1
    # What else the same image's answer depends on (the model of an OpenAI-compatible server): part of the
    # describe cache's key, so a new model is not answered from the old one's cache.
    cache_scope: str = ""

    @property
    def kinds(self) -> frozenset[TaskKind]:
        offered = {TaskKind.DESCRIBE: self.describer, TaskKind.IMAGINE: self.imaginer}
        return frozenset(kind for kind, capability in offered.items() if capability is not None)

    @property
    def synchronous(self) -> bool:
        return self.poller is None

    def can_describe(self, request: DescribeRequest) -> bool:
        return (
            self.describer is not None
            and request.style in self.describe_styles
            and request.count <= self.max_suggestions
        )

    def cache_variant(self, request: DescribeRequest) -> str:
        """Return the part of the describe cache's key besides the image and the provider."""
        return f"{self.cache_scope}|{request.style.value}|{request.count}"
