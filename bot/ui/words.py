"""Every sentence a member reads about tasks, inputs and failures, rendered from codes: one place to review.

Errors, notices and states reach this module as codes with parameters (`bot.domain`); `Words` turns them
into sentences in a member's locale. Templates are English, marked with `N_` (or `P_` when a count picks
the form), and are the msgids of the gettext catalogues in `bot/ui/locales/`; `render` is the one function
that picks the language and translates (`bot.ui.catalogues`), falling back to English.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from babel.numbers import format_decimal

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
from bot.ui.catalogues import (
    COMMAND_NAME,
    SOURCE_LOCALE,
    babel_locale,
    catalogue_for,
    language_of,
    translations,
)

log = logging.getLogger(__name__)

DEFAULT_LOCALE = SOURCE_LOCALE


def N_(template: str) -> str:
    """Mark a template for translation; it is rendered later, in the reader's locale."""
    return template


@dataclass(frozen=True, slots=True)
class Plural:
    """A template said with a count: its English singular and plural, and the parameter that is the count."""

    singular: str
    plural: str
    count: str = "count"


def P_(singular: str, plural: str, count: str = "count") -> Plural:
    """Mark a template whose form depends on the parameter `count` (each language has its own forms)."""
    return Plural(singular, plural, count)


Template = str | Plural


def render(template: Template, locale: str | None = None, **params: object) -> str:
    """Say one template in `locale` (a Discord locale code), with its parameters filled in.

    A locale the bot has no catalogue for, or a message its catalogue lacks, is said in English; a
    translation that cannot be filled (a placeholder it got wrong) is logged and said in English too.
    """
    catalogue = translations(catalogue_for(locale))
    if isinstance(template, Plural):
        count = params[template.count]
        n = count if isinstance(count, int) else int(str(count))
        text = catalogue.ngettext(template.singular, template.plural, n)
        english = template.singular if n == 1 else template.plural
    else:
        text = catalogue.gettext(template)
        english = template
    try:
        return text.format(**params)
    except (KeyError, IndexError, ValueError):
        log.warning("the %s translation of %r cannot be filled; saying it in English", locale, english)
        return english.format(**params)


# TRANSLATORS: the image formats the bot reads, as {formats} in the sentences below ("send a {formats}").
ACCEPTED_FORMATS = N_("PNG, JPEG, WebP or GIF")

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
# A kind of task inside a sentence (what the bot cannot do for want of a provider, whose limit was removed).
KIND_ABILITIES = {TaskKind.DESCRIBE: N_("image to prompt"), TaskKind.IMAGINE: N_("image generation")}

