"""The translation catalogues: every message in every language, with the same placeholders, compiled, and
said the way each language counts; the fallbacks; the check that keeps a new language honest."""

from __future__ import annotations

import gettext
import re
import shutil
import string
from datetime import UTC, datetime
from pathlib import Path

import pytest
from babel.messages.pofile import read_po

from bot import i18n
from bot.discord.translator import MENU_NAME, OPTION_NAME
from bot.domain.errors import Refusal
from bot.domain.tasks import JobState, TaskKind
from bot.settings import SettingsError, load_settings
from bot.ui import catalogues, words
from bot.ui.catalogues import COMMAND_NAME
from bot.ui.views import PromptModal, job_button
from bot.ui.words import PICK_IMAGE, Words, render
from tests.conftest import Harness

LANGUAGES = ["de", "es_ES", "fr", "ja", "pt_BR"]


def _catalog(folder: str):
    with i18n.po_path(folder).open("rb") as source:
        return read_po(source, locale=folder)


def _fields(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}


def test_the_bot_speaks_the_six_languages_of_the_issue() -> None:
    assert i18n.languages() == LANGUAGES
    assert set(catalogues.available_locales()) == {"en-US", "es-ES", "de", "fr", "pt-BR", "ja"}


def test_every_catalogue_passes_the_check() -> None:
    """What `python -m bot.i18n check` says: complete, translated, same placeholders, names Discord
    accepts, plural forms of the language, and a .mo compiled from the .po beside it."""
    assert i18n.problems() == []


@pytest.mark.parametrize("folder", LANGUAGES)
def test_every_message_exists_with_the_same_placeholders(folder: str) -> None:
    catalog = _catalog(folder)
    wanted = i18n.templates()
    assert len(wanted) > 150
    for template in wanted:
        english = template.id if isinstance(template.id, str) else template.id[1]
        message = catalog.get(
            template.id if isinstance(template.id, str) else template.id[0], template.context
        )
        assert message is not None, (folder, english)
        assert not message.fuzzy, (folder, english)
        forms = [message.string] if isinstance(message.string, str) else list(message.string)
        assert all(forms), (folder, english)
        # Every form has the English placeholders (a form said only of one may leave the count out).
        assert _fields(forms[-1]) == _fields(english), (folder, english, forms[-1])
        for form in forms:
            assert _fields(form) <= _fields(english), (folder, english, form)


@pytest.mark.parametrize("folder", LANGUAGES)
def test_compiled_catalogues_match_their_sources(folder: str) -> None:
    """The .mo the package ships says exactly what the .po says (read back with Python's own gettext)."""
    with i18n.mo_path(folder).open("rb") as compiled:
        shipped = gettext.GNUTranslations(compiled)
    for message in _catalog(folder):
        if not message.id:
            continue
        if isinstance(message.id, str):
            said = (
                shipped.pgettext(message.context, message.id)
                if message.context
                else shipped.gettext(message.id)
            )
            assert said == message.string, (folder, message.id)
        else:
            form_of = gettext.c2py(_catalog(folder).plural_expr)
            for n in (0, 1, 2, 5, 21, 1_000_000):
                said = shipped.ngettext(message.id[0], message.id[1], n)
                assert said == message.string[form_of(n)], (folder, message.id, n)


def test_plurals_are_each_languages_own() -> None:
    def pick(locale: str, count: int) -> str:
        return Words(locale).say(PICK_IMAGE, count=count)

    assert pick("en-US", 1) == "This message has 1 image; pick the one to describe."
    assert pick("en-US", 5) == "This message has 5 images; pick the one to describe."
    assert pick("de", 1) == "Diese Nachricht hat 1 Bild; wähl das, das ich beschreiben soll."
    assert pick("de", 5) == "Diese Nachricht hat 5 Bilder; wähl das, das ich beschreiben soll."
    # French and Brazilian Portuguese say zero in the singular; Japanese has one form for every count.
    assert pick("fr", 0) == "Ce message contient 0 image\u00a0; choisis celle à décrire."
    assert pick("pt-BR", 0) == "Esta mensagem tem 0 imagem; escolha a que quer descrever."
    assert pick("es-ES", 0) == "Este mensaje tiene 0 imágenes; elige la que quieres describir."
    assert pick("ja", 1) == "このメッセージには画像が1枚あります。説明する画像を選んでください。"
    assert pick("ja", 5) == "このメッセージには画像が5枚あります。説明する画像を選んでください。"


