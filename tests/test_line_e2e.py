"""The line: tasks past MAX_INFLIGHT_PER_PROVIDER wait their turn, members take turns, and Cancel works; on
SQLite and on PostgreSQL alike."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import discord
import pytest

from bot.discord.client import ImageBot
from bot.domain.line import shown_place
from tests.conftest import Harness, eventually, png_bytes
from tests.stores import query

ALICE, BOB, CAROL = 501, 502, 503
MANAGE_MESSAGES = discord.Permissions(manage_messages=True).value


@pytest.fixture
def harness(store: dict[str, Any], harness: Harness) -> Harness:
    """The harness, its bots on each store in turn."""
    harness.defaults.update(store)
    return harness


def _titles(harness: Harness, token: str) -> list[str]:
    """The titles the message showed, edit by edit."""
    return [
        call.json["embeds"][0]["title"]
        for call in harness.calls_for(token)
        if call.method == "PATCH" and call.json and call.json.get("embeds")
    ]


async def _ask(harness: Harness, user_id: int, number: int) -> str:
    """Send one describe of a distinct image (so no answer comes from the cache); return its token."""
    payload = harness.describe_payload(
        png_bytes(colour=(number, 255 - number, user_id % 256)), user_id=user_id
    )
    await harness.discord.send_interaction(payload)
    return str(payload["token"])


async def _jobs_of(bot: ImageBot, user_id: int) -> int:
    rows = await query(bot.core.db, "SELECT COUNT(*) AS n FROM jobs WHERE user_id = ?", user_id)
    return int(rows[0]["n"])


async def _saved(bot: ImageBot, user_id: int, count: int) -> None:
    for _ in range(1000):
        if await _jobs_of(bot, user_id) >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"member {user_id}'s {count} jobs were never saved")


async def _click(harness: Harness, payload: dict[str, Any]) -> str:
    """Send a click and wait for its answer (not for every job to end, as `interact` does)."""
    await harness.discord.send_interaction(payload)
    token = str(payload["token"])
    await harness.discord.wait_for_call(lambda call: "/webhooks/" in call.path and token in call.path)
    return token


def _buttons(message: dict[str, Any]) -> dict[str, str]:
    return {
        button["label"]: button["custom_id"]
        for row in message.get("components", [])
        for button in row["components"]
    }


async def _one_running_one_waiting(harness: Harness, bot: ImageBot) -> tuple[str, dict[str, Any]]:
    """On a bot that runs one task per provider: ALICE's first task is held at the provider and her second
    waits in line; return the second's token and message once its place is shown."""
    harness.freepik.seconds_per_state = 3600
    await _ask(harness, ALICE, 1)
    await _saved(bot, ALICE, 1)
    waiting = await _ask(harness, ALICE, 2)
    await eventually(lambda: bool(_titles(harness, waiting)), "the place is shown")
    return waiting, harness.discord.original_reply(waiting)


async def test_a_line_of_30_takes_turns_shows_places_and_edits_only_on_change(harness: Harness) -> None:
    bot = await harness.start_bot(
        describe_provider="freepik",
        max_inflight_per_provider=2,
        max_inflight_per_user=30,
        quota_describe_per_day=50,
    )
    harness.freepik.hold = asyncio.Event()  # nothing the provider is sent is answered yet
    asked = {ALICE: 15, BOB: 10, CAROL: 5}
    tokens: dict[int, list[str]] = {}
    for user_id, count in asked.items():
        tokens[user_id] = []
        for number in range(count):  # one at a time, so the line's order is the order asked in
            tokens[user_id].append(await _ask(harness, user_id, number))
            await _saved(bot, user_id, number + 1)
    everyone = [token for user_tokens in tokens.values() for token in user_tokens]
    await eventually(
        lambda: all(_titles(harness, token) for token in everyone[2:]), "every waiting task shows its place"
    )
    # Turns: Carol's fifth comes after five rounds, while Alice's last waits behind everyone.
    assert _titles(harness, tokens[CAROL][-1]) == ["Image to prompt · Queued · about 15th in line"]
    assert _titles(harness, tokens[ALICE][-1])[-1] == "Image to prompt · Queued · about 30th in line"
    assert _titles(harness, tokens[BOB][0]) == ["Image to prompt · Queued · 1st in line"]

    released = len(harness.discord.calls)
    harness.freepik.hold.set()
    await harness.settle(bot, timeout=60)

    rows = await query(bot.core.db, "SELECT user_id, state FROM jobs ORDER BY dispatched_at")
    assert {row["state"] for row in rows} == {"COMPLETED"}
    # Alice asked first and took both places; then each member in turn, until one has nothing waiting.
    expected = [ALICE, ALICE]
    waiting = {ALICE: 13, BOB: 10, CAROL: 5}
    while any(waiting.values()):
        for user_id in (BOB, CAROL, ALICE):
            if waiting[user_id]:
                expected.append(user_id)
                waiting[user_id] -= 1
    assert [int(row["user_id"]) for row in rows] == expected

    arriving = moving = place_edits = 0
    for token in everyone:
        titles = _titles(harness, token)
        assert titles[-1] == "Image to prompt · Done"
        assert all(a != b for a, b in itertools.pairwise(titles)), titles  # edited on change only
        after = [
            call.json["embeds"][0]["title"]
            for call in harness.discord.calls[released:]
            if token in call.path and call.method == "PATCH" and call.json and call.json.get("embeds")
        ]
        arriving += len(titles) - len(after)
        moving += len(after)
        # Once no one new joins, a place only moves forward, and is edited once per shown place it
        # passes (exact near the front, rounded further back), then once per state at the provider.
        places = [_place(title) for title in after if "in line" in title]
        place_edits += len(places)
        assert places == sorted(places, reverse=True), titles
        at_release = _place(titles[len(titles) - len(after) - 1]) if len(titles) > len(after) else 0
        assert len(places) <= len({shown_place(p) for p in range(1, at_release + 1)}), titles
        assert len(after) - len(places) <= 3, after
    print(
        "\nwhat Alice's last task showed, edit by edit:\n  "
        + "\n  ".join(_titles(harness, tokens[ALICE][-1]))
    )
    print(
        f"line of 30, cap 2, no coalescing: {arriving} edits while the line formed, {moving} while it "
        f"moved ({arriving + moving} in all); of those while it moved, {place_edits} showed a new place, where "
        f"one edit per place passed would be {28 * 29 // 2}, and the rest the states at the provider"
    )


