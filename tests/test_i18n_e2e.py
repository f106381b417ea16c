"""Every member in their own language, end to end: the real bot, the fake Discord, the fake providers.

A member's Discord language rides on each interaction (`locale`), the server's too (`guild_locale`, and a
guild's `preferred_locale`); these tests drive the bot in them and assert the words a member sees.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import discord
import pytest

from tests.conftest import Harness, eventually, png_bytes
from tests.fakes.discord import RecordedCall

PROMPT = "a red square on a plain background"
MANAGE_SERVER = discord.Permissions(manage_guild=True).value
ADMIN_ID = 666666666666666666
# Discord shows <t:…:R> in each reader's language; the tests compare sentences around it.
_TIMESTAMP = re.compile(r"<t:\d+:R>")


def plain(text: str) -> str:
    """Replace Discord timestamps with <t:…:R>, so a sentence compares whatever the day."""
    return _TIMESTAMP.sub("<t:…:R>", text)


def buttons(message: dict[str, Any]) -> list[str]:
    return [component["label"] for row in message["components"] for component in row["components"]]


def field_names(embed: dict[str, Any]) -> list[str]:
    return [field["name"] for field in embed["fields"]]


def edits(harness: Harness, token: str) -> list[RecordedCall]:
    return [call for call in harness.calls_for(token) if call.method == "PATCH"]


# What a member sees of a describe and of a quota refusal, in each of the six languages.
SEEN: dict[str, dict[str, Any]] = {
    "en-US": {
        "titles": [
            "Image to prompt · Task created, waiting for the provider",
            "Image to prompt · In progress",
            "Image to prompt · Done",
        ],
        "fields": ["Provider", "Started"],
        "footer": "job",
        "buttons": ["Imagine this", "Show as text"],
        "alt": "the described image",
        "refusal": "You have used your description for today; your quota renews <t:…:R>.",
    },
    "es-ES": {
        "titles": [
            "Imagen a prompt · Tarea creada, esperando al proveedor",
            "Imagen a prompt · En curso",
            "Imagen a prompt · Listo",
        ],
        "fields": ["Proveedor", "Inicio"],
        "footer": "tarea",
        "buttons": ["Imaginar esto", "Mostrar como texto"],
        "alt": "la imagen descrita",
        "refusal": "Ya has usado tu descripción de hoy; tu cuota se renueva <t:…:R>.",
    },
    "de": {
        "titles": [
            "Bild zu Prompt · Aufgabe erstellt, wartet auf den Anbieter",
            "Bild zu Prompt · In Arbeit",
            "Bild zu Prompt · Fertig",
        ],
        "fields": ["Anbieter", "Gestartet"],
        "footer": "Auftrag",
        "buttons": ["Daraus generieren", "Als Text zeigen"],
        "alt": "das beschriebene Bild",
        "refusal": "Du hast deine Beschreibung für heute verbraucht; dein Kontingent erneuert sich <t:…:R>.",
    },
    "fr": {
        "titles": [
            "Image vers prompt · Tâche créée, en attente du fournisseur",
            "Image vers prompt · En cours",
            "Image vers prompt · Terminé",
        ],
        "fields": ["Fournisseur", "Début"],
        "footer": "tâche",
        "buttons": ["Imaginer ceci", "Afficher en texte"],
        "alt": "l’image décrite",
        "refusal": "Tu as utilisé ta description du jour (1 sur 1)\u00a0; ton quota se renouvelle <t:…:R>.",
    },
    "pt-BR": {
        "titles": [
            "Imagem para prompt · Tarefa criada, aguardando o provedor",
            "Imagem para prompt · Em andamento",
            "Imagem para prompt · Concluído",
        ],
        "fields": ["Provedor", "Início"],
        "footer": "tarefa",
        "buttons": ["Imaginar isto", "Mostrar como texto"],
        "alt": "a imagem descrita",
        "refusal": "Você já usou sua descrição de hoje (1 de 1); sua cota se renova <t:…:R>.",
    },
    "ja": {
        "titles": [
            "画像からプロンプト · タスク作成済み・プロバイダーの応答待ち",
            "画像からプロンプト · 処理中",
            "画像からプロンプト · 完了",
        ],
        "fields": ["プロバイダー", "開始"],
        "footer": "ジョブ",
        "buttons": ["これで画像生成", "テキストで表示"],
        "alt": "説明された画像",
        "refusal": "今日の画像説明の利用枠（1回）を使い切りました。利用枠は<t:…:R>に更新されます。",
    },
}


@pytest.mark.parametrize("locale", list(SEEN))
async def test_a_describe_and_a_quota_refusal_in_the_members_language(harness: Harness, locale: str) -> None:
    seen = SEEN[locale]
    harness.freepik.prompt_text = PROMPT
    bot = await harness.start_bot(describe_provider="freepik", quota_describe_per_day=1)
    token = await harness.interact(bot, harness.describe_payload(locale=locale))

    calls = edits(harness, token)
    assert [call.json["embeds"][0]["title"] for call in calls] == seen["titles"]
    final = harness.discord.original_message(token)
    embed = final["embeds"][0]
    # The prompt stays as the provider wrote it; everything around it is in the member's language.
    assert embed["description"] == f"```\n{PROMPT}\n```"
    assert field_names(embed) == seen["fields"]
    assert embed["footer"]["text"].startswith(seen["footer"] + " ")
    assert buttons(final) == seen["buttons"]
    assert calls[-1].json["attachments"][0]["description"] == seen["alt"]

    refused = await harness.interact(
        bot, harness.describe_payload(png_bytes(colour=(1, 2, 3)), locale=locale)
    )
    sentence = harness.discord.original_message(refused)["content"]
    assert plain(sentence) == seen["refusal"]
    assert harness.freepik.count("POST") == 1
    print(f"\n[{locale}] describe result:\n" + json.dumps(_as_seen(final), indent=2, ensure_ascii=False))
    print(f"[{locale}] quota refusal: {sentence}")


def _as_seen(message: dict[str, Any]) -> dict[str, Any]:
    """What a member sees of a result message: its embed's words and its buttons."""
    embed = message["embeds"][0]
    return {
        "title": embed["title"],
        "description": embed["description"],
        "fields": {field["name"]: field["value"] for field in embed["fields"]},
        "footer": embed["footer"]["text"],
        "buttons": buttons(message),
    }


