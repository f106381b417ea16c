"""Quotas: who asks, the rule that resolves a member's daily limit, and what a usage report holds."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, NotRequired, TypedDict

from bot.domain.tasks import TaskKind

UNLIMITED = -1
LimitScope = Literal["server", "role", "user"]
# A scope's precedence: a user override beats any role, a role beats the server's limit.
SCOPES: tuple[LimitScope, ...] = ("user", "role", "server")


def check_limit(scope: str, limit: int | None) -> None:
    """Refuse a limit rule no store may keep: an unknown scope, or a limit below UNLIMITED (None removes one)."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")
    if limit is not None and limit < UNLIMITED:
        raise ValueError(f"a daily limit is {UNLIMITED} (unlimited) or more, not {limit}")


class LedgerSettings(TypedDict):
    """What a quota ledger enforces, whichever store keeps it: every ledger takes these as keyword arguments."""

    defaults: Mapping[TaskKind, int]  # the daily limit of each kind where no rule sets one
    max_inflight_per_provider: int
    reservation_ttl: float  # a reservation older than this belongs to a task that can no longer be running
    max_queue_per_provider: NotRequired[int]  # 0 (the default): past the in-flight cap a task is refused


# The columns of a usage report's rows (and of its CSV), in order.
USAGE_COLUMNS = (
    "id",
    "day",
    "user_id",
    "kind",
    "provider",
    "provider_task_id",
    "state",
    "outcome",
    "forgiven",
    "started_at",
    "ended_at",
)


@dataclass(frozen=True, slots=True)
class Member:
    """Who asks: quotas are kept per server (guild 0 is direct messages)."""

    guild_id: int
    user_id: int
    role_ids: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Reservation:
    """One task held for a member until it is committed (spent) or refunded."""

    usage_id: int


@dataclass(frozen=True, slots=True)
class KindStatus:
    """One kind's standing for a member today."""

    kind: TaskKind
    limit: int  # the resolved daily limit plus today's grants; UNLIMITED when there is none
    used: int  # spent today, plus what is running now
    renews_at: datetime
    source: str  # which rule gave the limit: user, role, server or default
    granted: int = 0  # extra tasks granted for today, already part of `limit`

    @property
    def left(self) -> int | None:
        return None if self.limit == UNLIMITED else max(0, self.limit - self.used)


@dataclass(frozen=True, slots=True)
class UsageLine:
    """One kind and provider's tasks over a report's period."""

    kind: str
    provider: str
    completed: int  # finished with a result the member was charged for
    failed: int  # ended without a result: refunded, or spent when the provider rejected the input
    refunded: int  # of the failed, those given back to the member
    cached: int  # answered from the describe cache, free
    running: int  # still reserved


@dataclass(frozen=True, slots=True)
class UsageReport:
    guild_id: int
    since: datetime
    until: datetime
    lines: list[UsageLine]
    top_members: list[tuple[int, int]]  # (user id, tasks spent)
    rows: list[dict[str, object]]  # every usage row of the period, for the CSV (USAGE_COLUMNS)


def utc_day(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).date().isoformat()


def next_utc_midnight(timestamp: float) -> datetime:
    today = datetime.fromtimestamp(timestamp, UTC).date()
    return datetime.combine(today + timedelta(days=1), datetime.min.time(), tzinfo=UTC)


def resolve_limit(limits: Iterable[tuple[str, int, int]], member: Member, default: int) -> tuple[int, str]:
    """Pick the member's limit from (scope, target id, limit) rows: user, else best role, else server."""
    by_scope: dict[str, list[int]] = {scope: [] for scope in SCOPES}
    for scope, target, value in limits:
        if (
            (scope == "user" and target == member.user_id)
            or (scope == "role" and target in member.role_ids)
            or (scope == "server" and target == member.guild_id)
        ):
            by_scope[scope].append(value)
    for scope in SCOPES:
        values = by_scope[scope]
        if values:
            # Among several roles the most generous wins; unlimited beats any number.
            return (UNLIMITED if UNLIMITED in values else max(values)), scope
    return default, "default"


def kind_status(kind: TaskKind, limit: int, source: str, used: int, granted: int, now: float) -> KindStatus:
    """Combine a resolved limit with today's use and grants."""
    if limit != UNLIMITED:
        limit += granted
    return KindStatus(kind, limit, used, next_utc_midnight(now), source, granted)
