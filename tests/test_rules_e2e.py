"""A server's rules end to end: channel switches, spoilers, the prompt blocklist, and /forget-me; on SQLite and
on PostgreSQL alike."""

from __future__ import annotations

import re
from typing import Any

import discord
import pytest

from bot.discord.client import ImageBot
from tests.conftest import Harness
from tests.fakes.providers import GEMINI
from tests.stores import query, table_names

MANAGE_SERVER = discord.Permissions(manage_guild=True).value
ADMIN = 601
MEMBER = 602


@pytest.fixture
def harness(store: dict[str, Any], harness: Harness) -> Harness:
    """The harness, its bots on each store in turn."""
    harness.defaults.update(store)
    return harness


async def _rules(harness: Harness, bot: ImageBot, subcommand: str, **options: Any) -> str:
    payload = harness.discord.slash(
        "rules", options, subcommand=subcommand, user_id=ADMIN, permissions=MANAGE_SERVER
    )
    return str((await harness.answer(bot, payload))["content"])


def _imagine(harness: Harness, prompt: str, **kwargs: Any) -> dict[str, Any]:
    return harness.discord.slash("imagine", {"prompt": prompt}, user_id=MEMBER, **kwargs)


def _buttons(message: dict[str, Any]) -> dict[str, str]:
    return {b["label"]: b["custom_id"] for row in message.get("components", []) for b in row["components"]}


async def _usage_rows(bot: ImageBot) -> int:
    rows = await query(bot.core.db, "SELECT COUNT(*) AS n FROM usage")
    return int(rows[0]["n"])


async def test_channel_switches_refuse_and_say_where_the_command_works(harness: Harness) -> None:
    bot = await harness.start_bot(describe_provider="freepik")
    guild = harness.discord.guild_ids[0]
    art = harness.discord.add_channel(guild, "art")
    chat = harness.discord.add_channel(guild, "chat")

    said = await _rules(harness, bot, "channel", channel=chat, imagine=False)
    assert said == f"<#{chat['id']}>: /describe on, /imagine off; spoilers: never."
    answer = await harness.answer(bot, _imagine(harness, "a cat", channel_id=int(chat["id"])))
    assert answer["content"] == "/imagine is switched off in this channel; use it in another channel."

    # Off everywhere but where the server allows it: the refusal names that channel.
    assert await _rules(harness, bot, "channel", imagine=False) == (
        "Channels without their own rule: /describe on, /imagine off; spoilers: never."
    )
    await _rules(harness, bot, "channel", channel=art, imagine=True)
    answer = await harness.answer(bot, _imagine(harness, "a cat"))
    assert answer["content"] == f"/imagine is switched off in this channel; use it in <#{art['id']}>."

    await _rules(harness, bot, "channel", channel=art, imagine=False)
    answer = await harness.answer(bot, _imagine(harness, "a cat", channel_id=int(art["id"])))
    assert answer["content"] == "/imagine is switched off in every channel of this server."

    await _rules(harness, bot, "channel", channel=chat, describe=False)
    answer = await harness.answer(bot, harness.describe_payload(user_id=MEMBER, channel_id=int(chat["id"])))
    # The art channel has a rule of its own that allows describing: the refusal names it.
    assert answer["content"] == f"/describe is switched off in this channel; use it in <#{art['id']}>."
    assert harness.freepik.count("POST") == 0  # nothing reached a provider
    assert await _usage_rows(bot) == 0  # and nothing was reserved

    # Describe still works where it is on.
    answer = await harness.answer(bot, harness.describe_payload(user_id=MEMBER, channel_id=int(art["id"])))
    assert answer["embeds"][0]["title"] == "Image to prompt · Done"

    shown = await harness.answer(
        bot,
        harness.discord.slash("rules", {}, subcommand="show", user_id=ADMIN, permissions=MANAGE_SERVER),
    )
    channels = shown["embeds"][0]["fields"][0]["value"].splitlines()
    assert channels == [
        "Channels without their own rule: /describe on, /imagine off; spoilers: never.",
        f"<#{art['id']}>: /describe on, /imagine off; spoilers: never.",
        f"<#{chat['id']}>: /describe off, /imagine off; spoilers: never.",
    ]


