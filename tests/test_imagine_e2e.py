"""/imagine, "Edit image" and the result buttons end to end: the real bot, the fake Discord, the fake Freepik."""

from __future__ import annotations

import base64
import io
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from PIL import Image, ImageStat

from bot.discord.client import ImageBot
from bot.domain.quota import Member
from bot.domain.tasks import TaskKind
from bot.ui.words import Words
from tests.conftest import Harness, png_bytes
from tests.fakes.discord import DEFAULT_APP_PERMISSIONS, RecordedCall
from tests.fakes.openapi import validate_freepik_request

GEMINI = "gemini-2-5-flash-image-preview"
RED, GREEN, BLUE, GREY = (200, 30, 30), (30, 200, 30), (30, 30, 200), (90, 90, 90)


@pytest.fixture(autouse=True)
def _no_logged_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Fail a test when the bot logged an error: a component's or a job's failure is only logged."""
    yield
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR and r.name.startswith(("bot", "cogs"))]
    assert not errors, [r.getMessage() for r in errors]


# --- helpers ---------------------------------------------------------------------------------------


def _member(harness: Harness, user_id: int | None = None) -> Member:
    return Member(guild_id=harness.discord.guild_ids[0], user_id=user_id or harness.discord.default_user_id)


async def _used(bot: ImageBot, harness: Harness, kind: TaskKind, user_id: int | None = None) -> int:
    statuses = await bot.core.quotas.status(_member(harness, user_id))
    return next(status.used for status in statuses if status.kind is kind)


def _imagine_payload(
    harness: Harness, prompt: str, references: Sequence[bytes] = (), **kwargs: Any
) -> dict[str, Any]:
    attachments = {
        f"reference{index}": harness.discord.add_attachment(data, f"ref{index}.png", "image/png")
        for index, data in enumerate(references, start=1)
    }
    return harness.discord.slash("imagine", {"prompt": prompt}, attachments=attachments, **kwargs)


def _buttons(message: dict[str, Any]) -> dict[str, str]:
    """Return the message's buttons as action -> custom id."""
    found = {}
    for row in message.get("components") or []:
        for component in row.get("components") or []:
            custom_id = component.get("custom_id", "")
            found[custom_id.split(":")[1]] = custom_id
    return found


def _labels(message: dict[str, Any]) -> list[str]:
    return [c["label"] for row in message["components"] for c in row["components"]]


def _shape(calls: list[RecordedCall]) -> list[tuple[str, str]]:
    return [(call.method, call.path.rsplit("/", 1)[-1]) for call in calls]


def _titles(calls: list[RecordedCall]) -> list[str]:
    return [call.json["embeds"][0]["title"] for call in calls if call.method == "PATCH" and call.json]


def _field(embed: dict[str, Any], name: str) -> str:
    return str(next(field["value"] for field in embed["fields"] if field["name"] == name))


def _mean_colour(data: bytes) -> tuple[int, ...]:
    with Image.open(io.BytesIO(data)) as image:
        rgb = image.convert("RGB")
        return tuple(round(value) for value in ImageStat.Stat(rgb).mean)


def _close(colour: tuple[int, ...], expected: tuple[int, int, int], tolerance: int = 8) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(colour, expected, strict=True))


async def _describe_result(harness: Harness, bot: ImageBot) -> tuple[str, dict[str, Any]]:
    """Describe an image through Freepik; return the token and the result message as Discord holds it."""
    harness.freepik.prompt_text = "a red square on a plain background"
    token = await harness.interact(bot, harness.describe_payload())
    message = harness.discord.original_reply(token)
    return token, message


async def _imagine_result(
    harness: Harness, bot: ImageBot, prompt: str = "a lighthouse at dusk", references: Sequence[bytes] = ()
) -> tuple[str, dict[str, Any]]:
    token = await harness.interact(bot, _imagine_payload(harness, prompt, references))
    message = harness.discord.original_reply(token)
    assert message["embeds"][0]["title"] == "Image generation · Done", message
    return token, message


def _modal_of(call: RecordedCall) -> tuple[str, str]:
    """Return the custom ids of a modal callback (type 9) and of its one text input."""
    assert call.json["type"] == 9, call
    modal = call.json["data"]
    text_input = modal["components"][0]["components"][0]
    assert text_input["type"] == 4
    return modal["custom_id"], text_input["custom_id"]


# --- /imagine ------------------------------------------------------------------------------------------


