"""The few exceptions whose meaning a member may be shown; `bot.ui.text` words them."""

from __future__ import annotations

import enum
from datetime import datetime


class StartupError(Exception):
    """A fault the admin must fix before the bot can run; the text is one line naming the setting."""


class BotError(Exception):
    """An expected failure that ends a request with one sentence to the member."""


class BadInput(BotError):
    """The member's input cannot be used; nothing was spent."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class QuotaExceeded(BotError):
    """The member has no tasks of this kind left today."""

    def __init__(self, kind: str, limit: int, renews_at: datetime) -> None:
        super().__init__(f"{kind} quota of {limit} used")
        self.kind = kind
        self.limit = limit
        self.renews_at = renews_at


class TooManyInFlight(BotError):
    """The member, or the provider, already has as many running tasks as allowed."""

    def __init__(self, scope: str, limit: int) -> None:
        super().__init__(f"{scope} has {limit} tasks running")
        self.scope = scope  # "user" or "provider"
        self.limit = limit


class StorageFull(BotError):
    """The database could not be written (disk full or failing); the task in hand is refunded."""


class ProviderFault(enum.StrEnum):
    """Why a provider could not give a result; decides the sentence and who pays."""

    BUSY = "busy"  # 429, 503, 5xx that did not clear with retries
    UNREACHABLE = "unreachable"  # no connection could be made: nothing reached the provider
    REJECTED = "rejected"  # 400: the provider refused this input or content
    MISCONFIGURED = "misconfigured"  # 401, 402, 403: the admin's key or plan
    FAILED = "failed"  # the task ended FAILED or CANCELLED
    TIMEOUT = "timeout"  # not finished within TASK_TIMEOUT_SECONDS
    LOST = "lost"  # a create whose answer never came: it may or may not exist
    UNAVAILABLE = "unavailable"  # the circuit breaker is open after repeated faults
    BAD_RESULT = "bad_result"  # the provider's answer or its generated file was unusable
    NOT_FOUND = "not_found"  # the provider no longer knows the task


class ProviderError(BotError):
    """A provider request or task that ended without a result."""

    def __init__(
        self,
        provider: str,
        fault: ProviderFault,
        detail: str = "",
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{provider}: {fault.value}" + (f" ({detail})" if detail else ""))
        self.provider = provider
        self.fault = fault
        self.detail = detail
        self.status = status
        self.retry_after = retry_after

    @property
    def member_pays(self) -> bool:
        """Whether the failure was the member's doing, so the reserved task is spent."""
        return self.fault is ProviderFault.REJECTED
