"""A walk over every command the bot syncs: the names of the interface contract, and every option described."""

from __future__ import annotations

import json
import re

from tests.conftest import Harness

# The product surface (README "Commands"): these names are a contract with admins and members.
EXPECTED = {
    ("describe", 1): {"image", "url", "provider", "style", "suggestions"},
    ("imagine", 1): {"prompt", "reference1", "reference2", "reference3"},
    ("quota", 1): set(),
    ("quota-admin", 1): {"set", "grant", "reset", "usage"},
    ("rules", 1): {"channel", "blocklist-add", "blocklist-remove", "show"},
    ("forget-me", 1): set(),
    ("Describe image", 3): set(),
    ("Edit image", 3): set(),
}


def _walk_options(options: list[dict]) -> list[dict]:
    found = []
    for option in options:
        found.append(option)
        found.extend(_walk_options(option.get("options", [])))
    return found


async def test_every_command_matches_the_contract_and_is_described(harness: Harness) -> None:
    await harness.start_bot()
    synced = harness.discord.synced_commands()
    names = [(command["name"], command.get("type", 1)) for command in synced]
    assert len(names) == len(set(names)), "command names must be unique"
    assert set(names) == set(EXPECTED)
    for command in synced:
        key = (command["name"], command.get("type", 1))
        top_level = {option["name"] for option in command.get("options", [])}
        assert top_level == EXPECTED[key], key
        if command.get("type", 1) == 1:
            assert 1 <= len(command["description"]) <= 100, command["name"]
        for option in _walk_options(command.get("options", [])):
            assert option["name"] == option["name"].lower()
            assert len(option["name"]) <= 32
            assert 1 <= len(option["description"]) <= 100, (command["name"], option["name"])


async def test_describe_options_are_optional_and_provider_is_a_choice(harness: Harness) -> None:
    await harness.start_bot()
    describe = next(c for c in harness.discord.synced_commands() if c["name"] == "describe")
    options = {option["name"]: option for option in describe["options"]}
    assert options["image"]["type"] == 11
    assert not options["image"].get("required", False)
    assert options["url"]["type"] == 3
    assert not options["url"].get("required", False)
    # The harness's bot has Freepik and Novita keys and no vision model: only those two are offered.
    assert [(c["name"], c["value"]) for c in options["provider"]["choices"]] == [
        ("Freepik", "freepik"),
        ("Novita", "novita"),
    ]
    assert [choice["value"] for choice in options["style"]["choices"]] == [
        "detailed",
        "short",
        "tags",
        "midjourney",
        "stable-diffusion",
    ]
    assert not options["style"].get("required", False)
    assert (
        options["suggestions"]["type"],
        options["suggestions"]["min_value"],
        options["suggestions"]["max_value"],
    ) == (
        4,
        1,
        4,
    )
    imagine = next(c for c in harness.discord.synced_commands() if c["name"] == "imagine")
    prompt = next(option for option in imagine["options"] if option["name"] == "prompt")
    assert prompt["required"] is True
    assert prompt["max_length"] == 2000


async def test_quota_admin_needs_manage_server_and_a_server(harness: Harness) -> None:
    await harness.start_bot()
    admin = next(c for c in harness.discord.synced_commands() if c["name"] == "quota-admin")
    assert int(admin["default_member_permissions"]) == 1 << 5  # Manage Server
    assert admin.get("contexts") == [0] or admin.get("dm_permission") is False


async def test_commands_sync_only_when_their_definition_changed(harness: Harness) -> None:
    bot = await harness.start_bot()
    puts = [call for call in harness.discord.calls if call.method == "PUT" and "/commands" in call.path]
    assert len(puts) == 1
    await harness.stop_bot(bot)
    await harness.start_bot()  # the same definitions, the same database: no second sync
    puts = [call for call in harness.discord.calls if call.method == "PUT" and "/commands" in call.path]
    assert len(puts) == 1


async def test_guild_ids_sync_to_those_guilds(harness: Harness) -> None:
    guild = harness.discord.guild_ids[0]
    await harness.start_bot(discord_guild_ids=str(guild))
    puts = [call.path for call in harness.discord.calls if call.method == "PUT" and "/commands" in call.path]
    assert puts == [f"/applications/{harness.discord.application_id}/guilds/{guild}/commands"]


