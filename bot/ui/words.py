"""Every sentence a member reads about tasks, inputs and failures, rendered from codes: one place to review.

Errors, notices and states reach this module as codes with parameters (`bot.domain`); `Words` turns them
into sentences in a member's locale. Templates are marked with `N_` so a translation toolchain can extract
them; `render` is the one function that picks the language (English only, until catalogues exist).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime

from bot.domain.errors import (
    BadInput,
    BotError,
    LineFull,
    ProviderError,
    QuotaExceeded,
    Refusal,
    ShuttingDown,
    StorageFull,
)
from bot.domain.tasks import DescribeStyle, Fault, JobState, Notice, NoticeCode, TaskKind

DEFAULT_LOCALE = "en-US"


def N_(template: str) -> str:
    """Mark a template for translation; it is rendered later, in the reader's locale."""
    return template


def render(template: str, locale: str | None = None, **params: object) -> str:
    """Say one template in `locale`, with its parameters filled in (every locale is English for now)."""
    return template.format(**params)


ACCEPTED_FORMATS = "PNG, JPEG, WebP or GIF"

STATE_WORDS = {
    JobState.QUEUED: N_("Queued"),
    JobState.STARTING: N_("Sending to the provider"),
    JobState.CREATED: N_("Task created, waiting for the provider"),
    JobState.IN_PROGRESS: N_("In progress"),
    JobState.COMPLETED: N_("Done"),
    JobState.FAILED: N_("Failed"),
    JobState.CANCELLED: N_("Cancelled"),
}
# A waiting job's state, with its place: exact near the front, rounded ("about 50th") further back.
QUEUED_AT = N_("Queued · {place} in line")
QUEUED_ABOUT = N_("Queued · about {place} in line")
EXACT_PLACES = 10
KIND_NAMES = {TaskKind.DESCRIBE: N_("Image to prompt"), TaskKind.IMAGINE: N_("Image generation")}
KIND_UNIT = {TaskKind.DESCRIBE: N_("description"), TaskKind.IMAGINE: N_("generation")}
KIND_UNITS = {TaskKind.DESCRIBE: N_("descriptions"), TaskKind.IMAGINE: N_("generations")}
# The `/describe style:` choices as members read them (the values are the contract's names).
STYLE_NAMES = {
    DescribeStyle.DETAILED: N_("Detailed"),
    DescribeStyle.SHORT: N_("Short"),
    DescribeStyle.TAGS: N_("Tags (booru style)"),
    DescribeStyle.MIDJOURNEY: N_("Midjourney (with --ar)"),
    DescribeStyle.STABLE_DIFFUSION: N_("Stable Diffusion (with a negative prompt)"),
}
NEGATIVE_PROMPT = N_("Negative prompt")
SUGGESTION_NUMBER = N_("Suggestion {number}")
# What the bot cannot do for want of a provider, by kind.
KIND_ABILITIES = {TaskKind.DESCRIBE: N_("image to prompt"), TaskKind.IMAGINE: N_("image generation")}