async def test_plurals_follow_each_language(harness: Harness) -> None:
    """Two left of a daily five: German says "alle 2", Japanese has one form, English says "descriptions"."""
    bot = await harness.start_bot(describe_provider="freepik", quota_describe_per_day=2)
    for colour in ((1, 1, 1), (2, 2, 2)):
        await harness.interact(bot, harness.describe_payload(png_bytes(colour=colour)))
    answers = {}
    for locale in ("de", "ja", "en-US", "fr"):
        token = await harness.interact(
            bot, harness.describe_payload(png_bytes(colour=(3, 3, 3)), locale=locale)
        )
        answers[locale] = plain(harness.discord.original_message(token)["content"])
    assert answers == {
        "de": "Du hast alle 2 Beschreibungen für heute verbraucht; dein Kontingent erneuert sich <t:…:R>.",
        "ja": "今日の画像説明の利用枠（2回）を使い切りました。利用枠は<t:…:R>に更新されます。",
        "en-US": "You have used all 2 descriptions for today; your quota renews <t:…:R>.",
        "fr": "Tu as utilisé tes 2 descriptions du jour\u00a0; ton quota se renouvelle <t:…:R>.",
    }


BAD_INPUT = {
    "ja": (
        "このファイルは読み取れる画像ではありません。PNG・JPEG・WebP・GIF のいずれかの画像を送ってください。",
        "画像かリンクのどちらか一方だけを指定してください。",
    ),
    "de": (
        "Diese Datei ist kein Bild, das ich lesen kann; schick ein Bild als PNG, JPEG, WebP oder GIF.",
        "Gib entweder ein Bild oder einen Link an, nicht beides.",
    ),
    # Korean is a Discord language the bot lacks: English, never a key or a blank.
    "ko": (
        "That file is not an image I can read; send a PNG, JPEG, WebP or GIF.",
        "Give either an image or a URL, not both.",
    ),
}