async def test_prompt_only_generates_and_attaches_the_image(harness: Harness) -> None:
    served = png_bytes((80, 60), (10, 120, 220))
    harness.freepik.result_image = served
    bot = await harness.start_bot()
    token = await harness.interact(bot, _imagine_payload(harness, "  a lighthouse at dusk, oil painting  "))

    calls = harness.calls_for(token)
    assert _shape(calls) == [
        ("POST", "callback"),
        ("PATCH", "@original"),
        ("PATCH", "@original"),
        ("PATCH", "@original"),
    ]
    assert calls[0].json["type"] == 5
    assert _titles(calls) == [
        "Image generation · Task created, waiting for the provider",
        "Image generation · In progress",
        "Image generation · Done",
    ]
    # Only the final edit carries a file; the progress edits show the prompt.
    assert [len(call.files) for call in calls[1:]] == [0, 0, 1]
    assert "a lighthouse at dusk, oil painting" in calls[1].json["embeds"][0]["description"]

    final = calls[-1]
    ((filename, data, _),) = final.files
    assert data == served  # the PNG the fake served, byte for byte
    assert filename.endswith(".png")
    embed = final.json["embeds"][0]
    assert embed["image"]["url"] == f"attachment://{filename}"
    assert embed["description"] == "```\na lighthouse at dusk, oil painting\n```"
    assert _field(embed, "Provider") == "Freepik"
    assert _field(embed, "Started").startswith("<t:")
    assert _field(embed, "Took").endswith(" s")
    # The prompt is the file's alt text.
    assert final.json["attachments"] == [
        {"id": 0, "filename": filename, "description": "a lighthouse at dusk, oil painting"}
    ]
    assert list(_buttons(final.json)) == ["again", "edit"]

    message = harness.discord.original_reply(token)
    assert message["attachments"][0]["description"] == "a lighthouse at dusk, oil painting"
    assert _labels(message) == ["Run again", "Edit this"]

    create = harness.freepik.creates(GEMINI)
    assert len(create) == 1
    assert create[0].json == {"prompt": "a lighthouse at dusk, oil painting"}
    for request in harness.freepik.requests:
        if request.path.startswith("/v1/"):
            validate_freepik_request(request)
    assert harness.freepik.count("GET", "/files/") == 1
    assert await _used(bot, harness, TaskKind.IMAGINE) == 1
    assert await _used(bot, harness, TaskKind.DESCRIBE) == 0


async def test_three_references_reach_freepik_as_raw_base64(harness: Harness) -> None:
    bot = await harness.start_bot()
    references = [png_bytes((64, 48), RED), png_bytes((40, 30), GREEN), png_bytes((30, 60), BLUE)]
    token = await harness.interact(bot, _imagine_payload(harness, "put them together", references))
    assert _titles(harness.calls_for(token))[-1] == "Image generation · Done"

    (create,) = harness.freepik.creates(GEMINI)
    validate_freepik_request(create)
    sent = create.json["reference_images"]
    assert len(sent) == 3
    for encoded, (size, colour) in zip(
        sent, [((64, 48), RED), ((40, 30), GREEN), ((30, 60), BLUE)], strict=True
    ):
        assert not encoded.startswith("data:")
        decoded = base64.b64decode(encoded, validate=True)
        with Image.open(io.BytesIO(decoded)) as image:
            assert image.size == size
        assert _close(_mean_colour(decoded), colour)
    assert [(i["field"], i["source"], i["valid"]) for i in harness.freepik.received_images] == [
        ("reference_images[0]", "base64", True),
        ("reference_images[1]", "base64", True),
        ("reference_images[2]", "base64", True),
    ]


async def test_failed_task_refunds(harness: Harness) -> None:
    harness.freepik.outcome = "FAILED"
    bot = await harness.start_bot()
    token = await harness.interact(bot, _imagine_payload(harness, "a cat"))
    final = harness.calls_for(token)[-1]
    embed = final.json["embeds"][0]
    assert embed["title"] == "Image generation · Failed"
    assert "did not use your quota" in embed["description"]
    assert final.files == []
    assert final.json.get("components") in (None, [])
    assert await _used(bot, harness, TaskKind.IMAGINE) == 0


async def test_result_download_404_refunds(harness: Harness) -> None:
    harness.freepik.result_status = 404
    bot = await harness.start_bot()
    token = await harness.interact(bot, _imagine_payload(harness, "a cat"))
    embed = harness.calls_for(token)[-1].json["embeds"][0]
    assert embed["title"] == "Image generation · Failed"
    assert embed["description"] == (
        "Freepik finished but its result could not be used; try again (this did not use your quota)."
    )
    assert harness.freepik.count("GET", "/files/") == 1
    assert await _used(bot, harness, TaskKind.IMAGINE) == 0