def test_numbers_sizes_and_durations_are_written_the_readers_way() -> None:
    too_large = {"max_bytes": 1_500_000}
    assert Words("en-US").refusal(Refusal.IMAGE_TOO_LARGE, too_large) == (
        "That image is larger than 1.5 MB; send a smaller one."
    )
    assert Words("fr").refusal(Refusal.IMAGE_TOO_LARGE, too_large) == (
        "Cette image dépasse 1,5 Mo\u00a0; envoie-en une plus légère."
    )
    assert Words("de").duration(8.44) == "8,4 s"
    assert Words("ja").duration(125) == "2分5秒"
    assert Words("en-US").size(1) == "1 byte"


def test_format_names_keep_english_articles_and_go_bare_elsewhere() -> None:
    assert (
        Words()
        .refusal(Refusal.IMAGE_WRONG_FORMAT, {"format": "AVIF"})
        .startswith("That file is an AVIF image")
    )
    assert (
        Words("de")
        .refusal(Refusal.IMAGE_WRONG_FORMAT, {"format": "PSD"})
        .startswith("Diese Datei ist ein Bild im Format Photoshop (PSD);")
    )


@pytest.mark.parametrize("locale", ["ko", "zh-TW", "", None, "xx-YY", "en-GB"])
def test_a_language_the_bot_lacks_is_english(locale: str | None) -> None:
    said = Words(locale).quota_exceeded(TaskKind.IMAGINE, 3, datetime(2030, 1, 1, tzinfo=UTC))
    assert said == "You have used all 3 generations for today; your quota renews <t:1893456000:R>."


@pytest.mark.parametrize("locale", ["ko", "it", "zh-CN"])
def test_a_language_the_bot_lacks_says_places_in_line_in_english(locale: str) -> None:
    """The place follows the sentence around it: English words, English ordinals (not a bare "3")."""
    assert Words(locale).state(JobState.QUEUED, 3) == "Queued · 3rd in line"
    assert Words(locale).state(JobState.QUEUED, 12) == "Queued · about 12th in line"


def test_a_place_in_line_is_said_the_way_its_catalogue_says_it() -> None:
    assert Words("es-419").state(JobState.QUEUED, 3) == "En cola · 3.º puesto"
    assert Words("pt-BR").state(JobState.QUEUED, 3) == "Na fila · 3º lugar"
    assert Words("de").state(JobState.QUEUED, 3) == "In der Warteschlange · 3. Platz"
    assert Words("fr").ordinal(1) == "1er"
    assert Words("ja").ordinal(3) == "3番目"
    assert Words("en-GB").ordinal(22) == "22nd"


def test_a_regional_variant_reads_its_languages_catalogue() -> None:
    assert Words("es-419").say(words.STATE_WORDS[words.JobState.COMPLETED]) == "Listo"
    assert catalogues.catalogue_for("PT-br") == "pt_BR"
    assert catalogues.first_spoken("ko", "de") == "de"
    assert catalogues.first_spoken(None, "ko") == "en-US"


