"""Tasks and jobs: what a member asked for, what a provider says of it, and where it is shown."""

from __future__ import annotations

import enum
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal


class TaskKind(enum.StrEnum):
    DESCRIBE = "describe"
    IMAGINE = "imagine"


class ProviderStatus(enum.StrEnum):
    """What a provider says of its task; an unknown status is read as still running."""

    CREATED = "CREATED"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"


class JobState(enum.StrEnum):
    """Where a job is in its life. QUEUED and STARTING are the bot's own; the rest follow the provider."""

    QUEUED = "QUEUED"  # saved, not sent to a provider yet
    STARTING = "STARTING"  # the create request is out and its answer not yet saved
    CREATED = "CREATED"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"  # the member (or a moderator) stopped it

    @property
    def finished(self) -> bool:
        return self in (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED)

    @classmethod
    def following(cls, status: ProviderStatus) -> JobState:
        """Return the job state a provider status moves a job to."""
        return cls(status.value)


class DescribeStyle(enum.StrEnum):
    """The shape of a described prompt (the `/describe style:` choices)."""

    DETAILED = "detailed"
    SHORT = "short"
    TAGS = "tags"  # comma-separated tags in the booru manner
    MIDJOURNEY = "midjourney"  # a Midjourney-ready prompt ending in --ar from the image's shape
    STABLE_DIFFUSION = "stable-diffusion"  # a positive and a negative prompt


# The most suggestions one describe may ask for (`/describe suggestions:` 1-4).
MAX_SUGGESTIONS = 4


@dataclass(frozen=True, slots=True)
class DescribeRequest:
    """What a describe asks of its provider: the style of prompt and how many different ones."""

    style: DescribeStyle = DescribeStyle.DETAILED
    count: int = 1

    @property
    def plain(self) -> bool:
        """Whether any provider can answer it (one prompt in the default style)."""
        return self.style is DescribeStyle.DETAILED and self.count == 1


@dataclass(frozen=True, slots=True)
class Suggestion:
    """One described prompt; the Stable Diffusion style adds what the image should not have."""

    prompt: str
    negative: str | None = None


class Fault(enum.StrEnum):
    """Why a job ended without a result; decides the sentence and who pays."""

    BUSY = "busy"  # 429, 503, 5xx that did not clear with retries
    UNREACHABLE = "unreachable"  # no connection could be made: nothing reached the provider
    REJECTED = "rejected"  # 400: the provider refused this input or content (the member pays)
    MISCONFIGURED = "misconfigured"  # 401, 402, 403: the admin's key or plan
    FAILED = "failed"  # the task ended FAILED or CANCELLED
    TIMEOUT = "timeout"  # not finished within TASK_TIMEOUT_SECONDS
    LOST = "lost"  # a create whose answer never came: it may or may not exist
    UNAVAILABLE = "unavailable"  # the circuit breaker is open after repeated faults
    BAD_RESULT = "bad_result"  # the provider's answer or its generated file was unusable
    NOT_FOUND = "not_found"  # the provider no longer knows the task
    MODEL_NOT_FOUND = "model_not_found"  # the server does not have the model the bot is set to use
    MODEL_BLIND = "model_blind"  # the model cannot read images
    INCOMPATIBLE = "incompatible"  # the server does not answer like the API the bot speaks (a wrong address)

    @property
    def member_pays(self) -> bool:
        """Whether the failure was the member's doing, so the reserved task is spent."""
        return self is Fault.REJECTED


@dataclass(frozen=True, slots=True)
class ImageLimits:
    """What a provider (or Discord) accepts; larger images are downscaled and re-encoded to fit."""

    max_side: int
    max_bytes: int


@dataclass(frozen=True, slots=True)
class ImageBytes:
    """ImageBytes bytes the bot holds: checked input on its way to a provider, or a generated result."""

    data: bytes = field(repr=False)
    mime: str


@dataclass(frozen=True, slots=True)
class TaskSnapshot:
    """One observation of a provider task."""

    task_id: str
    status: ProviderStatus
    suggestions: tuple[Suggestion, ...] = ()  # describe: the result prompts
    image_urls: tuple[str, ...] = ()  # imagine: where the results are, until downloaded
    images: tuple[ImageBytes, ...] = field(default=(), repr=False)  # imagine: downloaded results