async def test_result_that_is_not_an_image_refunds(harness: Harness) -> None:
    harness.freepik.result_image = b"<!doctype html><html><body>Access denied</body></html>"
    harness.freepik.result_content_type = "text/html"
    bot = await harness.start_bot()
    token = await harness.interact(bot, _imagine_payload(harness, "a cat"))
    final = harness.calls_for(token)[-1]
    assert final.json["embeds"][0]["title"] == "Image generation · Failed"
    assert final.files == []
    assert await _used(bot, harness, TaskKind.IMAGINE) == 0


async def test_result_over_discords_upload_limit_is_re_encoded_to_fit(harness: Harness) -> None:
    # Stored, not compressed: a plain 1900 x 1900 PNG weighs 10.8 MB, over Discord's 10 MiB.
    buffer = io.BytesIO()
    Image.new("RGB", (1900, 1900), GREY).save(buffer, "PNG", compress_level=0)
    assert len(buffer.getvalue()) > 10 * 1024 * 1024
    harness.freepik.result_image = buffer.getvalue()
    bot = await harness.start_bot()
    token = await harness.interact(bot, _imagine_payload(harness, "a grey wall"))
    final = harness.calls_for(token)[-1]
    assert final.status == 200
    [(name, data, _)] = final.files
    assert len(data) <= 9_500_000
    with Image.open(io.BytesIO(data)) as shown:
        assert shown.size == (1900, 1900)  # the same picture, only re-encoded
    embed = final.json["embeds"][0]
    assert embed["title"] == "Image generation · Done"
    assert embed["image"]["url"] == f"attachment://{name}"
    assert list(_buttons(final.json)) == ["again", "edit"]


def test_duration_reads_like_a_person_would_say_it() -> None:
    assert [Words().duration(s) for s in (-1, 0.04, 8.44, 59.9, 59.97, 125, 180)] == [
        "0.0 s",
        "0.0 s",
        "8.4 s",
        "59.9 s",
        "1 min",
        "2 min 5 s",
        "3 min",
    ]


async def test_blank_prompt_is_refused_before_anything_is_spent(harness: Harness) -> None:
    bot = await harness.start_bot()
    token = await harness.interact(bot, _imagine_payload(harness, "   "))
    (callback,) = harness.calls_for(token)
    assert callback.json["type"] == 4
    assert callback.json["data"]["flags"] == 64
    assert callback.json["data"]["content"] == "The prompt is empty; describe the image you want."
    assert harness.freepik.count() == 0
    assert await _used(bot, harness, TaskKind.IMAGINE) == 0


async def test_prompt_option_has_discords_length_limits(harness: Harness) -> None:
    await harness.start_bot()
    (imagine,) = [c for c in harness.discord.synced_commands() if c["name"] == "imagine"]
    options = {option["name"]: option for option in imagine["options"]}
    assert list(options) == ["prompt", "reference1", "reference2", "reference3"]
    assert options["prompt"]["required"] is True
    assert options["prompt"]["min_length"] == 1
    assert options["prompt"]["max_length"] == 2000
    assert all(options[f"reference{i}"]["type"] == 11 for i in (1, 2, 3))


async def test_reference_that_is_not_an_image_is_refused(harness: Harness) -> None:
    bot = await harness.start_bot()
    attachment = harness.discord.add_attachment(b"%PDF-1.7 not a picture", "ref.png", "image/png")
    payload = harness.discord.slash(
        "imagine", {"prompt": "make it blue"}, attachments={"reference1": attachment}
    )
    token = await harness.interact(bot, payload)
    message = harness.discord.original_reply(token)
    assert "PDF" in message["content"]
    assert harness.freepik.count() == 0
    assert await _used(bot, harness, TaskKind.IMAGINE) == 0