REFUSALS: dict[Refusal, str] = {
    Refusal.IMAGE_EMPTY: N_("That file is empty; send a {formats} image."),
    Refusal.IMAGE_NOT_AN_IMAGE: N_("That file is not an image I can read; send a {formats}."),
    Refusal.IMAGE_DAMAGED: N_("That image is damaged or incomplete; send the file again or try another one."),
    Refusal.IMAGE_IS_SVG: N_("That file is an SVG drawing, not a picture; export it as a PNG and send that."),
    Refusal.IMAGE_IS_HTML: N_(
        "That is a web page, not a picture; send the image itself or a direct link to it."
    ),
    Refusal.IMAGE_IS_PDF: N_("That file is a PDF document, not a picture; send a {formats} instead."),
    Refusal.IMAGE_IS_HEIC: N_(
        "That file is a HEIC photo, which I cannot read; send it as a JPEG or PNG instead."
    ),
    Refusal.IMAGE_IS_VIDEO: N_("That file is a video, not a picture; send a {formats} instead."),
    Refusal.IMAGE_WRONG_FORMAT: N_("That file is {format_name} image; send a {formats}."),
    Refusal.IMAGE_TOO_LARGE: N_("That image is larger than {size}; send a smaller one."),
    Refusal.IMAGE_TOO_MANY_PIXELS: N_(
        "That image is larger than {megapixels} megapixels; send a smaller one."
    ),
    Refusal.IMAGE_CANNOT_SHRINK: N_("That image cannot be made small enough to pass on; send a smaller one."),
    Refusal.IMAGE_METADATA_TOO_LARGE: N_(
        "That image carries an unusually large block of hidden text (metadata) that I will not unpack; "
        "save it again without metadata, or send a screenshot of it."
    ),
    Refusal.ATTACHMENT_UNREADABLE: N_("Discord could not hand me that attachment; upload it again."),
    Refusal.LINK_INVALID: N_(
        "That link is not a valid web address; send one that starts with http:// or https://."
    ),
    Refusal.LINK_NOT_WEB: N_("That link is not a web link; send one that starts with http:// or https://."),
    Refusal.LINK_HAS_CREDENTIALS: N_("That link contains a user name or password; send a link without them."),
    Refusal.LINK_NOT_PUBLIC: N_(
        "That link points to a private or local network address; send a link to a public website."
    ),
    Refusal.LINK_HOST_NOT_FOUND: N_(
        "That link's website could not be found; check the address and try again."
    ),
    Refusal.LINK_UNREACHABLE: N_(
        "That link could not be reached; check it or send the image as an attachment."
    ),
    Refusal.LINK_TOO_SLOW: N_(
        "That link took too long to answer; try again later or send the image as an attachment."
    ),
    Refusal.LINK_TOO_MANY_REDIRECTS: N_(
        "That link redirects too many times; send the direct link to the image instead."
    ),
    Refusal.LINK_BAD_REDIRECT: N_(
        "That link redirects to something that is not a web page; send the direct link to the image."
    ),
    Refusal.LINK_HTTP_STATUS: N_(
        "That link answered with status {status} instead of an image; "
        "check the link or send the image as an attachment."
    ),
    Refusal.LINK_TOO_LARGE: N_("That link's file is larger than {size}; send a smaller image."),
    Refusal.BOTH_IMAGE_AND_URL: N_("Give either an image or a URL, not both."),
    Refusal.NEITHER_IMAGE_NOR_URL: N_("Attach an image or give a URL to describe."),
    Refusal.EMPTY_PROMPT: N_("The prompt is empty; describe the image you want."),
    Refusal.TOO_MANY_REFERENCES: N_("The message has {count} images; the first three were used."),
    Refusal.NO_IMAGE_IN_MESSAGE: N_(
        "That message has no image to use; pick a message with an attached or embedded image."
    ),
    Refusal.PROVIDER_NOT_CONFIGURED: N_(
        "{provider} is not set up on this bot; leave the provider option empty to use {default}."
    ),
    Refusal.NO_PROVIDER_FOR_KIND: N_("No provider for {ability} is set up on this bot; ask a server admin."),
    Refusal.STYLE_NEEDS_OTHER_PROVIDER: N_(
        "{provider} gives one detailed prompt only; for another style or several suggestions, choose {capable} "
        "in the provider option."
    ),
    Refusal.NO_PROVIDER_FOR_STYLES: N_(
        "{provider} gives one detailed prompt only, and no provider on this bot gives more; ask a server admin "
        "to add a vision model for styles and suggestions."
    ),
    Refusal.TOO_MANY_SUGGESTIONS: N_("Ask for 1 to {most} suggestions."),
    Refusal.JOB_GONE: N_("This result is too old to act on; run the command again."),
    Refusal.ONLY_INVOKER: N_("Only the member who asked can use this."),
    Refusal.MISSING_CHANNEL_PERMISSION: N_(
        "I cannot post in this channel (missing permission); ask an admin to let me send messages and "
        "embeds here."
    ),
    Refusal.COMMAND_DISABLED: N_("This command is not available here."),
    Refusal.SERVERS_ONLY: N_("This command works in servers only."),
    Refusal.NEEDS_MANAGE_SERVER: N_("Only members with the Manage Server permission can change quotas here."),
    Refusal.NEEDS_ROLE: N_("Pick the role this limit is for (the role option)."),
    Refusal.NEEDS_USER: N_("Pick the member this limit is for (the user option)."),
    Refusal.NEEDS_LIMIT: N_("Give a limit (0 blocks, -1 is unlimited), or set clear to remove this rule."),
    Refusal.COMMAND_OFF_HERE: N_("/{kind} is switched off in this channel; use it in {channels}."),
    Refusal.COMMAND_OFF_HERE_ONLY: N_("/{kind} is switched off in this channel; use it in another channel."),
    Refusal.COMMAND_OFF_EVERYWHERE: N_("/{kind} is switched off in every channel of this server."),
    Refusal.BLOCKED_WORDS: N_(
        "This prompt contains a word or phrase this server does not allow; reword it (this did not use your "
        "quota)."
    ),
    Refusal.NOT_YOURS_TO_CANCEL: N_(
        "Only the member who asked, or a member who may manage messages, can cancel this task."
    ),
    Refusal.ALREADY_ENDED: N_("This task has already ended; there is nothing to cancel."),
    Refusal.FORGET_WHILE_RUNNING: N_(
        "You have {count} tasks running or waiting on this server; cancel them or let them finish, then ask "
        "again."
    ),
    Refusal.NEEDS_MANAGE_SERVER_RULES: N_(
        "Only members with the Manage Server permission can change the rules here."
    ),
    Refusal.NEEDS_WORDS: N_("Give at least one word or phrase (separate several with commas)."),
}