@dataclass(frozen=True, slots=True)
class TaskDuration:
    """How long one provider task took, as the bot saw it: what learned polling learns from.

    `started_at` is when the create answer came (Unix time). The other two are seconds after it: the task
    was still running `ran_for` seconds after it (the last look that found it so) and had ended
    `ended_within` seconds after it (the look that found the end). A webhook delivery is posted when the
    status changes, so it gives the moment itself.
    """

    started_at: float
    ran_for: float
    ended_within: float


ReportVia = Literal["interaction", "channel"]


@dataclass(frozen=True, slots=True)
class Route:
    """Where a job's message is, how to reach it, and in which language it is shown.

    The message is an interaction's response or a channel message. The member who asked reads it in their
    Discord language (`member_locale`); a message that belongs to no member (a result posted anew in the
    channel, the mention trigger's reply) is in the server's (`guild_locale`). Both are Discord locale codes
    ("ja", "pt-BR"), None when Discord did not say.
    """

    channel_id: int | None
    message_id: int | None = None
    application_id: int | None = None
    interaction_token: str | None = field(default=None, repr=False)
    token_created_at: float | None = None
    via: ReportVia = "interaction"
    member_locale: str | None = None
    guild_locale: str | None = None
    # Read from Discord when the request came in, for the channel's rules; not saved (the job keeps what
    # they decided).
    parent_id: int | None = field(default=None, compare=False)  # a thread's channel, whose rules it follows
    age_restricted: bool = field(default=False, compare=False)


class NoticeCode(enum.StrEnum):
    """A line shown with a result; kept as a code so it can be said in any language."""

    CACHED = "cached"  # answered from the describe cache, free
    FALLBACK = "fallback"  # params: failed, used (provider names)
    MORE_IMAGES = "more_images"  # params: count (the first three were used)


@dataclass(frozen=True, slots=True)
class Notice:
    code: NoticeCode
    params: Mapping[str, str | int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Job:
    """One member's request, as saved: the runner drives it, the reporter shows it."""

    id: str
    kind: TaskKind
    provider: str
    state: JobState
    guild_id: int
    user_id: int
    created_at: float
    updated_at: float
    route: Route
    provider_task_id: str | None = None
    reported_state: JobState | None = None
    fault: Fault | None = None
    usage_id: int | None = None
    input_hash: str | None = None
    prompt: str | None = None  # imagine: the member's prompt
    style: DescribeStyle | None = None  # describe: what was asked for
    suggestions_asked: int = 1
    suggestions: tuple[Suggestion, ...] = ()  # describe: the result
    notice: Notice | None = None
    spoiler: bool = False  # its images are shown behind a spoiler (the channel's rule)
    hidden: bool = False  # describe: a prompt has a word the server blocks, so it is shown spoilered
    dispatched_at: float | None = None  # when it left the line (None while it waits)
    started_at: float | None = None
    finished_at: float | None = None
    # Where it waits in line, counted from 1 (not saved: worked out again whenever the line moves).
    place: int | None = field(default=None, compare=False)

    @classmethod
    def new(
        cls,
        *,
        kind: TaskKind,
        provider: str,
        guild_id: int,
        user_id: int,
        route: Route,
        clock: Callable[[], float] = time.time,
        **extra: Any,
    ) -> Job:
        now = clock()
        return cls(
            id=uuid.uuid4().hex,
            kind=kind,
            provider=provider,
            state=JobState.QUEUED,
            guild_id=guild_id,
            user_id=user_id,
            created_at=now,
            updated_at=now,
            route=route,
            **extra,
        )

    @property
    def finished(self) -> bool:
        return self.state.finished

    @property
    def waiting(self) -> bool:
        """Whether it waits in line (saved, not yet handed to its provider)."""
        return self.state is JobState.QUEUED and self.dispatched_at is None

    @property
    def charged(self) -> bool:
        """Whether an ended job spends its member's reserved task (else it is given back).

        A result, a cancel once its provider had (or was about to have) the task, or the member's own fault.
        """
        return (
            self.state is JobState.COMPLETED
            or (self.state is JobState.CANCELLED and self.dispatched_at is not None)
            or (self.fault is not None and self.fault.member_pays)
        )

    @property
    def result_text(self) -> str | None:
        """Return a describe's (first) prompt."""
        return self.suggestions[0].prompt if self.suggestions else None

    @property
    def describe_request(self) -> DescribeRequest:
        return DescribeRequest(self.style or DescribeStyle.DETAILED, self.suggestions_asked)