REFUSALS: dict[Refusal, Template] = {
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
    # TRANSLATORS: {format_name} is the format's name ("TIFF", "Photoshop (PSD)"); only English adds "a"/"an".
    Refusal.IMAGE_WRONG_FORMAT: N_("That file is {format_name} image; send a {formats}."),
    Refusal.IMAGE_TOO_LARGE: N_("That image is larger than {size}; send a smaller one."),
    Refusal.IMAGE_TOO_MANY_PIXELS: P_(
        "That image is larger than {megapixels} megapixel; send a smaller one.",
        "That image is larger than {megapixels} megapixels; send a smaller one.",
        count="megapixels",
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
    Refusal.TOO_MANY_REFERENCES: P_(
        "The message has {count} image; the first three were used.",
        "The message has {count} images; the first three were used.",
    ),
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
    Refusal.TOO_MANY_SUGGESTIONS: P_(
        "Ask for {most} suggestion.", "Ask for 1 to {most} suggestions.", count="most"
    ),
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
    Refusal.FORGET_WHILE_RUNNING: P_(
        "You have {count} task running or waiting on this server; cancel it or let it finish, then ask again.",
        "You have {count} tasks running or waiting on this server; cancel them or let them finish, then ask "
        "again.",
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

NOTICES: dict[NoticeCode, Template] = {
    NoticeCode.CACHED: N_("Answered from the cache: this image was described recently, so it cost nothing."),
    NoticeCode.FALLBACK: N_("{failed} was unavailable, so {used} answered instead."),
    NoticeCode.MORE_IMAGES: REFUSALS[Refusal.TOO_MANY_REFERENCES],
}

QUOTA_OFF = N_("{kind} is switched off for you on this server.")
# TRANSLATORS: {renews} is a Discord timestamp that each member's app shows as "in 5 hours" in their language.
QUOTA_USED = {
    TaskKind.DESCRIBE: P_(
        "You have used your description for today; your quota renews {renews}.",
        "You have used all {limit} descriptions for today; your quota renews {renews}.",
        count="limit",
    ),
    TaskKind.IMAGINE: P_(
        "You have used your generation for today; your quota renews {renews}.",
        "You have used all {limit} generations for today; your quota renews {renews}.",
        count="limit",
    ),
}
LINE_FULL = P_(
    "{provider} already has {waiting} task waiting in line, the most this bot lets wait; try again in a few "
    "minutes (this did not use your quota).",
    "{provider} already has {waiting} tasks waiting in line, the most this bot lets wait; try again in a few "
    "minutes (this did not use your quota).",
    count="waiting",
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
    "Done. Deleted: tasks {tasks}, stored images {images}, cached prompts {prompts}. Usage rows that no "
    "longer carry your user id: {usage}."
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
PICK_IMAGE = P_(
    "This message has {count} image; pick the one to describe.",
    "This message has {count} images; pick the one to describe.",
)
PICK_PLACEHOLDER = N_("Choose an image")
IMAGINE_MODAL_TITLE = N_("Edit image")
IMAGINE_MODAL_LABEL = N_("What should change?")
IMAGINE_MODAL_PLACEHOLDER = N_("e.g. make it a watercolour painting at sunset")

# Sizes and durations: the number is written the reader's way ("1.5" or "1,5"), the unit is theirs too.
SIZE_MB = N_("{amount} MB")
SIZE_KB = N_("{amount} KB")
SIZE_BYTES = P_("{amount} byte", "{amount} bytes", count="amount")
DURATION_SECONDS = N_("{seconds} s")
DURATION_MINUTES = N_("{minutes} min")
DURATION_MINUTES_SECONDS = N_("{minutes} min {seconds} s")

# Provider names that are words rather than names (the admin's own label for a server is left alone).
_WORDY_PROVIDER_LABELS = frozenset({N_("OpenAI-compatible")})

# Pillow's format names, spelt the way a member knows them, with their English article.
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
# The same names without an article, for every other language (which puts its own grammar around them).
_FORMAT_LABELS = {"DIB": "BMP", "PSD": "Photoshop (PSD)", "JPEG2000": "JPEG 2000"}
# Letters whose spoken name starts with a vowel sound ("an SVG", "an MPO").
_VOWEL_SOUND_LETTERS = frozenset("AEFHILMNORSX")


def format_name(pillow_format: str, *, article: bool = True) -> str:
    """Name an image format the way a member knows it: with its English article ("a TIFF", "an AVIF"),
    or bare ("TIFF") for a sentence in another language."""
    if not article:
        return _FORMAT_LABELS.get(pillow_format, pillow_format)
    name = _FORMAT_NAMES.get(pillow_format)
    if name is None:
        article_word = "an" if pillow_format[:1].upper() in _VOWEL_SOUND_LETTERS else "a"
        name = f"{article_word} {pillow_format}"
    return name


def relative_time(moment: datetime | float) -> str:
    """Return a Discord timestamp that every client renders live, in the reader's own language."""
    seconds = moment.timestamp() if isinstance(moment, datetime) else moment
    return f"<t:{int(seconds)}:R>"


# Refusals that name a command (`/{kind}`).
_COMMAND_REFUSALS = frozenset(
    {Refusal.COMMAND_OFF_HERE, Refusal.COMMAND_OFF_HERE_ONLY, Refusal.COMMAND_OFF_EVERYWHERE}
)
# How a place is said where it is just the number with a mark (English and French have their own rules).
_ORDINALS = {"de": "{number}.", "es": "{number}.º", "pt": "{number}º", "ja": "{number}番目"}


class Words:
    """The sentences of one reader: their locale, and the names members see for the providers."""

    def __init__(self, locale: str | None = None, provider_labels: Mapping[str, str] | None = None) -> None:
        self.locale = locale or DEFAULT_LOCALE
        self._labels = dict(provider_labels or {})
        self._catalogue = catalogue_for(self.locale)

    @property
    def english(self) -> bool:
        """Whether this reader reads the templates themselves (English, or a language the bot lacks)."""
        return self._catalogue is None

    def command_name(self, name: str) -> str:
        """Return a slash command's name as this reader's Discord shows it (the English name where the bot
        has no translation)."""
        # The same catalogue entry the command translator syncs to Discord.
        translated = translations(self._catalogue).pgettext(COMMAND_NAME, name)
        return translated or name

    def in_locale(self, locale: str | None) -> Words:
        """Return the same reader's words in another language (None: the default)."""
        return Words(locale, self._labels)

    def say(self, template: Template, **params: object) -> str:
        return render(template, self.locale, **params)

    def number(self, value: float, pattern: str | None = None) -> str:
        """Write a number the reader's way: "1.5" in English, "1,5" in German and French."""
        return format_decimal(value, format=pattern, locale=babel_locale(self._catalogue))

    def size(self, n_bytes: int) -> str:
        """Say a byte limit in MB, rounded down so the stated limit is never too generous."""
        if n_bytes < 1_000:  # only tests and odd configurations have limits this small
            return self.say(SIZE_BYTES, amount=n_bytes)
        if n_bytes < 1_000_000:
            return self.say(SIZE_KB, amount=self.number(n_bytes // 1000))
        tenths = math.floor(n_bytes / 100_000)
        return self.say(SIZE_MB, amount=self.number(tenths / 10))

    def duration(self, seconds: float) -> str:
        """Say how long something took: "8.4 s" under a minute, "2 min 5 s" above."""
        seconds = max(0.0, seconds)
        if round(seconds, 1) < 60:
            return self.say(DURATION_SECONDS, seconds=self.number(round(seconds, 1), "0.0"))
        minutes, rest = divmod(round(seconds), 60)
        if not rest:
            return self.say(DURATION_MINUTES, minutes=minutes)
        return self.say(DURATION_MINUTES_SECONDS, minutes=minutes, seconds=rest)

    def provider(self, name: str) -> str:
        label = self._labels.get(name, name.title())
        if label in _WORDY_PROVIDER_LABELS:
            return translations(self._catalogue).gettext(label)
        return label

    def kind(self, kind: TaskKind) -> str:
        return self.say(KIND_NAMES[kind])

    def state(self, state: JobState, place: int | None = None) -> str:
        if state is JobState.QUEUED and place is not None:
            template = QUEUED_AT if place <= EXACT_PLACES else QUEUED_ABOUT
            return self.say(template, place=self.ordinal(place))
        return self.say(STATE_WORDS[state])

    def ordinal(self, number: int) -> str:
        """Say a place in line the reader's way: 3rd, 3., 3e, 3.º, 3º, 3番目."""
        # The language of the catalogue the sentence around it comes from: a locale the bot lacks reads
        # English, so its places are English too ("3rd", not a bare "3").
        language = language_of(self._catalogue)
        if language == "en":
            suffix = "th" if 10 <= number % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(number % 10, "th")
            return f"{number}{suffix}"
        if language == "fr":
            return f"{number}er" if number == 1 else f"{number}e"
        return _ORDINALS.get(language, "{number}").format(number=number)

    def refusal(self, refusal: Refusal, params: Mapping[str, str | int] | None = None) -> str:
        values: dict[str, object] = {"formats": self.say(ACCEPTED_FORMATS), **(params or {})}
        if "max_bytes" in values:
            values["size"] = self.size(int(values["max_bytes"]))  # type: ignore[call-overload]
        if "max_pixels" in values:
            values["megapixels"] = int(values["max_pixels"]) // 1_000_000  # type: ignore[call-overload]
        if "format" in values:
            values["format_name"] = format_name(str(values["format"]), article=self.english)
        for key in ("provider", "default", "capable"):
            if key in values:
                values[key] = self.provider(str(values[key]))
        if "kind" in values and str(values["kind"]) in set(TaskKind):
            values["ability"] = self.say(KIND_ABILITIES[TaskKind(str(values["kind"]))])
        if refusal in _COMMAND_REFUSALS:  # "/{kind} is switched off": the command as the reader types it
            values["kind"] = self.command_name(str(values["kind"]))
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
        return self.say(QUOTA_USED[kind], limit=limit, renews=relative_time(renews_at))

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