async def test_imagine_quota_is_separate_and_shown_by_quota(harness: Harness) -> None:
    bot = await harness.start_bot(quota_imagine_per_day=1, quota_describe_per_day=5)
    await harness.interact(bot, _imagine_payload(harness, "a cat"))
    token = await harness.interact(bot, _imagine_payload(harness, "a dog"))
    message = harness.discord.original_reply(token)
    assert message["content"].startswith("You have used ")
    assert "generation" in message["content"]
    assert "renews <t:" in message["content"]
    assert len(harness.freepik.creates(GEMINI)) == 1
    # Describing still works: the quotas are separate.
    await harness.interact(bot, harness.describe_payload())
    assert len(harness.freepik.creates("image-to-prompt")) == 1

    token = await harness.interact(bot, harness.discord.slash("quota"))
    embed = harness.calls_for(token)[0].json["data"]["embeds"][0]
    fields = {field["name"]: field["value"] for field in embed["fields"]}
    assert "**0 left** of 1" in fields["Image generation"]
    assert "**4 left** of 5" in fields["Image to prompt"]


# --- "Edit image" ------------------------------------------------------------------------------------


async def test_edit_image_menu_uses_the_first_three_images_and_says_so(harness: Harness) -> None:
    bot = await harness.start_bot()
    colours = [RED, GREEN, BLUE, GREY]
    attachments = [
        harness.discord.add_attachment(png_bytes((32, 32), colour), f"pic{i}.png", "image/png")
        for i, colour in enumerate(colours)
    ]
    target = harness.discord.make_message(content="look", attachments=attachments)
    menu_token = await harness.interact(bot, harness.discord.message_command("Edit image", target))
    (callback,) = harness.calls_for(menu_token)
    modal_id, input_id = _modal_of(callback)
    assert callback.json["data"]["title"] == "Edit image"
    assert harness.freepik.count() == 0  # nothing is spent before the prompt is given

    token = await harness.interact(bot, harness.discord.modal_submit(modal_id, {input_id: "make it glow"}))
    calls = harness.calls_for(token)
    assert calls[0].json["type"] == 5
    final = calls[-1].json["embeds"][0]
    assert final["title"] == "Image generation · Done"
    assert _field(final, "Note") == "The message has 4 images; the first three were used."

    (create,) = harness.freepik.creates(GEMINI)
    assert create.json["prompt"] == "make it glow"
    sent = [base64.b64decode(ref) for ref in create.json["reference_images"]]
    assert len(sent) == 3
    for data, colour in zip(sent, colours[:3], strict=True):
        assert _close(_mean_colour(data), colour)
    assert await _used(bot, harness, TaskKind.IMAGINE) == 1


async def test_edit_image_menu_on_a_message_without_an_image(harness: Harness) -> None:
    bot = await harness.start_bot()
    target = harness.discord.make_message(content="no pictures here")
    token = await harness.interact(bot, harness.discord.message_command("Edit image", target))
    (callback,) = harness.calls_for(token)
    assert callback.json["type"] == 4
    assert callback.json["data"]["flags"] == 64
    assert callback.json["data"]["content"].startswith("That message has no image to use")
    assert harness.freepik.count() == 0


async def test_edit_image_on_a_generated_result_sends_that_image_once(harness: Harness) -> None:
    bot = await harness.start_bot()
    served = png_bytes((64, 48), GREEN)
    harness.freepik.result_image = served
    _, result = await _imagine_result(harness, bot)
    menu_token = await harness.interact(bot, harness.discord.message_command("Edit image", result))
    modal_id, input_id = _modal_of(harness.calls_for(menu_token)[0])
    token = await harness.interact(bot, harness.discord.modal_submit(modal_id, {input_id: "add a moon"}))
    assert _titles(harness.calls_for(token))[-1] == "Image generation · Done"
    second = harness.freepik.creates(GEMINI)[1].json
    assert len(second["reference_images"]) == 1
    assert _close(_mean_colour(base64.b64decode(second["reference_images"][0])), GREEN)


async def test_edit_image_skips_an_embed_that_shows_an_attachment_again(harness: Harness) -> None:
    # As Discord hands it back: the embed's image URL is the attachment's own CDN URL.
    bot = await harness.start_bot()
    attachment = harness.discord.add_attachment(png_bytes((32, 32), RED), "pic.png", "image/png")
    embed = {"type": "rich", "title": "x", "image": {"url": attachment["url"] + "?ex=1"}}
    target = harness.discord.make_message(attachments=[attachment], embeds=[embed])
    menu_token = await harness.interact(bot, harness.discord.message_command("Edit image", target))
    modal_id, input_id = _modal_of(harness.calls_for(menu_token)[0])
    await harness.interact(bot, harness.discord.modal_submit(modal_id, {input_id: "bluer"}))
    (create,) = harness.freepik.creates(GEMINI)
    assert len(create.json["reference_images"]) == 1


# --- buttons ---------------------------------------------------------------------------------------------


