"""The translation catalogues' tool: `python -m bot.i18n update | init LOCALE | compile | check`.

Every member-facing template is English in the code (`N_`, `P_` in `bot/ui/`, `locale_str` and the
command and option names in `cogs/`); each other language is one gettext file,
`bot/ui/locales/<language>/LC_MESSAGES/messages.po`, compiled to the `messages.mo` the package ships.

  update          extract the templates and merge them into every language's .po: new ones come
                  untranslated, changed ones keep their old translation marked fuzzy, gone ones go
  init LOCALE     start a language from the templates (LOCALE is Discord's code: ko, zh-TW, sv-SE, ...)
  compile         write each language's .mo from its .po, then check
  check           say every problem, one line each, and exit 1 when there is one (the tests run it too):
                  a template missing or untranslated, a fuzzy entry, placeholders or Discord markup that
                  differ from the English, plural forms that are not the language's, a command name
                  Discord would refuse, a text over Discord's limit, a .mo that differs from its .po
"""

from __future__ import annotations

import ast
import gettext
import io
import string
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from babel import Locale, UnknownLocaleError
from babel.messages.catalog import Catalog, Message
from babel.messages.extract import extract_from_dir
from babel.messages.mofile import read_mo, write_mo
from babel.messages.plurals import get_plural
from babel.messages.pofile import read_po, write_po
from discord import Locale as DiscordLocale

from bot.discord.translator import MENU_NAME, NAME_MAX, OPTION_NAME, TEXT_MAX, fits
from bot.ui.catalogues import COMMAND_NAME, DOMAIN, folder_of, locale_of

PROJECT = "imageprompt-bot"
BOT_DIR = Path(__file__).resolve().parent
# The commands' package sits beside the bot's (in the repository and in site-packages alike); it is read
# as source, never imported.
COGS_DIR = BOT_DIR.parent / "cogs"
LOCALES_DIR = BOT_DIR / "ui" / "locales"
KEYWORDS = {"N_": None, "P_": (1, 2), "locale_str": None}
COMMENT_TAG = "TRANSLATORS:"
PO_WIDTH = 110
# What a translation must keep exactly as the English has it: Discord's mentions, bold, code and lines.
_MARKUP = ("<@", "<@&", "**", "`", "\n")

MessageId = str | tuple[str, ...]


@dataclass(frozen=True)
class Template:
    """One message to translate: its English (a plural is a pair), its context, where it comes from."""

    id: MessageId
    context: str | None
    locations: tuple[tuple[str, int], ...]
    comments: tuple[str, ...]
    command_text: bool  # a description or choice name: Discord allows 1-100 characters


# ----------------------------------------------------------------------------- extraction


def templates() -> list[Template]:
    """Return every template in the code, once each, in the order they appear."""
    found: dict[tuple[MessageId, str | None], Template] = {}
    command_texts = {message for _, _, message, _, _ in _extract(COGS_DIR, {"locale_str": None})}

    def add(
        message: MessageId, context: str | None, location: tuple[str, int], comments: Sequence[str]
    ) -> None:
        key = (message, context)
        known = found.get(key)
        if known is None:
            found[key] = Template(
                message, context, (location,), tuple(comments), context is None and message in command_texts
            )
        else:
            found[key] = Template(
                message,
                context,
                (*known.locations, location),
                tuple(dict.fromkeys((*known.comments, *comments))),
                known.command_text,
            )

    for folder in (BOT_DIR, COGS_DIR):
        for filename, lineno, message, comments, context in _extract(folder, KEYWORDS):
            add(message, context, (_relative(folder / filename), lineno), comments)
    for path in sorted(COGS_DIR.glob("*.py")):
        for lineno, message, context in command_names(path.read_text(encoding="utf-8")):
            add(message, context, (_relative(path), lineno), ())
    return list(found.values())


def _extract(
    folder: Path, keywords: Mapping[str, tuple[int, ...] | None]
) -> Iterator[tuple[str, int, MessageId, list[str], str | None]]:
    yield from extract_from_dir(
        folder,
        keywords=keywords,
        comment_tags=(COMMENT_TAG,),
        strip_comment_tags=True,
        directory_filter=lambda path: "__pycache__" not in path and "locales" not in path,
    )


