"""/quota and /quota-admin end to end: the real bot and its tree, the fake Discord, the fake providers."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import discord

from bot.discord.client import ImageBot
from bot.domain.quota import Member
from tests.conftest import Harness, png_bytes

MANAGE_SERVER = discord.Permissions(manage_guild=True).value
ADMIN_ID = 666666666666666666
ROLE_ID = 777777777777777777


def next_midnight() -> int:
    today = datetime.now(UTC).date()
    return int(datetime.combine(today + timedelta(days=1), datetime.min.time(), tzinfo=UTC).timestamp())


def renewal_of(value: str) -> int:
    match = re.search(r"Renews <t:(\d+):R>$", value)
    assert match is not None, value
    return int(match.group(1))


def admin(harness: Harness, subcommand: str, options: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    kwargs.setdefault("user_id", ADMIN_ID)
    kwargs.setdefault("permissions", MANAGE_SERVER)
    return harness.discord.slash("quota-admin", options, subcommand=subcommand, **kwargs)


def with_role_option(payload: dict[str, Any], role_id: int) -> dict[str, Any]:
    """Add a role option (type 8) and its resolved role: the fake's payload builder has no role values."""
    payload["data"]["options"][0]["options"].append({"name": "role", "type": 8, "value": str(role_id)})
    role = {
        "id": str(role_id),
        "name": "patrons",
        "color": 0,
        "hoist": False,
        "position": 1,
        "permissions": "0",
        "managed": False,
        "mentionable": True,
        "flags": 0,
    }
    payload["data"].setdefault("resolved", {}).setdefault("roles", {})[str(role_id)] = role
    return payload


def member(harness: Harness, user_id: int | None = None, roles: tuple[int, ...] = ()) -> Member:
    return Member(harness.discord.guild_ids[0], user_id or harness.discord.default_user_id, roles)


async def used_describes(bot: ImageBot, who: Member) -> int:
    statuses = await bot.core.quotas.status(who)
    return next(s.used for s in statuses if s.kind.value == "describe")


async def test_quota_shows_used_left_renewal_and_running_tasks(harness: Harness) -> None:
    bot = await harness.start_bot(describe_provider="freepik")
    await harness.interact(bot, harness.describe_payload(png_bytes(colour=(10, 20, 30))))
    harness.freepik.seconds_per_state = 1  # keep the next task running while /quota is asked
    running = harness.describe_payload(png_bytes(colour=(40, 50, 60)))
    await harness.discord.send_interaction(running)
    await harness.discord.wait_for_call(lambda c: running["token"] in c.path and c.method == "PATCH")

    payload = harness.discord.slash("quota")
    midnight = next_midnight()
    await harness.discord.send_interaction(payload)
    call = await harness.discord.wait_for_call(lambda c: payload["token"] in c.path)
    assert call.json["type"] == 4
    assert call.json["data"]["flags"] == 64  # only the member sees it
    embed = call.json["data"]["embeds"][0]
    print("/quota embed:", json.dumps(embed, indent=2, ensure_ascii=False))
    assert embed["title"] == "Your quota today"
    renews = renewal_of(embed["fields"][0]["value"])
    assert renews in (midnight, next_midnight())  # the same unless the test ran across midnight UTC
    assert embed["fields"] == [
        {
            "name": "Image to prompt",
            "value": f"2 used · **23 left** of 25\nRenews <t:{renews}:R>",
            "inline": False,
        },
        {
            "name": "Image generation",
            "value": f"0 used · **10 left** of 10\nRenews <t:{renews}:R>",
            "inline": False,
        },
        {"name": "Running now", "value": "1 of at most 2 at once", "inline": False},
    ]
    harness.freepik.seconds_per_state = 0
    await harness.settle(bot)
    assert await used_describes(bot, member(harness)) == 2


async def test_a_failed_task_is_refunded(harness: Harness) -> None:
    harness.freepik.outcome = "FAILED"
    bot = await harness.start_bot(describe_provider="freepik")
    token = await harness.interact(bot, harness.describe_payload())
    final = harness.calls_for(token)[-1].json["embeds"][0]
    assert "did not use your quota" in json.dumps(final)
    assert await used_describes(bot, member(harness)) == 0
    rows = await bot.core.db.fetchall("SELECT state, outcome FROM usage")
    assert [tuple(row) for row in rows] == [("refunded", "failed")]