@pytest.mark.parametrize(
    ("rule", "age_restricted", "spoilered"),
    [
        ("off", False, False),
        ("outside-age-restricted", False, True),
        ("outside-age-restricted", True, False),
        ("always", True, True),
    ],
)
async def test_spoilers_follow_the_channel_rule(
    harness: Harness, rule: str, age_restricted: bool, spoilered: bool
) -> None:
    bot = await harness.start_bot(describe_provider="freepik")
    channel = harness.discord.add_channel(harness.discord.guild_ids[0], "gallery", nsfw=age_restricted)
    await _rules(harness, bot, "channel", channel=channel, spoilers=rule)

    result = await harness.answer(bot, _imagine(harness, "a lighthouse", channel_id=int(channel["id"])))
    (attachment,) = result["attachments"]
    assert attachment["filename"].startswith("SPOILER_") is spoilered
    # An embed cannot hide its image: a spoilered one is shown only as the (spoilered) attachment.
    assert ("image" in result["embeds"][0]) is not spoilered

    described = await harness.answer(
        bot, harness.describe_payload(user_id=MEMBER, channel_id=int(channel["id"]))
    )
    (thumbnail,) = described["attachments"]
    assert thumbnail["filename"].startswith("SPOILER_") is spoilered


@pytest.mark.parametrize(
    "prompt",
    [
        "a Bad Word on a wall",
        "a bád wörd on a wall",
        "a \uff42\uff41\uff44 \uff57\uff4f\uff52\uff44 on a wall",  # full-width letters
        "a b\u200bad w\u200dord on a wall",  # zero-width space and joiner
        "a b.a.d w-o-r-d on a wall",  # punctuation inside the words
        "UGLY!",
        "so u\u0301gly",  # a combining accent
    ],
)
async def test_each_blocklist_evasion_is_caught_before_anything_is_spent(
    harness: Harness, prompt: str
) -> None:
    bot = await harness.start_bot()
    assert await _rules(harness, bot, "blocklist-add", words="bad word, ugly") == (
        "Added 2 to the blocklist (2 in all)."
    )
    answer = await harness.answer(bot, _imagine(harness, prompt))
    assert answer["content"] == (
        "This prompt contains a word or phrase this server does not allow; reword it (this did not use your quota)."
    )
    assert harness.freepik.count("POST") == 0
    assert await _usage_rows(bot) == 0


@pytest.mark.parametrize("prompt", ["a badword and some badges", "an uglyish duckling", "a bad idea, word"])
async def test_words_that_merely_contain_a_blocked_one_pass(harness: Harness, prompt: str) -> None:
    bot = await harness.start_bot()
    await _rules(harness, bot, "blocklist-add", words="bad word, ugly")
    answer = await harness.answer(bot, _imagine(harness, prompt))
    assert answer["embeds"][0]["title"] == "Image generation · Done"


async def test_blocklist_covers_the_edit_modal_and_buttons_and_hides_a_described_prompt(
    harness: Harness,
) -> None:
    bot = await harness.start_bot(describe_provider="freepik")
    harness.freepik.prompt_text = "A gloomy castle under a storm"
    await _rules(harness, bot, "blocklist-add", words="Gloomy")

    # A described prompt with a blocked word is shown behind a spoiler, with a note; not withheld.
    described = await harness.answer(bot, harness.describe_payload(user_id=MEMBER))
    embed = described["embeds"][0]
    assert embed["title"] == "Image to prompt · Done"
    assert embed["description"] == "||```\nA gloomy castle under a storm\n```||"
    notes = [field["value"] for field in embed["fields"] if field["name"] == "Note"]
    assert notes == ["A word in this prompt is on this server's blocklist, so it is hidden behind a spoiler."]

    # Its Imagine button is refused, as is the Edit modal with a blocked word.
    click = harness.discord.button_click(_buttons(described)["Imagine this"], described, user_id=MEMBER)
    refused = await harness.answer(bot, click)
    assert refused["content"].startswith("This prompt contains a word or phrase this server does not allow")

    harness.freepik.prompt_text = "A calm lake"
    generated = await harness.answer(bot, _imagine(harness, "a sunny field"))
    menu = await harness.interact(
        bot, harness.discord.message_command("Edit image", generated, user_id=MEMBER)
    )
    (modal_call,) = harness.calls_for(menu)
    modal = modal_call.json["data"]
    text_input = modal["components"][0]["components"][0]["custom_id"]
    submit = harness.discord.modal_submit(modal["custom_id"], {text_input: "make it GLOOMY"}, user_id=MEMBER)
    refused = await harness.answer(bot, submit)
    assert refused["content"].startswith("This prompt contains a word or phrase this server does not allow")

    assert len(harness.freepik.creates(GEMINI)) == 1  # only the sunny field
    assert await _rules(harness, bot, "blocklist-remove", words="gloomy") == (
        "Removed 1 from the blocklist (0 left)."
    )
    answer = await harness.answer(bot, _imagine(harness, "make it GLOOMY"))
    assert answer["embeds"][0]["title"] == "Image generation · Done"