# The languages the bot speaks besides English (Discord's codes); es-419 reads es-ES.
TRANSLATED = ("es-ES", "de", "fr", "pt-BR", "ja")
_SLASH_NAME = re.compile(r"^[-_'\w]{1,32}$")
# Names of things, not words: the same in every language.
PROPER_NAMES = {"Freepik", "Novita"}


def _named_nodes(command: dict) -> list[tuple[str, dict, list[dict]]]:
    """Return (kind, node, siblings) for the command, every option and every choice under it."""
    kind = "slash" if command.get("type", 1) == 1 else "menu"
    found = [(kind, command, [])]

    def walk(options: list[dict]) -> None:
        for option in options:
            found.append(("option", option, options))
            for choice in option.get("choices", []):
                found.append(("choice", choice, option["choices"]))
            walk(option.get("options", []))

    walk(command.get("options", []))
    return found


def _localized(node: dict, key: str, locale: str) -> str:
    return node.get(f"{key}_localizations", {}).get(locale, node[key])


async def test_every_command_speaks_every_language_within_discords_limits(harness: Harness) -> None:
    await harness.start_bot()
    synced = harness.discord.synced_commands()
    for command in synced:
        for kind, node, siblings in _named_nodes(command):
            where = (command["name"], node["name"])
            names = node.get("name_localizations") or {}
            descriptions = node.get("description_localizations") or {}
            # English is the names and descriptions themselves (the contract); never a localization.
            assert not {"en-US", "en-GB"} & (names.keys() | descriptions.keys()), where
            if kind not in {"menu", "choice"}:
                # Every description is said in every language, within Discord's 1-100.
                assert set(TRANSLATED) <= descriptions.keys(), where
                assert all(1 <= len(text) <= 100 for text in descriptions.values()), where
                assert all(text != node["description"] for text in descriptions.values()), where
            if kind == "choice" and node["name"] not in PROPER_NAMES:
                assert set(TRANSLATED) <= names.keys(), where
            for locale, name in names.items():
                if kind in ("slash", "option"):
                    assert _SLASH_NAME.fullmatch(name), (where, locale, name)
                    assert name == name.lower(), (where, locale, name)
                elif kind == "menu":
                    assert 1 <= len(name) <= 32, (where, locale, name)
                else:
                    assert 1 <= len(name) <= 100, (where, locale, name)
            # Discord's es-419 members read the Spanish of Spain rather than English.
            for localized in (names, descriptions):
                if "es-ES" in localized:
                    assert localized.get("es-419") == localized["es-ES"], where
            # Within one list, every name stays distinct in every language.
            if kind in ("option", "choice"):
                for locale in TRANSLATED:
                    shown = [_localized(sibling, "name", locale) for sibling in siblings]
                    assert len(shown) == len(set(shown)), (where, locale, shown)
    for locale in TRANSLATED:
        shown = [(_localized(c, "name", locale), c.get("type", 1)) for c in synced]
        assert len(shown) == len(set(shown)), (locale, shown)


async def test_the_describe_command_as_synced_in_six_languages(harness: Harness) -> None:
    await harness.start_bot()
    describe = next(c for c in harness.discord.synced_commands() if c["name"] == "describe")
    print(json.dumps(describe, indent=2, ensure_ascii=False))
    assert describe["name_localizations"] == {
        "de": "beschreiben",
        "es-ES": "describir",
        "es-419": "describir",
        "fr": "décrire",
        "pt-BR": "descrever",
        "ja": "画像説明",
    }
    assert (
        describe["description_localizations"]["ja"]
        == "画像を、その内容を説明するテキストプロンプトに変換します"
    )
    style = next(option for option in describe["options"] if option["name"] == "style")
    assert style["name_localizations"]["de"] == "stil"
    assert [choice["name_localizations"]["fr"] for choice in style["choices"]][:2] == ["Détaillé", "Court"]
    menu = next(c for c in harness.discord.synced_commands() if c["name"] == "Describe image")
    assert menu["name_localizations"]["ja"] == "画像を説明"