async def test_a_third_concurrent_task_waits_in_line_until_one_of_the_two_ends(harness: Harness) -> None:
    bot = await harness.start_bot(describe_provider="freepik", max_inflight_per_user=2)
    harness.freepik.seconds_per_state = 1
    for colour in ((1, 1, 1), (2, 2, 2)):
        payload = harness.describe_payload(png_bytes(colour=colour))
        await harness.discord.send_interaction(payload)
        await harness.discord.wait_for_call(lambda c, t=payload["token"]: t in c.path and c.method == "PATCH")
    assert harness.freepik.count("POST") == 2

    third = harness.describe_payload(png_bytes(colour=(3, 3, 3)))
    await harness.discord.send_interaction(third)
    await harness.discord.wait_for_call(lambda c: third["token"] in c.path and c.method == "PATCH")
    answer = harness.discord.original_reply(third["token"])
    assert answer["embeds"][0]["title"] == "Image to prompt · Queued · 1st in line"
    assert harness.freepik.count("POST") == 2  # nothing reached the provider for the third yet
    assert await used_describes(bot, member(harness)) == 3  # its unit is held while it waits

    harness.freepik.seconds_per_state = 0
    await harness.settle(bot)
    assert harness.freepik.count("POST") == 3
    answer = harness.discord.original_reply(third["token"])
    assert answer["embeds"][0]["title"] == "Image to prompt · Done"
    assert await used_describes(bot, member(harness)) == 3


async def test_limit_zero_blocks_with_its_own_sentence(harness: Harness) -> None:
    bot = await harness.start_bot(describe_provider="freepik")
    answer = await harness.answer(
        bot, admin(harness, "set", {"scope": "server", "kind": "describe", "limit": 0})
    )
    assert answer["content"] == "Image to prompt for everyone on this server: blocked."

    blocked = await harness.answer(bot, harness.describe_payload())
    assert blocked["content"] == "Image to prompt is switched off for you on this server."
    assert harness.freepik.count() == 0
    assert await used_describes(bot, member(harness)) == 0


