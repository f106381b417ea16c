"""Every error a member or an admin can be shown, as a code plus parameters; `bot.ui` words them."""

from __future__ import annotations

import enum
from datetime import datetime

from bot.domain.tasks import Fault, TaskKind


class StartupError(Exception):
    """A fault the admin must fix before the bot can run; the text is one line naming the setting."""


class BotError(Exception):
    """An expected failure that ends a request with one sentence to the member."""


class Refusal(enum.StrEnum):
    """Why a member's input or request cannot be used; nothing was spent. Parameters in comments."""

    # images
    IMAGE_EMPTY = "image_empty"
    IMAGE_NOT_AN_IMAGE = "image_not_an_image"
    IMAGE_DAMAGED = "image_damaged"
    IMAGE_IS_SVG = "image_is_svg"
    IMAGE_IS_HTML = "image_is_html"
    IMAGE_IS_PDF = "image_is_pdf"
    IMAGE_IS_HEIC = "image_is_heic"
    IMAGE_IS_VIDEO = "image_is_video"
    IMAGE_WRONG_FORMAT = "image_wrong_format"  # format: Pillow's name for it
    IMAGE_TOO_LARGE = "image_too_large"  # max_bytes
    IMAGE_TOO_MANY_PIXELS = "image_too_many_pixels"  # max_pixels
    IMAGE_CANNOT_SHRINK = "image_cannot_shrink"
    IMAGE_METADATA_TOO_LARGE = "image_metadata_too_large"
    ATTACHMENT_UNREADABLE = "attachment_unreadable"
    # links
    LINK_INVALID = "link_invalid"
    LINK_NOT_WEB = "link_not_web"
    LINK_HAS_CREDENTIALS = "link_has_credentials"
    LINK_NOT_PUBLIC = "link_not_public"
    LINK_HOST_NOT_FOUND = "link_host_not_found"
    LINK_UNREACHABLE = "link_unreachable"
    LINK_TOO_SLOW = "link_too_slow"
    LINK_TOO_MANY_REDIRECTS = "link_too_many_redirects"
    LINK_BAD_REDIRECT = "link_bad_redirect"
    LINK_HTTP_STATUS = "link_http_status"  # status
    LINK_TOO_LARGE = "link_too_large"  # max_bytes
    # requests
    BOTH_IMAGE_AND_URL = "both_image_and_url"
    NEITHER_IMAGE_NOR_URL = "neither_image_nor_url"
    EMPTY_PROMPT = "empty_prompt"
    TOO_MANY_REFERENCES = "too_many_references"  # count
    NO_IMAGE_IN_MESSAGE = "no_image_in_message"
    PROVIDER_NOT_CONFIGURED = "provider_not_configured"  # provider, default (provider names)
    NO_PROVIDER_FOR_KIND = "no_provider_for_kind"  # kind
    STYLE_NEEDS_OTHER_PROVIDER = "style_needs_other_provider"  # provider, capable (provider names)
    NO_PROVIDER_FOR_STYLES = "no_provider_for_styles"  # provider
    TOO_MANY_SUGGESTIONS = "too_many_suggestions"  # most
    JOB_GONE = "job_gone"
    ONLY_INVOKER = "only_invoker"
    MISSING_CHANNEL_PERMISSION = "missing_channel_permission"
    COMMAND_DISABLED = "command_disabled"
    SERVERS_ONLY = "servers_only"
    # a server's rules and a member's own data
    COMMAND_OFF_HERE = "command_off_here"  # kind, channels (mentions of channels that allow it)
    COMMAND_OFF_HERE_ONLY = "command_off_here_only"  # kind (channels without their own rule allow it)
    COMMAND_OFF_EVERYWHERE = "command_off_everywhere"  # kind
    BLOCKED_WORDS = "blocked_words"
    NOT_YOURS_TO_CANCEL = "not_yours_to_cancel"
    ALREADY_ENDED = "already_ended"
    FORGET_WHILE_RUNNING = "forget_while_running"
    NEEDS_MANAGE_SERVER_RULES = "needs_manage_server_rules"
    NEEDS_WORDS = "needs_words"
    # quota administration
    NEEDS_MANAGE_SERVER = "needs_manage_server"
    NEEDS_ROLE = "needs_role"
    NEEDS_USER = "needs_user"
    NEEDS_LIMIT = "needs_limit"


class BadInput(BotError):
    """The member's input or request cannot be used; nothing was spent."""

    def __init__(self, refusal: Refusal, **params: str | int) -> None:
        super().__init__(refusal.value)
        self.refusal = refusal
        self.params = params


class QuotaExceeded(BotError):
    """The member has no tasks of this kind left today."""

    def __init__(self, kind: TaskKind, limit: int, renews_at: datetime) -> None:
        super().__init__(f"{kind.value} quota of {limit} used")
        self.kind = kind
        self.limit = limit
        self.renews_at = renews_at


class LineFull(BotError):
    """The provider's line is full: MAX_INFLIGHT_PER_PROVIDER running and MAX_QUEUE_PER_PROVIDER waiting."""

    def __init__(self, provider: str, waiting: int) -> None:
        super().__init__(f"{provider}: {waiting} tasks waiting")
        self.provider = provider
        self.waiting = waiting


class ProviderError(BotError):
    """A provider request or task that ended without a result."""

    def __init__(
        self,
        provider: str,
        fault: Fault,
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


class StorageFull(BotError):
    """The database could not be written (disk full or failing); the task in hand is refunded."""


class StoreUnavailable(Exception):
    """The database server cannot be reached just now; the job in hand keeps its saved state."""


class LeaseLost(Exception):
    """Another process drives this job now (this process's lease on it ran out): this one must stop."""


class ShuttingDown(BotError):
    """The bot is stopping and takes no new tasks."""
