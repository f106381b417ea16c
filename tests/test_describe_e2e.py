"""/describe end to end: the real bot, the fake Discord, the fake providers."""

from __future__ import annotations

import asyncio
import base64

from tests.conftest import Harness, png_bytes
from tests.fakes.openapi import validate_freepik_request


async def test_describe_through_freepik_edits_once_per_new_state(harness: Harness) -> None:
    harness.freepik.prompt_text = "a red square on a plain background"
    bot = await harness.start_bot(describe_provider="freepik")
    token = await harness.interact(bot, harness.describe_payload())

    calls = harness.calls_for(token)
    # Acknowledge, then one edit for each new state: CREATED, IN_PROGRESS, COMPLETED. Nothing more.
    assert [(call.method, call.path.rsplit("/", 1)[-1]) for call in calls] == [
        ("POST", "callback"),
        ("PATCH", "@original"),
        ("PATCH", "@original"),
        ("PATCH", "@original"),
    ]
    assert calls[0].json["type"] == 5  # deferred "thinking"
    titles = [call.json["embeds"][0]["title"] for call in calls[1:]]
    assert titles == [
        "Image to prompt · Task created, waiting for the provider",
        "Image to prompt · In progress",
        "Image to prompt · Done",
    ]
    final = calls[-1]
    embed = final.json["embeds"][0]
    assert "a red square on a plain background" in embed["description"]
    assert embed["description"].startswith("```")
    assert embed["thumbnail"]["url"] == "attachment://input.png"
    assert any(field["name"] == "Started" and field["value"].startswith("<t:") for field in embed["fields"])
    assert [name for name, _, _ in final.files] == ["input.png"]
    buttons = [c["custom_id"] for row in final.json["components"] for c in row["components"]]
    assert [b.split(":")[1] for b in buttons] == ["imagine", "text"]

    # One create and two polls reached Freepik, each conforming to the official OpenAPI file.
    assert harness.freepik.count("POST") == 1
    for request in harness.freepik.requests:
        validate_freepik_request(request)
    sent = harness.freepik.creates()[0].json["image"]
    # An opaque image is re-encoded as JPEG (metadata stripped); the data URI says so truthfully.
    assert sent.startswith("data:image/jpeg;base64,")
    assert base64.b64decode(sent.split(",", 1)[1])[:3] == b"\xff\xd8\xff"

    statuses = await bot.core.quotas.status(_member(harness))
    assert statuses[0].used == 1


async def test_describe_through_novita_is_one_edit(harness: Harness) -> None:
    harness.novita.prompt_text = "a photo of a cat"
    # An answer that comes within the coalescing window needs no "In progress" edit before it.
    bot = await harness.start_bot(describe_provider="novita", edit_coalesce_seconds=5)
    token = await harness.interact(bot, harness.describe_payload())
    calls = harness.calls_for(token)
    assert [call.method for call in calls] == ["POST", "PATCH"]
    assert "a photo of a cat" in calls[-1].json["embeds"][0]["description"]
    request = harness.novita.requests[0]
    assert request.headers["authorization"] == "Bearer test-novita-key"
    assert not request.json["image_file"].startswith("data:")


async def test_a_slow_synchronous_answer_shows_in_progress_meanwhile(harness: Harness) -> None:
    """Novita has no task states; an answer slower than the coalescing window still shows it is working."""
    harness.novita.hold = asyncio.Event()
    bot = await harness.start_bot(describe_provider="novita", edit_coalesce_seconds=0.05)
    payload = harness.describe_payload()
    await harness.discord.send_interaction(payload)
    token = str(payload["token"])
    await harness.discord.wait_for_call(lambda call: call.method == "PATCH" and token in call.path)
    assert harness.discord.original_message(token)["embeds"][0]["title"] == "Image to prompt · In progress"
    harness.novita.hold.set()
    await harness.settle(bot)
    titles = [call.json["embeds"][0]["title"] for call in harness.calls_for(token) if call.method == "PATCH"]
    assert titles == ["Image to prompt · In progress", "Image to prompt · Done"]
    rows = await bot.core.db.fetchall("SELECT state FROM usage")
    assert [row["state"] for row in rows] == ["committed"]