FAULTS: dict[Fault, str] = {
    Fault.BUSY: N_("{provider} is busy right now; try again in a minute (this did not use your quota)."),
    Fault.UNREACHABLE: N_(
        "{provider} cannot be reached right now; try again in a few minutes (this did not use your quota)."
    ),
    Fault.REJECTED: N_("{provider} refused this request{detail}; try a different image or prompt."),
    Fault.MISCONFIGURED: N_(
        "The bot is misconfigured: {provider} rejected its API key or plan; please tell a server admin "
        "(this did not use your quota)."
    ),
    Fault.FAILED: N_(
        "{provider} could not finish this task; try again or with another image (this did not use your quota)."
    ),
    Fault.TIMEOUT: N_(
        "{provider} took too long and the task was given up; try again later (this did not use your quota)."
    ),
    Fault.LOST: N_(
        "The answer from {provider} never came, so the task may or may not have started; it was given up "
        "and did not use your quota."
    ),
    Fault.UNAVAILABLE: N_(
        "{provider} is failing at the moment and is paused for a short while; try again in a few minutes "
        "(this did not use your quota)."
    ),
    Fault.BAD_RESULT: N_(
        "{provider} finished but its result could not be used; try again (this did not use your quota)."
    ),
    Fault.NOT_FOUND: N_("{provider} no longer knows this task; try again (this did not use your quota)."),
    Fault.MODEL_NOT_FOUND: N_(
        "The bot is misconfigured: {provider} does not have the model the bot asks for; please tell a server "
        "admin (this did not use your quota)."
    ),
    Fault.MODEL_BLIND: N_(
        "The bot is misconfigured: the model behind {provider} cannot read images; please tell a server admin "
        "(this did not use your quota)."
    ),
    Fault.INCOMPATIBLE: N_(
        "The bot is misconfigured: {provider} does not answer the way the bot expects; please tell a server "
        "admin (this did not use your quota)."
    ),
}

NOTICES: dict[NoticeCode, str] = {
    NoticeCode.CACHED: N_("Answered from the cache: this image was described recently, so it cost nothing."),
    NoticeCode.FALLBACK: N_("{failed} was unavailable, so {used} answered instead."),
    NoticeCode.MORE_IMAGES: N_("The message has {count} images; the first three were used."),
}