def _relative(path: Path) -> str:
    return path.resolve().relative_to(BOT_DIR.parent).as_posix()


def command_names(source: str) -> Iterator[tuple[int, str, str | None]]:
    """Find the command, option and menu names and the literal choices in a cog, with their contexts.

    Names are plain strings in the decorators (they are the interface contract), option names are the
    keys of `describe(...)` (every option is described) or the values of `rename(...)`, and `Literal[...]`
    choices are their own names; discord.py hands all of them to the command translator.
    """
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            called = _called_name(node.func)
            if called in ("command", "Group", "ContextMenu"):
                for keyword in node.keywords:
                    if keyword.arg == "name" and isinstance(keyword.value, ast.Constant):
                        context = MENU_NAME if called == "ContextMenu" else COMMAND_NAME
                        yield node.lineno, str(keyword.value.value), context
            elif called == "describe":
                for keyword in node.keywords:
                    if keyword.arg is not None:
                        yield node.lineno, keyword.arg, OPTION_NAME
            elif called == "rename":
                for keyword in node.keywords:
                    if isinstance(keyword.value, ast.Constant):
                        yield node.lineno, str(keyword.value.value), OPTION_NAME
        elif isinstance(node, ast.arg) and node.annotation is not None:
            for literal in ast.walk(node.annotation):
                if isinstance(literal, ast.Subscript) and _called_name(literal.value) == "Literal":
                    for choice in ast.walk(literal.slice):
                        if isinstance(choice, ast.Constant) and isinstance(choice.value, str):
                            yield choice.lineno, choice.value, None


def _called_name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Name):
        return node.id
    return None


def template_catalog() -> Catalog:
    """Return the templates as a gettext template (what `update` merges into every language)."""
    catalog = Catalog(project=PROJECT, fuzzy=False)
    for template in templates():
        catalog.add(
            template.id,
            locations=template.locations,
            auto_comments=template.comments,
            context=template.context,
            flags=("python-brace-format",) if _placeholders(template.id) else (),
        )
    return catalog


# ----------------------------------------------------------------------------- files


def po_path(folder: str) -> Path:
    return LOCALES_DIR / folder / "LC_MESSAGES" / f"{DOMAIN}.po"


def mo_path(folder: str) -> Path:
    return po_path(folder).with_suffix(".mo")


def languages() -> list[str]:
    """Return the folder of every language that has a .po file."""
    return sorted(path.parent.parent.name for path in LOCALES_DIR.glob(f"*/LC_MESSAGES/{DOMAIN}.po"))


def read_catalog(folder: str) -> Catalog:
    with po_path(folder).open("rb") as source:
        return read_po(source, locale=folder, domain=DOMAIN)