async def test_imagine_this_runs_imagine_with_the_described_prompt(harness: Harness) -> None:
    bot = await harness.start_bot(describe_provider="freepik")
    _, described = await _describe_result(harness, bot)
    assert _labels(described) == ["Imagine this", "Show as text"]
    click = harness.discord.button_click(_buttons(described)["imagine"], described)
    token = await harness.interact(bot, click)

    calls = harness.calls_for(token)
    assert _shape(calls) == [
        ("POST", "callback"),
        ("PATCH", "@original"),
        ("PATCH", "@original"),
        ("PATCH", "@original"),
    ]
    assert calls[0].json["type"] == 5
    assert _titles(calls)[-1] == "Image generation · Done"
    assert len(calls[-1].files) == 1
    assert harness.freepik.creates(GEMINI)[0].json == {"prompt": "a red square on a plain background"}
    assert await _used(bot, harness, TaskKind.IMAGINE) == 1
    assert await _used(bot, harness, TaskKind.DESCRIBE) == 1


async def test_show_as_text_sends_the_prompt_privately(harness: Harness) -> None:
    bot = await harness.start_bot(describe_provider="freepik")
    _, described = await _describe_result(harness, bot)
    other_user = 777777777777777777
    click = harness.discord.button_click(_buttons(described)["text"], described, user_id=other_user)
    token = await harness.interact(bot, click)
    callback, followup = harness.calls_for(token)
    # Acknowledged privately first (the job is read after), then the "thinking" message becomes the text.
    assert callback.json == {"type": 5, "data": {"flags": 64}}
    assert followup.method == "POST"
    assert followup.json["content"] == "a red square on a plain background"
    assert followup.json["flags"] == 64
    assert harness.discord.original_reply(token)["content"] == "a red square on a plain background"
    assert harness.freepik.creates(GEMINI) == []


async def test_show_as_text_sends_a_long_prompt_as_a_file(harness: Harness) -> None:
    bot = await harness.start_bot(describe_provider="freepik")
    long_prompt = "a very detailed scene, " * 100
    harness.freepik.prompt_text = long_prompt
    token = await harness.interact(bot, harness.describe_payload())
    described = harness.discord.original_reply(token)
    token = await harness.interact(bot, harness.discord.button_click(_buttons(described)["text"], described))
    followup = harness.calls_for(token)[-1]
    assert [(name, data) for name, data, _ in followup.files] == [("prompt.txt", long_prompt.encode())]


async def test_run_again_uses_the_same_prompt_and_references(harness: Harness) -> None:
    bot = await harness.start_bot()
    references = [png_bytes((48, 48), RED), png_bytes((48, 48), BLUE)]
    _, result = await _imagine_result(harness, bot, "mix these", references)
    token = await harness.interact(bot, harness.discord.button_click(_buttons(result)["again"], result))

    calls = harness.calls_for(token)
    assert calls[0].json["type"] == 5
    assert _titles(calls)[-1] == "Image generation · Done"
    first, second = (create.json for create in harness.freepik.creates(GEMINI))
    assert second == first
    assert len(second["reference_images"]) == 2
    assert await _used(bot, harness, TaskKind.IMAGINE) == 2


async def test_edit_this_uses_the_generated_image_as_the_reference(harness: Harness) -> None:
    served = png_bytes((64, 48), BLUE)
    harness.freepik.result_image = served
    bot = await harness.start_bot()
    _, result = await _imagine_result(harness, bot)
    click_token = await harness.interact(bot, harness.discord.button_click(_buttons(result)["edit"], result))
    (callback,) = harness.calls_for(click_token)
    modal_id, input_id = _modal_of(callback)

    token = await harness.interact(bot, harness.discord.modal_submit(modal_id, {input_id: "now in winter"}))
    calls = harness.calls_for(token)
    assert calls[0].json["type"] == 5
    assert _titles(calls)[-1] == "Image generation · Done"
    second = harness.freepik.creates(GEMINI)[1].json
    assert second["prompt"] == "now in winter"
    # The stored result is sent back exactly as it was served.
    assert [base64.b64decode(ref) for ref in second["reference_images"]] == [served]
    assert await _used(bot, harness, TaskKind.IMAGINE) == 2


async def test_a_button_spends_the_clickers_quota(harness: Harness) -> None:
    bot = await harness.start_bot(quota_imagine_per_day=1)
    _, result = await _imagine_result(harness, bot)
    token = await harness.interact(bot, harness.discord.button_click(_buttons(result)["again"], result))
    message = harness.discord.original_reply(token)
    assert message["content"].startswith("You have used ")
    assert "generation" in message["content"]
    assert "renews <t:" in message["content"]
    assert len(harness.freepik.creates(GEMINI)) == 1