async def test_rules_need_manage_server_and_each_change_is_audited(harness: Harness) -> None:
    bot = await harness.start_bot()
    payload = harness.discord.slash(
        "rules", {"words": "nope"}, subcommand="blocklist-add", user_id=MEMBER, permissions=0
    )
    answer = await harness.answer(bot, payload)
    assert answer["content"] == "Only members with the Manage Server permission can change the rules here."
    assert await _rules(harness, bot, "blocklist-add", words=" , ,") == (
        "Give at least one word or phrase (separate several with commas)."
    )
    await _rules(harness, bot, "blocklist-add", words="Grim, grim")
    await _rules(harness, bot, "channel", imagine=False)
    rows = await query(bot.core.db, "SELECT actor_id, action, detail FROM audit ORDER BY id")
    assert [(row["actor_id"], row["action"], row["detail"]) for row in rows] == [
        (ADMIN, "blocklist-add", '{"phrases": ["grim"]}'),
        (ADMIN, "rules-channel", '{"channel_id": 0, "describe": true, "imagine": false, "spoilers": "off"}'),
    ]


async def test_forget_me_deletes_the_members_rows_and_keeps_todays_use_counted(harness: Harness) -> None:
    bot = await harness.start_bot(describe_provider="freepik", quota_describe_per_day=3)
    await harness.answer(bot, harness.describe_payload(user_id=MEMBER))
    await harness.answer(bot, _imagine(harness, "a boat"))
    # An admin's changes about the member (a limit, a grant) stay in force, without the member's id.
    admin = {"user_id": ADMIN, "permissions": MANAGE_SERVER}
    user = harness.discord.make_user(MEMBER)
    await harness.interact(
        bot,
        harness.discord.slash(
            "quota-admin", {"kind": "describe", "amount": 1, "user": user}, subcommand="grant", **admin
        ),
    )

    ask = await harness.answer(bot, harness.discord.slash("forget-me", {}, user_id=MEMBER))
    assert ask["content"].startswith("This deletes what the bot keeps about you on this server")
    click = harness.discord.button_click(_buttons(ask)["Forget me"], ask, user_id=MEMBER)
    done = await harness.answer(bot, click)
    assert done["content"] == (
        "Done. Deleted: tasks 2, stored images 2, cached prompts 1. Usage rows that no longer carry your user id: 2."
    )

    # No row anywhere holds the member's id (as a value, or as a number inside a text such as JSON). The
    # bot's own settings (meta: a random key) and its migrations hold nothing of a member.
    as_number = re.compile(rf"(?<!\d){MEMBER}(?!\d)")
    for table in set(await table_names(bot.core.db)) - {"meta", "schema_migrations"}:
        for row in await query(bot.core.db, f"SELECT * FROM {table}"):
            assert str(MEMBER) not in [str(value) for value in row.values()], (table, row)
            assert not any(as_number.search(value) for value in row.values() if isinstance(value, str)), table
    assert set(await table_names(bot.core.db)) >= {"audit", "jobs", "quota_grants", "quota_limits", "usage"}

    # Today's use still counts: three a day, one granted, one spent before forgetting.
    quota = await harness.answer(bot, harness.discord.slash("quota", {}, user_id=MEMBER))
    describe_line = quota["embeds"][0]["fields"][0]["value"]
    assert describe_line.startswith("1 used · **3 left** of 4 (with 1 granted today)")


async def test_forget_me_waits_for_running_tasks(harness: Harness) -> None:
    bot = await harness.start_bot(describe_provider="freepik")
    harness.freepik.seconds_per_state = 3600
    await harness.discord.send_interaction(harness.describe_payload(user_id=MEMBER))
    await harness.discord.wait_for_call(lambda call: call.method == "PATCH")
    ask = harness.discord.slash("forget-me", {}, user_id=MEMBER)
    await harness.discord.send_interaction(ask)
    await harness.discord.wait_for_call(lambda call: ask["token"] in call.path)
    message = harness.discord.original_reply(str(ask["token"]))
    click = harness.discord.button_click(_buttons(message)["Forget me"], message, user_id=MEMBER)
    await harness.discord.send_interaction(click)
    await harness.discord.wait_for_call(lambda call: click["token"] in call.path and call.method == "PATCH")
    answer = harness.discord.original_reply(str(click["token"]))
    assert answer["content"] == (
        "You have 1 task running or waiting on this server; cancel it or let it finish, then ask again."
    )
    harness.freepik.seconds_per_state = 0
    await harness.settle(bot)