async def test_provider_option_picks_the_provider(harness: Harness) -> None:
    bot = await harness.start_bot(describe_provider="freepik")
    await harness.interact(bot, harness.describe_payload(options={"provider": "novita"}))
    assert harness.novita.count() == 1
    assert harness.freepik.count() == 0


def _member(harness: Harness):
    from bot.domain.quota import Member

    return Member(guild_id=harness.discord.guild_ids[0], user_id=harness.discord.default_user_id)


async def test_png_helper_makes_a_png() -> None:
    assert png_bytes()[:4] == b"\x89PNG"


async def test_failed_task_refunds_the_quota(harness: Harness) -> None:
    harness.freepik.outcome = "FAILED"
    bot = await harness.start_bot(describe_provider="freepik")
    token = await harness.interact(bot, harness.describe_payload())
    final = harness.calls_for(token)[-1].json["embeds"][0]
    assert final["title"] == "Image to prompt · Failed"
    assert final["description"] == (
        "Freepik could not finish this task; try again or with another image (this did not use your quota)."
    )
    statuses = await bot.core.quotas.status(_member(harness))
    assert statuses[0].used == 0


async def test_exhausted_quota_is_refused_before_any_provider_request(harness: Harness) -> None:
    bot = await harness.start_bot(describe_provider="freepik", quota_describe_per_day=1)
    await harness.interact(bot, harness.describe_payload())
    assert harness.freepik.count("POST") == 1
    token = await harness.interact(bot, harness.describe_payload(png_bytes(colour=(1, 2, 3))))
    sentence = harness.discord.original_message(token)["content"]
    assert sentence.startswith("You have used your description for today; your quota renews <t:")
    assert harness.freepik.count("POST") == 1


async def test_wrong_key_says_the_bot_is_misconfigured(harness: Harness, caplog) -> None:
    # Novita is not configured here, so there is nothing to fall back to.
    bot = await harness.start_bot(
        describe_provider="freepik", freepik_api_key="wrong-key", novita_api_key=None
    )
    token = await harness.interact(bot, harness.describe_payload())
    await harness.interact(bot, harness.describe_payload(png_bytes(colour=(9, 9, 9))))
    final = harness.calls_for(token)[-1].json["embeds"][0]
    assert final["description"] == (
        "The bot is misconfigured: Freepik rejected its API key or plan; please tell a server admin "
        "(this did not use your quota)."
    )
    assert (await bot.core.quotas.status(_member(harness)))[0].used == 0
    # The admin reads it in the log once a minute, not once per request; the key never appears.
    key_lines = [r for r in caplog.records if "rejected the bot's API key" in r.getMessage()]
    assert len(key_lines) == 1
    assert "wrong-key" not in caplog.text


async def test_503_then_success_still_completes(harness: Harness) -> None:
    harness.freepik.fail_next(
        "POST", "/v1/ai/image-to-prompt", 503, {"message": "Service Unavailable. Please try again later."}
    )
    bot = await harness.start_bot(describe_provider="freepik")
    token = await harness.interact(bot, harness.describe_payload())
    assert harness.freepik.count("POST") == 2
    assert harness.calls_for(token)[-1].json["embeds"][0]["title"] == "Image to prompt · Done"


async def test_non_image_attachment_is_refused_without_a_provider_request(harness: Harness) -> None:
    bot = await harness.start_bot()
    attachment = harness.discord.add_attachment(b"just some text, not a picture\n", "notes.png", "image/png")
    token = await harness.interact(bot, harness.discord.slash("describe", attachments={"image": attachment}))
    assert harness.discord.original_message(token)["content"].startswith(
        "That file is not an image I can read"
    )
    assert harness.freepik.count() == 0
    assert harness.novita.count() == 0
    assert (await bot.core.quotas.status(_member(harness)))[0].used == 0