def _place(title: str) -> int:
    """The place a title shows ("Queued · about 25th in line" -> 25)."""
    return int("".join(c for c in title.split("·")[2] if c.isdigit()))


async def test_a_restart_keeps_the_line_and_its_order(harness: Harness) -> None:
    settings = {"describe_provider": "freepik", "max_inflight_per_provider": 1, "max_inflight_per_user": 5}
    bot = await harness.start_bot(**settings)
    harness.freepik.seconds_per_state = 3600  # the running task stays at the provider
    running = await _ask(harness, ALICE, 1)
    await _saved(bot, ALICE, 1)
    waiting = []
    for user_id, number in ((ALICE, 2), (BOB, 3), (ALICE, 4)):
        waiting.append(await _ask(harness, user_id, number))
        await _saved(bot, user_id, {2: 2, 3: 1, 4: 3}[number])
    await eventually(lambda: all(_titles(harness, token) for token in waiting), "the places are shown")
    await harness.stop_bot(bot)

    rows = await query(
        bot.core.db, "SELECT user_id FROM jobs WHERE dispatched_at IS NULL ORDER BY created_at"
    )
    assert [int(row["user_id"]) for row in rows] == [ALICE, BOB, ALICE]

    harness.freepik.seconds_per_state = 0
    restarted = await harness.start_bot(**settings)
    await harness.settle(restarted)
    await eventually(
        lambda: all(_titles(harness, t)[-1:] == ["Image to prompt · Done"] for t in [running, *waiting]),
        "every task in the line is done",
    )
    order = await query(restarted.core.db, "SELECT user_id FROM jobs ORDER BY dispatched_at")
    assert [int(row["user_id"]) for row in order] == [ALICE, BOB, ALICE, ALICE]
    # Bob had not been served, so his task went ahead of Alice's second and third.
    assert _titles(harness, waiting[1])[0] == "Image to prompt · Queued · 1st in line"
    assert _titles(harness, waiting[2])[0] == "Image to prompt · Queued · 3rd in line"