def write_catalog(folder: str, catalog: Catalog) -> None:
    buffer = io.BytesIO()
    write_po(buffer, catalog, width=PO_WIDTH, include_lineno=False, ignore_obsolete=True)
    path = po_path(folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_bytes() != buffer.getvalue():
        path.write_bytes(buffer.getvalue())


def _header(folder: str) -> str:
    name = Locale.parse(folder).get_display_name("en")
    return (
        f"# {name} ({locale_of(folder)}) messages of {PROJECT}: what members read, in their language.\n"
        "# Translate each msgstr; keep every {placeholder}, mention (<@{user}>) and **bold** as the English has it.\n"
        "# Then `python -m bot.i18n compile` checks this file and writes messages.mo beside it.\n"
        "#"
    )


def update() -> list[str]:
    """Merge the templates into every language; return the languages whose file changed."""
    template = template_catalog()
    changed = []
    for folder in languages():
        before = po_path(folder).read_bytes()
        catalog = read_catalog(folder)
        catalog.update(template, update_creation_date=False)
        catalog.header_comment = _header(folder)
        write_catalog(folder, catalog)
        if po_path(folder).read_bytes() != before:
            changed.append(folder)
    return changed


def init(locale: str) -> Path:
    """Start a language from the templates; refuse a code that is not one of Discord's locales."""
    known = {item.value: item.value for item in DiscordLocale}
    code = next((value for value in known if value.lower() == locale.replace("_", "-").lower()), None)
    if code is None:
        raise SystemExit(f"{locale} is not one of Discord's locales: {', '.join(sorted(known))}")
    folder = folder_of(code)
    if po_path(folder).exists():
        raise SystemExit(f"{po_path(folder)} exists already; run `python -m bot.i18n update` to refresh it")
    catalog = Catalog(locale=folder, domain=DOMAIN, project=PROJECT, fuzzy=False)
    catalog.update(template_catalog())
    catalog.header_comment = _header(folder)
    write_catalog(folder, catalog)
    return po_path(folder)


def compile_all() -> list[str]:
    """Write every language's .mo from its .po (fuzzy and untranslated entries stay English)."""
    written = []
    for folder in languages():
        buffer = io.BytesIO()
        write_mo(buffer, read_catalog(folder))
        path = mo_path(folder)
        if not path.exists() or path.read_bytes() != buffer.getvalue():
            path.write_bytes(buffer.getvalue())
            written.append(folder)
    return written


# ----------------------------------------------------------------------------- checks


def _as_id(value: object) -> MessageId:
    """Return a message id or string as read from a .po or a .mo: a str, or a tuple of plural forms."""
    return value if isinstance(value, str) else tuple(str(item) for item in value or ())  # type: ignore[attr-defined]


def _forms(value: object) -> tuple[str, ...]:
    found = _as_id(value)
    return (found,) if isinstance(found, str) else found


def _placeholders(text: MessageId) -> set[str]:
    texts = (text,) if isinstance(text, str) else text
    return {field for item in texts for _, field, _, _ in string.Formatter().parse(item) if field is not None}


def _markup(text: str) -> tuple[int, ...]:
    return tuple(text.count(mark) for mark in _MARKUP)


def _show(message: Message | Template) -> str:
    text = message.id if isinstance(message.id, str) else message.id[0]
    where = f" [{message.context}]" if message.context else ""
    return f"{text[:60]!r}{where}"


def check_language(folder: str, wanted: Sequence[Template] | None = None) -> list[str]:
    """Return the problems of one language's catalogue, one line each, prefixed with its locale."""
    wanted = templates() if wanted is None else wanted
    locale = locale_of(folder)
    problems: list[str] = []
    if locale not in {item.value for item in DiscordLocale}:
        problems.append(
            f"{folder}: {locale} is not one of Discord's locales (name the folder like pt_BR or de)"
        )
    try:
        plural = get_plural(folder)
    except UnknownLocaleError:
        return [*problems, f"{folder}: Babel knows no such language"]
    catalog = read_catalog(folder)
    if catalog.num_plurals != plural.num_plurals:
        problems.append(
            f"{locale}: the header says {catalog.num_plurals} plural forms, the language has "
            f"{plural.num_plurals} ({plural.plural_forms}); run `python -m bot.i18n update`"
        )
    form_of = gettext.c2py(plural.plural_expr)
    keys = {
        (template.id if isinstance(template.id, str) else template.id[0], template.context)
        for template in wanted
    }
    for template in wanted:
        message = catalog.get(
            template.id if isinstance(template.id, str) else template.id[0], template.context
        )
        if message is None or message.id != template.id:
            problems.append(f"{locale}: {_show(template)} is missing; run `python -m bot.i18n update`")
            continue
        problems += [
            f"{locale}: {_show(template)} {problem}"
            for problem in _message_problems(message, template, plural.num_plurals, form_of)
        ]
    for message in catalog:
        key = (message.id if isinstance(message.id, str) else message.id[0], message.context)
        if message.id and key not in keys:
            problems.append(
                f"{locale}: {_show(message)} is no template any more; run `python -m bot.i18n update`"
            )
    problems += [f"{locale}: {problem}" for problem in _compiled_problems(folder, catalog)]
    return problems


def _message_problems(
    message: Message, template: Template, num_plurals: int, form_of: Callable[[int], int]
) -> list[str]:
    if message.fuzzy:
        return ["is marked fuzzy: check the translation against the new English, then remove the flag"]
    forms = _forms(message.string)
    if not all(forms):
        return ["is not translated"]
    if isinstance(template.id, tuple) and len(forms) != num_plurals:
        return [f"has {len(forms)} plural forms; the language has {num_plurals}"]
    problems = []
    english_all = _placeholders(template.id)
    english_one = _placeholders(template.id if isinstance(template.id, str) else template.id[0])
    for index, form in enumerate(forms):
        try:
            found = _placeholders(form)
        except ValueError as exc:
            problems.append(f"cannot be filled in ({exc}): a stray {{ or }}?")
            continue
        # A form said only of one may leave the count out, as the English singular does.
        only_one = isinstance(template.id, tuple) and [n for n in range(1001) if form_of(n) == index] == [1]
        allowed = english_all
        required = english_one if only_one else english_all
        if not required <= found <= allowed:
            missing, extra = sorted(required - found), sorted(found - allowed)
            problems.append(
                "has placeholders that differ from the English"
                + (f"; missing {missing}" if missing else "")
                + (f"; unknown {extra}" if extra else "")
            )
        english = template.id if isinstance(template.id, str) else template.id[min(index, 1)]
        if _markup(form) != _markup(english):
            problems.append(
                "changes Discord markup (mentions, **bold**, `code` or line breaks) of the English"
            )
        problems += _length_problems(form, template)
    return problems


def _length_problems(text: str, template: Template) -> list[str]:
    # Discord's rules are the command translator's own; an empty form is "not translated" before this, so
    # outside the names only a text too long breaks them (and only a command's text has to keep them).
    if fits(text, template.context):
        return []
    if template.context in (COMMAND_NAME, OPTION_NAME):
        return [f"-> {text!r}: Discord needs 1-32 lower-case letters, digits, - _ or ' (no spaces)"]
    if template.context == MENU_NAME:
        return [f"-> {text!r}: a context menu name has 1-{NAME_MAX} characters"]
    if template.command_text:
        return [f"-> {len(text)} characters: Discord allows {TEXT_MAX} in a command's description or choice"]
    return []


def _compiled_problems(folder: str, catalog: Catalog) -> list[str]:
    """Compare the shipped .mo with what its .po compiles to: every translation, context and form."""
    path = mo_path(folder)
    if not path.exists():
        return ["messages.mo is missing; run `python -m bot.i18n compile`"]
    with path.open("rb") as compiled:
        shipped = read_mo(compiled)

    def entries(source: Catalog) -> dict[tuple[MessageId, str | None], MessageId]:
        return {
            (_as_id(message.id), message.context): _as_id(message.string)
            for message in source
            if message.id and not message.fuzzy and all(_forms(message.string))
        }

    if entries(shipped) != entries(catalog) or shipped.plural_forms != catalog.plural_forms:
        return ["messages.mo differs from messages.po; run `python -m bot.i18n compile`"]
    return []


def problems() -> list[str]:
    """Return every problem of every language, one line each."""
    wanted = templates()
    found: list[str] = []
    if len({(t.id if isinstance(t.id, str) else t.id[0], t.context) for t in wanted}) != len(wanted):
        found.append("two templates share an English singular with different plurals; make them differ")
    for folder in languages():
        found += check_language(folder, wanted)
    return found


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    command = args[0] if args else "check"
    if command == "update":
        changed = update()
        print(f"updated: {', '.join(changed)}" if changed else "every catalogue already had every template")
        return 0
    if command == "init" and len(args) == 2:
        path = init(args[1])
        print(f"{path} is ready: translate its msgstr lines, then run `python -m bot.i18n compile`")
        return 0
    if command == "compile":
        written = compile_all()
        print(f"compiled: {', '.join(written)}" if written else "every .mo was up to date")
        command = "check"
    if command == "check":
        found = problems()
        for problem in found:
            print(problem)
        if not found:
            print(
                f"{len(languages())} languages, {len(templates())} messages each: all present, translated and compiled"
            )
        return 1 if found else 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main())
