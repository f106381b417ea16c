"""Command, option, choice and menu names and descriptions in every language the bot speaks.

discord.py asks the translator for each of Discord's locales when it builds the synced commands; the
answers become `name_localizations` and `description_localizations`, which Discord shows each member in
their own language. The English names stay the names (the interface contract) and interactions always
carry them. Names come from the same gettext catalogues as every sentence, with a message context that
says which of Discord's rules applies ("command name", "option name", "context menu name"). A translation
that breaks Discord's rules for its field is left out (English shows), so a bad catalogue can never make
Discord refuse the whole sync.
"""

from __future__ import annotations

import logging
import re

from discord import Locale, app_commands
from discord.app_commands import TranslationContextLocation as Where

from bot.ui.catalogues import COMMAND_NAME, catalogue_for, translations

log = logging.getLogger(__name__)

# Message contexts of the names in the catalogues (msgctxt), one per set of Discord's rules (COMMAND_NAME
# lives with the catalogues, since the words read command names too).
OPTION_NAME = "option name"
MENU_NAME = "context menu name"

# Discord's rules: slash command, subcommand and option names are 1-32 letters, digits, "-", "_" or "'" in
# lower case (Python's \w stands in for \p{L}\p{N}); context menu names are 1-32 of anything; descriptions
# 1-100, choice names 1-100.
SLASH_NAME = re.compile(r"^[-_'\w]{1,32}$")
NAME_MAX = 32
TEXT_MAX = 100


def message_context(context: app_commands.TranslationContextTypes) -> str | None:
    """Return the catalogue's message context for a string in this place (None for descriptions, choices)."""
    location = context.location
    if location is Where.command_name:
        return MENU_NAME if isinstance(context.data, app_commands.ContextMenu) else COMMAND_NAME
    if location is Where.group_name:
        return COMMAND_NAME
    if location is Where.parameter_name:
        return OPTION_NAME
    return None


def fits(text: str, context: str | None) -> bool:
    """Tell whether a translation keeps Discord's rules for its field."""
    if context in (COMMAND_NAME, OPTION_NAME):
        return bool(SLASH_NAME.fullmatch(text)) and text == text.lower()
    if context == MENU_NAME:
        return 1 <= len(text) <= NAME_MAX
    return 1 <= len(text) <= TEXT_MAX


class CatalogueTranslator(app_commands.Translator):
    """Answer discord.py's translation requests from the bot's gettext catalogues."""

    async def translate(
        self, string: app_commands.locale_str, locale: Locale, context: app_commands.TranslationContextTypes
    ) -> str | None:
        folder = catalogue_for(locale.value)
        if folder is None:
            return None  # English, or a language the bot lacks: Discord shows the default
        message = string.message
        where = message_context(context)
        catalogue = translations(folder)
        text = catalogue.pgettext(where, message) if where else catalogue.gettext(message)
        if text == message:
            return None  # not translated, or the same word: nothing to add
        if not fits(text, where):
            log.warning("the %s translation of %r breaks Discord's rules; English is shown", locale, message)
            return None
        return text