QUOTA_OFF = N_("{kind} is switched off for you on this server.")
QUOTA_USED_ONE = N_("You have used your {unit} for today; your quota renews {renews}.")
QUOTA_USED_ALL = N_("You have used all {limit} {units} for today; your quota renews {renews}.")
LINE_FULL = N_(
    "{provider} already has {waiting} tasks waiting in line, the most this bot lets wait; try again in a few "
    "minutes (this did not use your quota)."
)
SHUTTING_DOWN = N_("The bot is restarting; try again in a minute.")
STORAGE_FULL = N_(
    "The bot cannot save anything right now (its disk is full), so this did not run and did not use your "
    "quota; please tell a server admin."
)
# Cancelling a task.
CANCEL_LABEL = N_("Cancel")
CANCEL_ANYWAY_LABEL = N_("Cancel anyway")
CANCEL_WILL_COUNT = N_(
    "{provider} is already working on this task and charges for it, so it still counts against the quota "
    "if you cancel it now. Cancel it anyway?"
)
CANCELLED_FREE = N_("Cancelled; it did not count against the quota.")
CANCELLED_SPENT = N_("Cancelled; it counted against the quota, since {provider} had already taken it.")
CANCELLED_WAITING_NOTE = N_("Cancelled while waiting in line; it did not count against the quota.")
CANCELLED_RUNNING_NOTE = N_("Cancelled after {provider} had taken it; it counted against the quota.")
# A describe result with a word the server blocks is shown behind spoilers, with this note.
HIDDEN_NOTE = N_("A word in this prompt is on this server's blocklist, so it is hidden behind a spoiler.")
# /forget-me
FORGET_ASK = N_(
    "This deletes what the bot keeps about you on this server: your tasks, their images, the prompts of "
    "images you sent, and your user id on usage rows (the rows stay, without it; today's use still counts "
    "toward today's quota). It cannot be undone."
)
FORGET_LABEL = N_("Forget me")
FORGOTTEN = N_(
    "Done. Deleted {tasks} tasks, {images} stored images and {prompts} cached prompts, and removed your "
    "user id from {usage} usage rows."
)
# /rules
RULES_CHANNEL_SET = N_("{channel}: /describe {describe}, /imagine {imagine}; spoilers: {spoilers}.")
RULES_SERVER_DEFAULT = N_("Channels without their own rule")
RULE_ON = N_("on")
RULE_OFF = N_("off")
SPOILER_RULES = {
    "off": N_("never"),
    "outside-age-restricted": N_("outside age-restricted channels"),
    "always": N_("always"),
}
RULES_NO_CHANNELS = N_("Every channel allows /describe and /imagine, with no spoilers.")
RULES_CHANNELS_TITLE = N_("Channels")
RULES_BLOCKLIST_TITLE = N_("Blocked words and phrases")
RULES_BLOCKLIST_EMPTY = N_("None.")
BLOCKLIST_ADDED = N_("Added {added} to the blocklist ({total} in all).")
BLOCKLIST_REMOVED = N_("Removed {removed} from the blocklist ({total} left).")
UNEXPECTED = N_("Something went wrong on the bot's side; the admin can find the details in its log.")
RESULT_MESSAGE_DELETED = N_("{mention}, your result is here (the original message was deleted):")
PICK_IMAGE = N_("This message has {count} images; pick the one to describe.")
PICK_PLACEHOLDER = N_("Choose an image")
IMAGINE_MODAL_TITLE = N_("Edit image")
IMAGINE_MODAL_LABEL = N_("What should change?")
IMAGINE_MODAL_PLACEHOLDER = N_("e.g. make it a watercolour painting at sunset")

# Pillow's format names, spelt the way a member knows them, with their article.
_FORMAT_NAMES = {
    "BMP": "a BMP",
    "DIB": "a BMP",
    "TIFF": "a TIFF",
    "ICO": "an ICO icon",
    "ICNS": "an ICNS icon",
    "CUR": "a cursor",
    "PSD": "a Photoshop (PSD)",
    "JPEG2000": "a JPEG 2000",
    "AVIF": "an AVIF",
    "EPS": "an EPS",
    "TGA": "a TGA",
    "PCX": "a PCX",
    "PPM": "a PPM",
    "QOI": "a QOI",
    "DDS": "a DDS",
    "SGI": "an SGI",
    "XBM": "an XBM",
    "XPM": "an XPM",
    "WMF": "a WMF",
    "EMF": "an EMF",
}
# Letters whose spoken name starts with a vowel sound ("an SVG", "an MPO").
_VOWEL_SOUND_LETTERS = frozenset("AEFHILMNORSX")


def megabytes(n_bytes: int) -> str:
    """Return a byte limit in MB, rounded down so the stated limit is never too generous."""
    if n_bytes < 1_000_000:  # only tests and odd configurations have limits this small
        return f"{n_bytes // 1000} KB" if n_bytes >= 1000 else f"{n_bytes} bytes"
    tenths = math.floor(n_bytes / 100_000)
    return f"{tenths // 10} MB" if tenths % 10 == 0 else f"{tenths / 10:.1f} MB"