@pytest.mark.parametrize("locale", list(BAD_INPUT))
async def test_bad_input_is_refused_in_the_members_language(harness: Harness, locale: str) -> None:
    bot = await harness.start_bot()
    not_an_image = harness.discord.add_attachment(
        b"just some text, not a picture\n", "notes.png", "image/png"
    )
    token = await harness.interact(
        bot, harness.discord.slash("describe", attachments={"image": not_an_image}, locale=locale)
    )
    unreadable, both = BAD_INPUT[locale]
    assert harness.discord.original_message(token)["content"] == unreadable

    photo = harness.discord.add_attachment(png_bytes(), "photo.png", "image/png")
    token = await harness.interact(
        bot,
        harness.discord.slash(
            "describe", {"url": "https://example.com/a.png"}, attachments={"image": photo}, locale=locale
        ),
    )
    answer = harness.discord.original_message(token)
    assert answer["content"] == both
    assert answer["flags"] & 64  # only the member sees it
    assert harness.freepik.count() == harness.novita.count() == 0


USAGE = {
    "ja": {
        "title": "利用状況 · 今日",
        "description": "まで\n完了 **1** 件 · 失敗 **0** 件 · キャッシュ **0** 件",
        "fields": [
            ("画像からプロンプト · Freepik", "完了1件 · 失敗0件（返却0件） · キャッシュ0件"),
            ("よく使っているメンバー", "1. <@{user}> — 1回使用"),
        ],
        "footer": "期間中のすべてのタスクは添付の CSV にあります",
        "quota": ("画像からプロンプト", "1回使用 · **残り24回**（25回中）\n<t:…:R>に更新"),
    },
    "de": {
        "title": "Nutzung · heute",
        "description": "UTC\n**1** fertig · **0** fehlgeschlagen · **0** aus dem Cache",
        "fields": [
            ("Bild zu Prompt · Freepik", "1 fertig · 0 fehlgeschlagen (0 erstattet) · 0 aus dem Cache"),
            ("Aktivste Mitglieder", "1. <@{user}> — 1 verbraucht"),
        ],
        "footer": "Alle Aufgaben des Zeitraums stehen in der angehängten CSV-Datei",
        "quota": ("Bild zu Prompt", "1 genutzt · **24 übrig** von 25\nErneuert sich <t:…:R>"),
    },
}


@pytest.mark.parametrize("locale", list(USAGE))
async def test_the_usage_report_and_quota_in_the_members_language(harness: Harness, locale: str) -> None:
    expected = USAGE[locale]
    user = harness.discord.default_user_id
    bot = await harness.start_bot(describe_provider="freepik")
    await harness.interact(bot, harness.describe_payload())

    usage = harness.discord.slash(
        "quota-admin", {}, subcommand="usage", user_id=ADMIN_ID, permissions=MANAGE_SERVER, locale=locale
    )
    await harness.interact(bot, usage)
    [report] = harness.discord.followup_messages(usage["token"]) or [
        harness.discord.original_message(usage["token"])
    ]
    embed = report["embeds"][0]
    print(f"\n[{locale}] /quota-admin usage:", json.dumps(embed, indent=2, ensure_ascii=False))
    assert embed["title"] == expected["title"]
    assert embed["description"].endswith(expected["description"])
    assert [(f["name"], f["value"]) for f in embed["fields"]] == [
        (name, value.format(user=user)) for name, value in expected["fields"]
    ]
    assert embed["footer"]["text"] == expected["footer"]

    quota = await harness.answer(bot, harness.discord.slash("quota", locale=locale))
    first = quota["embeds"][0]["fields"][0]
    assert (first["name"], plain(first["value"])) == expected["quota"]


# --- messages that belong to no member --------------------------------------------------------------