def test_a_translation_that_cannot_be_filled_is_said_in_english(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken(gettext.NullTranslations):
        def gettext(self, message: str) -> str:
            return "Falsch: {nicht_da}"

    monkeypatch.setattr(words, "translations", lambda folder: Broken())
    assert render(words.SHUTTING_DOWN, "de") == "The bot is restarting; try again in a minute."
    assert render(words.LINE_FULL, "de", provider="Freepik", waiting=2).startswith(
        "Freepik already has 2 tasks waiting in line"
    )
    assert "cannot be filled" in caplog.text


async def _nothing(interaction: object, prompt: str) -> None:
    return None


def test_what_members_click_and_type_fits_discords_limits_in_every_language() -> None:
    for locale in catalogues.available_locales():
        said = Words(locale)
        for action in ("imagine", "text", "again", "edit", "imagine4"):
            assert len(job_button(action, "0" * 32, said, numbered=True).label or "") <= 80
        modal = PromptModal(said, on_prompt=_nothing).to_dict()
        assert 1 <= len(modal["title"]) <= 45, locale
        text_input = modal["components"][0]["components"][0]
        assert len(text_input["label"]) <= 45, locale
        assert len(text_input["placeholder"]) <= 100, locale
        assert len(said.say(words.PICK_PLACEHOLDER)) <= 150


async def test_every_command_text_discord_shows_is_a_template(harness: Harness) -> None:
    """The extraction sees every name, description and choice the bot syncs (else it would stay English)."""
    await harness.start_bot()
    wanted = {(t.context, t.id) for t in i18n.templates()}

    def walk(options: list[dict]) -> None:
        for option in options:
            context = COMMAND_NAME if option["type"] in (1, 2) else OPTION_NAME
            assert (context, option["name"]) in wanted, option["name"]
            assert (None, option["description"]) in wanted, option["description"]
            for choice in option.get("choices", []):
                if choice["name"] not in ("Freepik", "Novita"):
                    assert (None, choice["name"]) in wanted, choice["name"]
            walk(option.get("options", []))

    for command in harness.discord.synced_commands():
        if command["type"] == 1:
            assert (COMMAND_NAME, command["name"]) in wanted
            assert (None, command["description"]) in wanted
        else:
            assert (MENU_NAME, command["name"]) in wanted
        walk(command.get("options", []))


def test_default_locale_is_a_language_the_bot_speaks() -> None:
    base = {"discord_token": "t", "freepik_api_key": "k"}
    assert load_settings(base, env_file=None).default_locale == "en-US"
    assert load_settings({**base, "default_locale": "pt_br"}, env_file=None).default_locale == "pt-BR"
    with pytest.raises(SettingsError) as refused:
        load_settings({**base, "default_locale": "german"}, env_file=None)
    assert refused.value.problems == [
        "DEFAULT_LOCALE: is not a language the bot speaks (one of: en-US, de, es-ES, fr, ja, pt-BR)"
    ]


# --- the check a translator runs ---------------------------------------------------------------------


@pytest.fixture
def locales(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the catalogues the check reads, for a test to break."""
    copy = tmp_path / "locales"
    shutil.copytree(i18n.LOCALES_DIR, copy)
    monkeypatch.setattr(i18n, "LOCALES_DIR", copy)
    return copy


def _edit(folder: str, old: str, new: str) -> None:
    path = i18n.po_path(folder)
    text = path.read_text(encoding="utf-8")
    assert old in text, old
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def test_the_check_names_each_mistake_in_one_line(locales: Path) -> None:
    _edit("de", 'msgstr "Dieser Befehl funktioniert nur auf Servern."', 'msgstr ""')
    _edit("de", "Der Bot startet gerade neu", "#, fuzzy\nDer Bot startet gerade neu")
    _edit("fr", "{provider} est occupé", "{fournisseur} est occupé")
    _edit("ja", 'msgstr "画像説明"', 'msgstr "画像 説明"')
    _edit("pt_BR", "<@{user}> recebeu {amount} descrição extra", "{user} recebeu {amount} descrição extra")
    found = i18n.problems()
    assert "de: 'This command works in servers only.' is not translated" in found
    assert any(
        line.startswith("fr: '{provider} is busy right now;") and "unknown ['fournisseur']" in line
        for line in found
    )
    assert any(line.startswith("ja: 'describe' [command name] -> '画像 説明'") for line in found)
    assert any(line.startswith("pt-BR: 'Granted <@{user}>") and "Discord markup" in line for line in found)
    # The .po changed and its .mo did not: the shipped catalogue would say something else.
    assert "de: messages.mo differs from messages.po; run `python -m bot.i18n compile`" in found


def test_a_new_language_starts_from_the_templates_and_is_checked(locales: Path) -> None:
    path = i18n.init("sv-SE")
    assert path == locales / "sv_SE" / "LC_MESSAGES" / "messages.po"
    found = [line for line in i18n.problems() if line.startswith("sv-SE:")]
    assert "sv-SE: messages.mo is missing; run `python -m bot.i18n compile`" in found
    assert sum("is not translated" in line for line in found) == len(i18n.templates())
    with pytest.raises(SystemExit, match="not one of Discord's locales"):
        i18n.init("sv")


def test_update_keeps_translations_and_marks_changed_english_fuzzy(locales: Path) -> None:
    _edit("de", 'msgid "Choose an image"', 'msgid "Choose a picture"')
    assert i18n.update() == ["de"]
    kept = i18n.read_catalog("de").get("Choose an image")
    # The old translation is offered for the changed English, marked fuzzy until a translator checks it.
    assert (kept.string, kept.fuzzy) == ("Wähl ein Bild", True)
    assert i18n.update() == []  # a second run changes nothing


def test_the_command_line_check_exits_zero_on_the_shipped_catalogues(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert i18n.main(["check"]) == 0
    assert "5 languages" in capsys.readouterr().out


def test_every_sentence_renders_filled_in_every_language(caplog: pytest.LogCaptureFixture) -> None:
    """Every refusal, fault, notice and quota line, with the parameters the bot gives it, in every language."""
    from bot.domain.errors import LineFull
    from bot.domain.quota import KindStatus, UsageLine, UsageReport
    from bot.domain.tasks import Fault, Notice, NoticeCode
    from bot.ui import quota_text

    params: dict[str, str | int] = {
        "max_bytes": 20_000_000,
        "max_pixels": 50_000_000,
        "format": "TIFF",
        "status": 404,
        "count": 5,
        "provider": "freepik",
        "default": "novita",
        "capable": "openai",
        "kind": "describe",
        "most": 4,
        "channels": "<#1>",
    }
    renews = datetime(2030, 1, 1, tzinfo=UTC)
    for locale in (*catalogues.available_locales(), "ko"):
        said = Words(locale, {"openai": "OpenAI-compatible"})
        sentences = [said.refusal(refusal, params) for refusal in Refusal]
        sentences += [said.fault("novita", fault, "nsfw") for fault in Fault]
        sentences += [
            said.notice(Notice(code, {"failed": "freepik", "used": "novita", "count": 4}))
            for code in NoticeCode
        ]
        sentences += [said.quota_exceeded(kind, limit, renews) for kind in TaskKind for limit in (0, 1, 7)]
        sentences += [said.error(LineFull("freepik", waiting)) for waiting in (1, 2)]
        sentences += [said.state(JobState.QUEUED, place) for place in (1, 2, 3, 11, 25)]
        sentences += [said.say(words.PICK_IMAGE, count=n) for n in (0, 1, 2)]
        sentences += [said.size(n) for n in (1, 999, 100_000, 20_000_000)]
        sentences += [
            quota_text.granted(said, 1, kind, n, left)
            for kind in TaskKind
            for n in (1, 3)
            for left in (None, 2)
        ]
        sentences += [
            quota_text.reset_done(said, 1, kind, n) for kind in (*TaskKind, None) for n in (0, 1, 2)
        ]
        sentences += [
            quota_text.limit_set(said, "role", 9, TaskKind.IMAGINE, limit) for limit in (None, -1, 0, 1, 5)
        ]
        statuses = [
            KindStatus(kind, limit=limit, used=1, renews_at=renews, source="default", granted=granted)
            for kind, limit, granted in (
                (TaskKind.DESCRIBE, 25, 0),
                (TaskKind.IMAGINE, 2, 1),
                (TaskKind.IMAGINE, -1, 0),
            )
        ]
        embed = quota_text.quota_embed(said, statuses, running=1, max_running=1).to_dict()
        line = UsageLine("describe", "freepik", completed=3, failed=1, refunded=1, cached=0, running=1)
        report = UsageReport(1, since=renews, until=renews, lines=[line], top_members=[(1, 1)], rows=[])
        usage = quota_text.usage_embed(said, report, "30 days").to_dict()
        sentences += [field["value"] for field in (*embed["fields"], *usage["fields"])]
        for sentence in sentences:
            assert sentence, locale
            assert not re.search(r"\{\w+\}", sentence), (locale, sentence)
    assert "cannot be filled" not in caplog.text
