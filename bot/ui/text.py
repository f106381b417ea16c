"""Every sentence a member or admin reads about tasks, quotas and failures: one place to review."""

from __future__ import annotations

from datetime import datetime

from bot.errors import (
    BadInput,
    BotError,
    ProviderError,
    ProviderFault,
    QuotaExceeded,
    StorageFull,
    TooManyInFlight,
)
from bot.providers.base import TaskKind, TaskState

PROVIDER_NAMES = {"freepik": "Freepik", "novita": "Novita"}

STATE_WORDS = {
    TaskState.QUEUED: "Queued",
    TaskState.STARTING: "Sending to the provider",
    TaskState.CREATED: "Task created, waiting for the provider",
    TaskState.IN_PROGRESS: "In progress",
    TaskState.COMPLETED: "Done",
    TaskState.FAILED: "Failed",
}

KIND_NAMES = {TaskKind.DESCRIBE: "Image to prompt", TaskKind.IMAGINE: "Image generation"}
KIND_UNIT = {TaskKind.DESCRIBE: "description", TaskKind.IMAGINE: "generation"}
KIND_UNITS = {TaskKind.DESCRIBE: "descriptions", TaskKind.IMAGINE: "generations"}


def provider_name(name: str) -> str:
    return PROVIDER_NAMES.get(name, name.title())


def relative_time(moment: datetime | float) -> str:
    """Return a Discord timestamp that every client renders live as 'in 3 hours' or '2 minutes ago'."""
    seconds = moment.timestamp() if isinstance(moment, datetime) else moment
    return f"<t:{int(seconds)}:R>"


def fault_sentence(error: ProviderError) -> str:
    """Say in one sentence what happened with the provider and what to do."""
    name = provider_name(error.provider)
    sentences = {
        ProviderFault.BUSY: f"{name} is busy right now; try again in a minute (this did not use your quota).",
        ProviderFault.UNREACHABLE: f"{name} cannot be reached right now; try again in a few minutes "
        "(this did not use your quota).",
        ProviderFault.REJECTED: f"{name} refused this request"
        + (f" ({error.detail})" if error.detail else "")
        + "; try a different image or prompt.",
        ProviderFault.MISCONFIGURED: f"The bot is misconfigured: {name} rejected its API key or plan; "
        "please tell a server admin (this did not use your quota).",
        ProviderFault.FAILED: f"{name} could not finish this task; try again or with another image "
        "(this did not use your quota).",
        ProviderFault.TIMEOUT: f"{name} took too long and the task was given up; try again later "
        "(this did not use your quota).",
        ProviderFault.LOST: f"The answer from {name} never came, so the task may or may not have started; "
        "it was given up and did not use your quota.",
        ProviderFault.UNAVAILABLE: f"{name} is failing at the moment and is paused for a short while; "
        "try again in a few minutes (this did not use your quota).",
        ProviderFault.BAD_RESULT: f"{name} finished but its result could not be used; try again "
        "(this did not use your quota).",
        ProviderFault.NOT_FOUND: f"{name} no longer knows this task; try again (this did not use your quota).",
    }
    return sentences[error.fault]


def error_sentence(error: BaseException) -> str:
    """Turn any error that reached the member into one sentence."""
    if isinstance(error, BadInput):
        return error.reason
    if isinstance(error, QuotaExceeded):
        return quota_exceeded(TaskKind(error.kind), error.limit, error.renews_at)
    if isinstance(error, TooManyInFlight):
        if error.scope == "user":
            return f"You already have {error.limit} tasks running; wait for one to finish, then ask again."
        return "The bot is at its limit of running tasks for this provider; try again in a minute."
    if isinstance(error, ProviderError):
        return fault_sentence(error)
    if isinstance(error, StorageFull):
        return STORAGE_FULL
    if isinstance(error, BotError):
        return str(error)
    return "Something went wrong on the bot's side; the admin can find the details in its log."


def quota_exceeded(kind: TaskKind, limit: int, renews_at: datetime) -> str:
    if limit <= 0:
        return f"{KIND_NAMES[kind]} is switched off for you on this server."
    used = f"your {KIND_UNIT[kind]}" if limit == 1 else f"all {limit} {KIND_UNITS[kind]}"
    return f"You have used {used} for today; your quota renews {relative_time(renews_at)}."


PROVIDER_NOT_CONFIGURED = (
    "{name} is not set up on this bot; leave the provider option empty to use {default}."
)
NO_PROVIDER_FOR_KIND = "No provider for {what} is set up on this bot; ask a server admin."
BOTH_IMAGE_AND_URL = "Give either an image or a URL, not both."
NEITHER_IMAGE_NOR_URL = "Attach an image or give a URL to describe."
EMPTY_PROMPT = "The prompt is empty; describe the image you want."
NO_IMAGE_IN_MESSAGE = "That message has no image to use; pick a message with an attached or embedded image."
ONLY_INVOKER = "Only the member who asked can use this."
JOB_GONE = "This result is too old to act on; run the command again."
CACHED_NOTICE = "Answered from the cache: this image was described recently, so it cost nothing."
FALLBACK_NOTICE = "{failed} was unavailable, so {used} answered instead."
MORE_IMAGES_NOTICE = "The message has {count} images; the first three were used."
COMMAND_DISABLED = "This command is not available here."
SHUTTING_DOWN = "The bot is restarting; try again in a minute."
STORAGE_FULL = (
    "The bot cannot save anything right now (its disk is full), so this did not run and did not use your "
    "quota; please tell a server admin."
)
DM_ONLY_SERVER = "This command works in servers only."
MISSING_CHANNEL_PERMISSION = "I cannot post in this channel (missing permission); ask an admin to let me send messages and embeds here."
RESULT_MESSAGE_DELETED = "{mention}, your result is here (the original message was deleted):"
PICK_IMAGE = "This message has {count} images; pick the one to describe."
PICK_PLACEHOLDER = "Choose an image"
IMAGINE_MODAL_TITLE = "Edit image"
IMAGINE_MODAL_LABEL = "What should change?"
IMAGINE_MODAL_PLACEHOLDER = "e.g. make it a watercolour painting at sunset"