@pytest.mark.parametrize(
    ("guild_locale", "default_locale", "expected"),
    [
        pytest.param(
            "de",
            "en-US",
            (
                "hier ist dein Ergebnis (die ursprüngliche Nachricht wurde gelöscht):",
                "Bild zu Prompt · Fertig",
            ),
            id="the server's language",
        ),
        pytest.param(
            "ko",
            "fr",
            (
                "voici ton résultat (le message d’origine a été supprimé)\u00a0:",
                "Image vers prompt · Terminé",
            ),
            id="a server language the bot lacks: DEFAULT_LOCALE",
        ),
        pytest.param(
            "en-US",
            "de",
            (
                "hier ist dein Ergebnis (die ursprüngliche Nachricht wurde gelöscht):",
                "Bild zu Prompt · Fertig",
            ),
            id="Discord's en-US default says nothing: DEFAULT_LOCALE",
        ),
        pytest.param(
            "ko",
            "en-US",
            ("your result is here (the original message was deleted):", "Image to prompt · Done"),
            id="neither: English",
        ),
    ],
)
async def test_a_channel_post_after_the_token_failed_is_in_the_servers_language(
    harness: Harness, guild_locale: str, default_locale: str, expected: tuple[str, str]
) -> None:
    harness.discord.set_guild_locale(guild_locale)
    bot = await harness.start_bot(describe_provider="freepik", default_locale=default_locale)
    # The first edit is refused as if the token had expired: the end is posted anew in the channel.
    harness.discord.fail_next("PATCH", r"/webhooks/.*/messages/@original", status=401, code=50027, times=1)
    await harness.interact(bot, harness.describe_payload(locale="ja"))

    [post] = [
        call for call in harness.discord.calls if call.method == "POST" and call.path.startswith("/channels/")
    ]
    content, title = expected
    assert post.json["content"] == f"<@{harness.discord.default_user_id}>, {content}"
    assert post.json["embeds"][0]["title"] == title


async def test_a_job_keeps_its_members_language_across_a_restart(harness: Harness) -> None:
    harness.freepik.seconds_per_state = 0.4
    harness.discord.set_guild_locale("fr")
    first = await harness.start_bot(describe_provider="freepik")
    payload = harness.describe_payload(locale="ja")
    await harness.discord.send_interaction(payload)
    token = payload["token"]
    await harness.discord.wait_for_call(lambda call: call.method == "PATCH" and token in call.path)
    await harness.stop_bot(first)
    [row] = await first.core.db.fetchall("SELECT member_locale, guild_locale FROM jobs")
    assert (row["member_locale"], row["guild_locale"]) == ("ja", "fr")

    # Back 15 minutes later: the token is dead, the bot edits the member's message with its own token.
    harness.discord.age_interaction(token, 15 * 60)
    second = await harness.start_bot(clock=lambda: time.time() + 15 * 60, task_timeout_seconds=3600)
    await harness.settle(second)
    message = harness.discord.original_message(token)
    assert message["embeds"][0]["title"] == "画像からプロンプト · 完了"
    assert buttons(message) == ["これで画像生成", "テキストで表示"]


async def test_the_mention_triggers_reply_is_in_the_servers_language(harness: Harness) -> None:
    harness.discord.set_guild_locale("pt-BR")
    harness.novita.prompt_text = PROMPT
    bot = await harness.start_bot(describe_provider="novita", mention_trigger=True)
    fake = harness.discord
    photo = fake.add_attachment(png_bytes((72, 54)), "holiday.png", "image/png")
    target = fake.make_message(content="look", attachments=[photo])
    ask = fake.make_message(
        content=f"<@{fake.bot_user_id}> what is this?",
        mentions=[fake.bot_user],
        message_reference={
            "type": 0,
            "message_id": target["id"],
            "channel_id": target["channel_id"],
            "guild_id": target["guild_id"],
        },
    )
    ask["member"] = {"roles": [], "joined_at": ask["timestamp"], "deaf": False, "mute": False, "flags": 0}

    def replies() -> list[dict[str, Any]]:
        return [m for m in fake.channel_messages() if m.get("message_reference")]

    await fake.dispatch("MESSAGE_CREATE", ask)
    await eventually(
        lambda: any(m["embeds"] and m["embeds"][0]["title"].endswith("Concluído") for m in replies()),
        "the reply to show the result",
    )
    await harness.settle(bot)
    posts = [c for c in fake.calls if c.method == "POST" and c.path.endswith("/messages")]
    assert posts[0].json["embeds"][0]["title"] == "Imagem para prompt · Na fila"
    [reply] = replies()
    assert reply["embeds"][0]["title"] == "Imagem para prompt · Concluído"
    assert buttons(reply) == ["Imaginar isto", "Mostrar como texto"]