def format_name(pillow_format: str) -> str:
    """Name an image format the way a member knows it, with its article ("a TIFF", "an AVIF")."""
    name = _FORMAT_NAMES.get(pillow_format)
    if name is None:
        article = "an" if pillow_format[:1].upper() in _VOWEL_SOUND_LETTERS else "a"
        name = f"{article} {pillow_format}"
    return name


def relative_time(moment: datetime | float) -> str:
    """Return a Discord timestamp that every client renders live, in the reader's own language."""
    seconds = moment.timestamp() if isinstance(moment, datetime) else moment
    return f"<t:{int(seconds)}:R>"


class Words:
    """The sentences of one reader: their locale, and the names members see for the providers."""

    def __init__(self, locale: str | None = None, provider_labels: Mapping[str, str] | None = None) -> None:
        self.locale = locale or DEFAULT_LOCALE
        self._labels = dict(provider_labels or {})

    def say(self, template: str, **params: object) -> str:
        return render(template, self.locale, **params)

    def provider(self, name: str) -> str:
        return self._labels.get(name, name.title())

    def kind(self, kind: TaskKind) -> str:
        return self.say(KIND_NAMES[kind])

    def state(self, state: JobState, place: int | None = None) -> str:
        if state is JobState.QUEUED and place is not None:
            template = QUEUED_AT if place <= EXACT_PLACES else QUEUED_ABOUT
            return self.say(template, place=self.ordinal(place))
        return self.say(STATE_WORDS[state])

    def ordinal(self, number: int) -> str:
        """Say a place in line: 1st, 2nd, 3rd, 11th, 22nd."""
        suffix = "th" if 10 <= number % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(number % 10, "th")
        return f"{number}{suffix}"

    def refusal(self, refusal: Refusal, params: Mapping[str, str | int] | None = None) -> str:
        values: dict[str, object] = {"formats": ACCEPTED_FORMATS, **(params or {})}
        if "max_bytes" in values:
            values["size"] = megabytes(int(values["max_bytes"]))  # type: ignore[call-overload]
        if "max_pixels" in values:
            values["megapixels"] = int(values["max_pixels"]) // 1_000_000  # type: ignore[call-overload]
        if "format" in values:
            values["format_name"] = format_name(str(values["format"]))
        for key in ("provider", "default", "capable"):
            if key in values:
                values[key] = self.provider(str(values[key]))
        if "kind" in values and str(values["kind"]) in set(TaskKind):
            values["ability"] = self.say(KIND_ABILITIES[TaskKind(str(values["kind"]))])
        return self.say(REFUSALS[refusal], **values)

    def fault(self, provider: str, fault: Fault, detail: str = "") -> str:
        # The provider's own reason for a refusal helps the member change their input; it stays as it came.
        shown = f" ({detail})" if detail and fault is Fault.REJECTED else ""
        return self.say(FAULTS[fault], provider=self.provider(provider), detail=shown)

    def notice(self, notice: Notice) -> str:
        params = dict(notice.params)
        for key in ("failed", "used"):
            if key in params:
                params[key] = self.provider(str(params[key]))
        return self.say(NOTICES[notice.code], **params)

    def quota_exceeded(self, kind: TaskKind, limit: int, renews_at: datetime) -> str:
        if limit <= 0:
            return self.say(QUOTA_OFF, kind=self.kind(kind))
        renews = relative_time(renews_at)
        if limit == 1:
            return self.say(QUOTA_USED_ONE, unit=self.say(KIND_UNIT[kind]), renews=renews)
        return self.say(QUOTA_USED_ALL, limit=limit, units=self.say(KIND_UNITS[kind]), renews=renews)

    def error(self, error: BaseException) -> str:
        """Turn any error that reached the member into one sentence."""
        if isinstance(error, BadInput):
            return self.refusal(error.refusal, error.params)
        if isinstance(error, QuotaExceeded):
            return self.quota_exceeded(error.kind, error.limit, error.renews_at)
        if isinstance(error, LineFull):
            return self.say(LINE_FULL, provider=self.provider(error.provider), waiting=error.waiting)
        if isinstance(error, ProviderError):
            return self.fault(error.provider, error.fault, error.detail)
        if isinstance(error, StorageFull):
            return self.say(STORAGE_FULL)
        if isinstance(error, ShuttingDown):
            return self.say(SHUTTING_DOWN)
        if isinstance(error, BotError):
            return str(error)
        return self.say(UNEXPECTED)