async def test_admin_set_grant_reset_and_usage_end_to_end(harness: Harness) -> None:
    bot = await harness.start_bot(describe_provider="freepik")
    guild_id = harness.discord.guild_ids[0]
    alice_id = harness.discord.default_user_id
    alice = harness.discord.make_user(alice_id, "alice")

    async def content(payload: dict[str, Any]) -> str:
        return str((await harness.answer(bot, payload))["content"])

    assert (
        await content(admin(harness, "set", {"scope": "server", "kind": "describe", "limit": 3}))
        == "Image to prompt for everyone on this server: 3 per day (UTC)."
    )
    assert (
        await content(admin(harness, "set", {"scope": "user", "kind": "imagine", "limit": -1, "user": alice}))
        == f"Image generation for <@{alice_id}>: unlimited."
    )
    role_payload = admin(harness, "set", {"scope": "role", "kind": "describe", "limit": 7})
    assert (
        await content(with_role_option(role_payload, ROLE_ID))
        == f"Image to prompt for the role <@&{ROLE_ID}>: 7 per day (UTC)."
    )
    assert await content(admin(harness, "set", {"scope": "role", "kind": "describe", "limit": 4})) == (
        "Pick the role this limit is for (the role option)."
    )
    assert await content(admin(harness, "set", {"scope": "server", "kind": "imagine"})) == (
        "Give a limit (0 blocks, -1 is unlimited), or set clear to remove this rule."
    )

    # The member spends two of the server's three; a member with the role has seven.
    await harness.interact(bot, harness.describe_payload(png_bytes(colour=(5, 5, 5))))
    await harness.interact(bot, harness.describe_payload(png_bytes(colour=(6, 6, 6))))
    harness.freepik.outcome = "FAILED"
    await harness.interact(bot, harness.describe_payload(png_bytes(colour=(7, 7, 7))))
    fields = (await harness.answer(bot, harness.discord.slash("quota")))["embeds"][0]["fields"]
    assert fields[0]["value"].startswith("2 used · **1 left** of 3\n")
    assert fields[1]["value"] == "0 used · unlimited"
    patron = (await harness.answer(bot, harness.discord.slash("quota", user_id=123, roles=[ROLE_ID])))[
        "embeds"
    ][0]
    assert patron["fields"][0]["value"].startswith("0 used · **7 left** of 7\n")

    assert (
        await content(admin(harness, "grant", {"user": alice, "kind": "describe", "amount": 2}))
        == f"Granted <@{alice_id}> 2 extra descriptions for today (UTC); they now have 3 left."
    )
    assert (
        await content(admin(harness, "reset", {"user": alice}))
        == f"Reset <@{alice_id}>'s usage today: 2 spent tasks given back."
    )
    assert await used_describes(bot, member(harness)) == 0

    usage = admin(harness, "usage", {"period": "7 days"})
    await harness.discord.send_interaction(usage)
    sent = await harness.discord.wait_for_call(
        lambda c: c.method == "POST" and c.path.startswith("/webhooks/") and usage["token"] in c.path
    )
    callback = harness.calls_for(usage["token"])[0]
    assert callback.json == {"type": 5, "data": {"flags": 64}}  # ephemeral "thinking" first
    assert sent.status == 200
    embed = sent.json["embeds"][0]
    print("/quota-admin usage embed:", json.dumps(embed, indent=2, ensure_ascii=False))
    assert embed["title"] == "Usage · last 7 days"
    assert embed["description"].endswith("**2** completed · **1** failed · **0** from cache")
    assert embed["fields"] == [
        {
            "name": "Image to prompt · Freepik",
            "value": "2 completed · 1 failed (1 refunded) · 0 from cache",
            "inline": False,
        },
        {"name": "Top members", "value": f"1. <@{alice_id}> — 2 spent", "inline": False},
    ]
    [(filename, data, _), (chart_name, _, _)] = sent.files  # the chart is tested in test_usage_chart.py
    assert (filename, chart_name) == ("usage-7days.csv", "usage-7days.png")
    rows = list(csv.DictReader(io.StringIO(data.decode())))
    print("/quota-admin usage CSV:\n" + data.decode())
    assert [
        (r["user_id"], r["kind"], r["provider"], r["state"], r["outcome"], r["forgiven"]) for r in rows
    ] == [
        (str(alice_id), "describe", "freepik", "committed", "COMPLETED", "1"),
        (str(alice_id), "describe", "freepik", "committed", "COMPLETED", "1"),
        (str(alice_id), "describe", "freepik", "refunded", "failed", "0"),
    ]
    assert all(r["provider_task_id"] and r["started_at"].endswith("+00:00") for r in rows)
    final = harness.discord.original_reply(usage["token"])
    assert final["attachments"][0]["filename"] == "usage-7days.csv"

    audit = await bot.core.quotas.audit_log(guild_id)
    assert [(row["action"], row["actor_id"]) for row in reversed(audit)] == [
        ("set", ADMIN_ID),
        ("set", ADMIN_ID),
        ("set", ADMIN_ID),
        ("grant", ADMIN_ID),
        ("reset", ADMIN_ID),
    ]
    assert json.loads(str(audit[2]["detail"])) == {
        "kind": "describe",
        "limit": 7,
        "scope": "role",
        "target_id": ROLE_ID,
    }


async def test_a_member_without_manage_server_is_refused(harness: Harness) -> None:
    bot = await harness.start_bot(describe_provider="freepik")
    alice = harness.discord.make_user(harness.discord.default_user_id, "alice")
    attempts = [
        ("set", {"scope": "server", "kind": "describe", "limit": 100}),
        ("grant", {"user": alice, "kind": "describe", "amount": 50}),
        ("reset", {"user": alice}),
        ("usage", {}),
    ]
    for subcommand, options in attempts:
        answer = await harness.answer(bot, admin(harness, subcommand, options, permissions=0))
        assert answer["content"] == "Only members with the Manage Server permission can change quotas here."
        assert answer["flags"] & 64
    assert await bot.core.quotas.audit_log(harness.discord.guild_ids[0]) == []
    statuses = await bot.core.quotas.status(member(harness))
    assert [(s.limit, s.source) for s in statuses] == [(25, "default"), (10, "default")]