async def test_forged_custom_id_for_an_unknown_job_says_it_is_gone(harness: Harness) -> None:
    bot = await harness.start_bot()
    custom_id = "job:again:" + "0" * 32
    message = harness.discord.make_message(
        author_id=harness.discord.bot_user_id,
        components=[
            {"type": 1, "components": [{"type": 2, "style": 2, "label": "x", "custom_id": custom_id}]}
        ],
    )
    token = await harness.interact(bot, harness.discord.button_click(custom_id, message))
    callback, edit = harness.calls_for(token)
    assert callback.json["type"] == 5
    assert edit.json["content"] == "This result is too old to act on; run the command again."
    assert harness.freepik.count() == 0


async def test_a_button_of_the_wrong_kind_of_job_is_refused(harness: Harness) -> None:
    bot = await harness.start_bot()
    _, result = await _imagine_result(harness, bot)
    # "Show as text" on an imagine job: only a hand-made custom id can ask for this.
    custom_id = _buttons(result)["again"].replace(":again:", ":text:")
    message = harness.discord.make_message(
        author_id=harness.discord.bot_user_id,
        components=[
            {"type": 1, "components": [{"type": 2, "style": 2, "label": "x", "custom_id": custom_id}]}
        ],
    )
    token = await harness.interact(bot, harness.discord.button_click(custom_id, message))
    assert harness.discord.original_reply(token)["content"] == (
        "This result is too old to act on; run the command again."
    )


async def test_missing_attach_permission_is_said_before_anything_is_spent(harness: Harness) -> None:
    bot = await harness.start_bot()
    permissions = DEFAULT_APP_PERMISSIONS & ~(1 << 15)  # no Attach Files
    token = await harness.interact(bot, _imagine_payload(harness, "a cat", app_permissions=permissions))
    (callback,) = harness.calls_for(token)
    assert callback.json["type"] == 4
    assert callback.json["data"]["content"].startswith("I cannot post in this channel")
    assert harness.freepik.count() == 0


# --- after a restart -------------------------------------------------------------------------------------


async def _restart(harness: Harness, bot: ImageBot) -> ImageBot:
    settings = bot.settings
    await harness.stop_bot(bot)
    return await harness.start_bot(settings)


async def test_describe_buttons_work_after_a_restart(harness: Harness) -> None:
    bot = await harness.start_bot(describe_provider="freepik")
    describe_token, _ = await _describe_result(harness, bot)
    bot = await _restart(harness, bot)

    stored = harness.discord.original_reply(describe_token)
    token = await harness.interact(bot, harness.discord.button_click(_buttons(stored)["imagine"], stored))
    assert _titles(harness.calls_for(token))[-1] == "Image generation · Done"
    assert harness.freepik.creates(GEMINI)[0].json == {"prompt": "a red square on a plain background"}

    token = await harness.interact(bot, harness.discord.button_click(_buttons(stored)["text"], stored))
    assert harness.discord.original_reply(token)["content"] == "a red square on a plain background"


async def test_imagine_buttons_work_after_a_restart(harness: Harness) -> None:
    served = png_bytes((64, 48), GREEN)
    harness.freepik.result_image = served
    bot = await harness.start_bot()
    result_token, _ = await _imagine_result(harness, bot, "a quiet harbour", [png_bytes((40, 40), RED)])
    bot = await _restart(harness, bot)

    stored = harness.discord.original_reply(result_token)
    token = await harness.interact(bot, harness.discord.button_click(_buttons(stored)["again"], stored))
    assert _titles(harness.calls_for(token))[-1] == "Image generation · Done"
    first, second = (create.json for create in harness.freepik.creates(GEMINI))
    assert second == first

    click_token = await harness.interact(bot, harness.discord.button_click(_buttons(stored)["edit"], stored))
    modal_id, input_id = _modal_of(harness.calls_for(click_token)[0])
    token = await harness.interact(bot, harness.discord.modal_submit(modal_id, {input_id: "at night"}))
    assert _titles(harness.calls_for(token))[-1] == "Image generation · Done"
    third = harness.freepik.creates(GEMINI)[2].json
    assert third["prompt"] == "at night"
    assert [base64.b64decode(ref) for ref in third["reference_images"]] == [served]
    assert await _used(bot, harness, TaskKind.IMAGINE) == 3
