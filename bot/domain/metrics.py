"""What the bot tells its metrics: a port the core and the edges call, with a no-op default.

The core counts tasks, provider requests and refusals through `Metrics` without knowing who listens
(`bot.observability` turns the calls into Prometheus series). Every value that becomes a label comes from a
fixed set: the enums below and in `bot.domain.tasks`, the provider registry's names, or `request_status`.
Nothing a member typed or a provider answered, and no id, token or URL, ever becomes a label.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final, Protocol

from bot.domain.errors import ProviderError
from bot.domain.tasks import Fault, Job, JobState, NoticeCode, TaskKind


class TaskOutcome(enum.StrEnum):
    """How a task ended, as the member's quota saw it."""

    COMPLETED = "completed"  # a result, charged
    CACHED = "cached"  # a result from the describe cache, free
    FAILED = "failed"  # no result, charged: the provider refused the member's input (see the fault)
    REFUNDED = "refunded"  # no result, given back: the provider's or the bot's fault (see the fault)
    CANCELLED = "cancelled"  # stopped by its member: free in line, charged once the provider had it


class ProviderOperation(enum.StrEnum):
    """What the bot asked a provider for: one of a provider's capabilities."""

    DESCRIBE = "describe"
    IMAGINE = "imagine"
    POLL = "poll"
    FETCH_RESULTS = "fetch_results"
    CHECK_KEY = "check_key"


class QuotaRefusalReason(enum.StrEnum):
    """Why a task was refused before it started (nothing reached a provider)."""

    USED_UP = "used_up"  # no tasks of this kind left today
    SWITCHED_OFF = "switched_off"  # a limit of 0 for the member
    LINE_FULL = "line_full"  # MAX_INFLIGHT_PER_PROVIDER running and MAX_QUEUE_PER_PROVIDER waiting


class WebhookResult(enum.StrEnum):
    """What became of one delivery to the webhook listener."""

    ACCEPTED = "accepted"  # verified and handed to its job (or to a job that already ended)
    BAD_SIGNATURE = "bad_signature"  # missing or wrong signature headers
    STALE = "stale"  # signed, but its timestamp is outside the tolerance
    REPLAYED = "replayed"  # a webhook id seen before
    UNKNOWN = "unknown"  # verified, but about a task no job of ours has
    UNKNOWN_PROVIDER = "unknown_provider"  # verified, but for a provider that takes no webhooks here
    MALFORMED = "malformed"  # verified, but not the provider's task object
    TOO_LARGE = "too_large"
    READ_TIMEOUT = "read_timeout"
    ERROR = "error"  # the bot failed handling it (the provider retries; polling is the safety net)


class BreakerState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"  # the cooldown is over: the next request decides


class Phase(enum.StrEnum):
    """Where an unfinished job is, as far as its provider's capacity goes."""

    WAITING = "waiting"  # in line: saved, not dispatched yet (`Job.waiting`)
    IN_FLIGHT = "in_flight"  # dispatched: counts against its provider's cap, whatever its create became


def phase_of(job: Job) -> Phase | None:
    """Return the phase of an unfinished job; None once it ended.

    A dispatched job saved back to QUEUED (its create refused, or on its way to a fallback) has left the line.
    """
    if job.finished:
        return None
    return Phase.WAITING if job.waiting else Phase.IN_FLIGHT


def outcome_of(job: Job) -> TaskOutcome:
    """Return how a job that ended counts: by the rule that commits or refunds its reservation (`Job.charged`)."""
    if job.state is JobState.CANCELLED:
        return TaskOutcome.CANCELLED
    if job.state is JobState.COMPLETED:
        cached = job.notice is not None and job.notice.code is NoticeCode.CACHED
        return TaskOutcome.CACHED if cached else TaskOutcome.COMPLETED
    return TaskOutcome.FAILED if job.charged else TaskOutcome.REFUNDED


# HTTP statuses that are their own label value; any other is counted as its class ("4xx", "5xx").
LABELLED_STATUSES: Final = frozenset(
    {400, 401, 402, 403, 404, 405, 408, 409, 413, 415, 422, 429, 500, 502, 503, 504}
)
OK: Final = "ok"
ERROR: Final = "error"


def status_label(status: int) -> str:
    """Return an HTTP status as a label value from a bounded set."""
    if status in LABELLED_STATUSES:
        return str(status)
    return f"{min(max(status // 100, 1), 5)}xx"


def request_status(error: BaseException | None) -> str:
    """Return how a provider request ended, as a bounded label value.

    "ok"; the HTTP status of a refusal (see `status_label`); the fault when no error status came
    (unreachable, lost, busy after a timeout, bad_result); "error" for anything unexpected.
    """
    if error is None:
        return OK
    if isinstance(error, ProviderError):
        if error.status is not None and error.status >= 300:
            return status_label(error.status)
        return error.fault.value
    return ERROR


@dataclass(frozen=True, slots=True)
class LiveState:
    """What is true right now, read when metrics are collected rather than counted as it happens."""

    # (provider, phase) -> unfinished jobs this process drives
    jobs: Mapping[tuple[str, Phase], int] = field(default_factory=dict)
    breakers: Mapping[str, BreakerState] = field(default_factory=dict)  # provider -> its breaker


class Metrics(Protocol):
    """Where the bot's counts and timings go. Every method is quick and never raises."""

    def task_started(self, kind: TaskKind, provider: str) -> None:
        """A job was saved to run (or answered from the cache)."""
        ...

    def task_finished(self, kind: TaskKind, provider: str, outcome: TaskOutcome, fault: Fault | None) -> None:
        """A job's end was reported and the job closed."""
        ...

    def provider_completed(self, kind: TaskKind, provider: str, seconds: float) -> None:
        """A provider finished a task with a result, `seconds` after the job was saved."""
        ...

    def result_shown(self, kind: TaskKind, seconds: float) -> None:
        """A job's end reached Discord, `seconds` after it was saved."""
        ...

    def provider_request(
        self, provider: str, operation: ProviderOperation, status: str, seconds: float
    ) -> None:
        """One call to a provider capability ended (after the request helper's own retries)."""
        ...

    def quota_refused(self, kind: TaskKind, reason: QuotaRefusalReason) -> None: ...

    def webhook_delivery(self, result: WebhookResult) -> None: ...

    def watch(self, read: Callable[[], LiveState]) -> None:
        """Read the live state through `read` whenever metrics are collected."""
        ...


class NoMetrics:
    """Metrics that go nowhere: the default for the terminal and for tests that do not look."""

    def task_started(self, kind: TaskKind, provider: str) -> None:
        return None

    def task_finished(self, kind: TaskKind, provider: str, outcome: TaskOutcome, fault: Fault | None) -> None:
        return None

    def provider_completed(self, kind: TaskKind, provider: str, seconds: float) -> None:
        return None

    def result_shown(self, kind: TaskKind, seconds: float) -> None:
        return None

    def provider_request(
        self, provider: str, operation: ProviderOperation, status: str, seconds: float
    ) -> None:
        return None

    def quota_refused(self, kind: TaskKind, reason: QuotaRefusalReason) -> None:
        return None

    def webhook_delivery(self, result: WebhookResult) -> None:
        return None

    def watch(self, read: Callable[[], LiveState]) -> None:
        return None


NO_METRICS: Final[Metrics] = NoMetrics()
