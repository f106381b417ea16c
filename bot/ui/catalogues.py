"""The languages the bot speaks: one gettext catalogue per language, found in the package, read once.

English is the templates themselves (the msgids in `bot.ui.words` and the commands), so it has no
catalogue. Every other language is one file, `bot/ui/locales/<language>/LC_MESSAGES/messages.po`, compiled
to the `messages.mo` beside it (`python -m bot.i18n compile`); the folder is the gettext name of one of
Discord's locale codes (`pt-BR` is `pt_BR`, `de` is `de`). A locale without a catalogue of its own reads
one of the same language (Discord's `es-419` reads `es-ES`), else English: never a key or a blank.
"""

from __future__ import annotations

import functools
import gettext
from importlib import resources
from importlib.abc import Traversable

# The language of the templates, and of every locale the bot has no catalogue for.
SOURCE_LOCALE = "en-US"
DOMAIN = "messages"
# The message context (msgctxt) of slash command names: the command translator syncs them to Discord and
# the words name commands in sentences, from the same catalogue entry.
COMMAND_NAME = "command name"


def locales_root() -> Traversable:
    return resources.files("bot.ui") / "locales"


def folder_of(locale: str) -> str:
    """Return the gettext folder name of a Discord locale code ("pt-BR" -> "pt_BR")."""
    return locale.replace("-", "_")


def locale_of(folder: str) -> str:
    """Return the Discord locale code of a catalogue folder ("pt_BR" -> "pt-BR")."""
    return folder.replace("_", "-")


@functools.cache
def catalogues() -> dict[str, str]:
    """Map each Discord locale that has a compiled catalogue to its folder, e.g. {"pt-BR": "pt_BR"}."""
    root = locales_root()
    if not root.is_dir():
        return {}
    found = {
        locale_of(entry.name): entry.name
        for entry in root.iterdir()
        if (entry / "LC_MESSAGES" / f"{DOMAIN}.mo").is_file()
    }
    return dict(sorted(found.items()))


def available_locales() -> tuple[str, ...]:
    """Return the Discord locales the bot speaks: English first, then every catalogue."""
    return (SOURCE_LOCALE, *catalogues())


def _language(locale: str) -> str:
    return locale.replace("_", "-").split("-", 1)[0].lower()


def language_of(folder: str | None) -> str:
    """Return the language a catalogue is written in ("pt_BR" -> "pt"); None, the templates, is English."""
    return _language(folder or SOURCE_LOCALE)


@functools.cache
def catalogue_for(locale: str | None) -> str | None:
    """Return the folder of the catalogue a locale reads, or None when it reads English (the templates)."""
    if not locale:
        return None
    wanted = locale.replace("_", "-").lower()
    found = catalogues()
    for code, folder in found.items():
        if code.lower() == wanted:
            return folder
    language = _language(wanted)
    if language == _language(SOURCE_LOCALE):
        return None
    for code, folder in found.items():
        if _language(code) == language:
            return folder
    return None


def speaks(locale: str | None) -> bool:
    """Tell whether the bot has this locale's language (English in any variant, or a catalogue)."""
    if not locale:
        return False
    return _language(locale) == _language(SOURCE_LOCALE) or catalogue_for(locale) is not None


def first_spoken(*locales: str | None) -> str:
    """Return the first of the locales the bot speaks, else English."""
    return next((locale for locale in locales if locale and speaks(locale)), SOURCE_LOCALE)


@functools.cache
def translations(folder: str | None) -> gettext.NullTranslations:
    """Return the compiled catalogue of a folder; English (None) is the templates as they are."""
    if folder is None:
        return gettext.NullTranslations()
    with (locales_root() / folder / "LC_MESSAGES" / f"{DOMAIN}.mo").open("rb") as compiled:
        return gettext.GNUTranslations(compiled)


def babel_locale(folder: str | None) -> str:
    """Return the CLDR locale name numbers are formatted in ("en_US", "de", "pt_BR")."""
    return folder or folder_of(SOURCE_LOCALE)