async def test_cancel_in_line_is_free_and_cancel_at_the_provider_counts(harness: Harness) -> None:
    bot = await harness.start_bot(describe_provider="freepik", max_inflight_per_provider=1)
    harness.freepik.seconds_per_state = 3600
    running = await _ask(harness, ALICE, 1)
    await harness.discord.wait_for_call(lambda call: running in call.path and call.method == "PATCH")
    waiting = await _ask(harness, ALICE, 2)
    await eventually(lambda: bool(_titles(harness, waiting)), "the second task's place is shown")

    # In line: gone at once, and it costs nothing.
    message = harness.discord.original_reply(waiting)
    assert _buttons(message) == {"Cancel": message["components"][0]["components"][0]["custom_id"]}
    token = await _click(
        harness, harness.discord.button_click(_buttons(message)["Cancel"], message, user_id=ALICE)
    )
    answer = harness.discord.original_reply(token)
    assert answer["content"] == "Cancelled; it did not count against the quota."
    cancelled = harness.discord.original_reply(waiting)
    assert cancelled["embeds"][0]["title"] == "Image to prompt · Cancelled"
    assert (
        cancelled["embeds"][0]["description"]
        == "Cancelled while waiting in line; it did not count against the quota."
    )
    assert not cancelled.get("components")

    # At the provider: the button says it will count, and acts only when confirmed.
    message = harness.discord.original_reply(running)
    token = await _click(
        harness, harness.discord.button_click(_buttons(message)["Cancel"], message, user_id=ALICE)
    )
    confirmation = harness.discord.original_reply(token)
    assert confirmation["content"] == (
        "Freepik is already working on this task and charges for it, so it still counts against the quota "
        "if you cancel it now. Cancel it anyway?"
    )
    assert harness.discord.original_reply(running)["embeds"][0]["title"] != "Image to prompt · Cancelled"
    sure = harness.discord.button_click(_buttons(confirmation)["Cancel anyway"], confirmation, user_id=ALICE)
    await _click(harness, sure)
    polls_before = len(harness.freepik.requests)  # the drive has ended: nothing asks for the task after this
    confirmation = harness.discord.original_reply(token)
    assert (
        confirmation["content"]
        == "Cancelled; it counted against the quota, since Freepik had already taken it."
    )
    assert not confirmation.get("components")
    shown = harness.discord.original_reply(running)
    assert shown["embeds"][0]["title"] == "Image to prompt · Cancelled"
    assert (
        shown["embeds"][0]["description"]
        == "Cancelled after Freepik had taken it; it counted against the quota."
    )

    # The provider finishes later: nobody asks for it any more, and the message stays as it is.
    harness.freepik.seconds_per_state = 0
    after = await harness.interact(bot, harness.describe_payload(png_bytes(colour=(9, 9, 9)), user_id=ALICE))
    assert _titles(harness, after)[-1] == "Image to prompt · Done"
    (cancelled_task,) = await query(
        bot.core.db,
        "SELECT provider_task_id FROM jobs WHERE state = 'CANCELLED' AND provider_task_id IS NOT NULL",
    )
    task_id = cancelled_task["provider_task_id"]
    assert not [r for r in harness.freepik.requests[polls_before:] if task_id in r.path]
    assert harness.discord.original_reply(running)["embeds"][0]["title"] == "Image to prompt · Cancelled"

    usage = await query(bot.core.db, "SELECT state, outcome FROM usage ORDER BY id")
    assert [tuple(row.values()) for row in usage] == [
        ("committed", "CANCELLED"),
        ("refunded", "CANCELLED"),
        ("committed", "COMPLETED"),
    ]


async def test_only_the_member_or_a_moderator_may_cancel(harness: Harness) -> None:
    bot = await harness.start_bot(describe_provider="freepik", max_inflight_per_provider=1)
    waiting, message = await _one_running_one_waiting(harness, bot)

    click = harness.discord.button_click(_buttons(message)["Cancel"], message, user_id=BOB)
    token = await _click(harness, click)
    answer = harness.discord.original_reply(token)
    assert answer["content"] == (
        "Only the member who asked, or a member who may manage messages, can cancel this task."
    )
    assert harness.discord.original_reply(waiting)["embeds"][0]["title"].startswith(
        "Image to prompt · Queued"
    )

    moderator = harness.discord.button_click(
        _buttons(message)["Cancel"], message, user_id=CAROL, permissions=MANAGE_MESSAGES
    )
    await _click(harness, moderator)
    assert harness.discord.original_reply(waiting)["embeds"][0]["title"] == "Image to prompt · Cancelled"

    again = harness.discord.button_click(_buttons(message)["Cancel"], message, user_id=ALICE)
    token = await _click(harness, again)
    answer = harness.discord.original_reply(token)
    assert answer["content"] == "This task has already ended; there is nothing to cancel."
    harness.freepik.seconds_per_state = 0
    await harness.settle(bot)


async def test_cancel_works_after_a_restart(harness: Harness) -> None:
    settings = {"describe_provider": "freepik", "max_inflight_per_provider": 1}
    bot = await harness.start_bot(**settings)
    waiting, message = await _one_running_one_waiting(harness, bot)
    await harness.stop_bot(bot)

    restarted = await harness.start_bot(**settings)
    click = harness.discord.button_click(_buttons(message)["Cancel"], message, user_id=ALICE)
    token = await _click(harness, click)
    answer = harness.discord.original_reply(token)
    assert answer["content"] == "Cancelled; it did not count against the quota."
    assert harness.discord.original_reply(waiting)["embeds"][0]["title"] == "Image to prompt · Cancelled"
    harness.freepik.seconds_per_state = 0
    await harness.settle(restarted)
