"""/describe with a vision model through the real bot: styles, several suggestions and their Imagine buttons."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from discord import app_commands

from bot.__main__ import main
from bot.discord.client import ImageBot
from tests.conftest import Harness, png_bytes
from tests.fakes.openai_compatible import DEFAULT_MODEL, FakeOpenAICompatible
from tests.fakes.providers import GEMINI

DONE = "Image to prompt · Done"


@pytest.fixture
async def vision() -> AsyncIterator[FakeOpenAICompatible]:
    async with FakeOpenAICompatible(flavour="ollama") as fake:
        yield fake
    assert fake.violations == []


def only_a_vision_model(harness: Harness, vision: FakeOpenAICompatible, **more: Any) -> dict[str, Any]:
    """The settings of an admin with no Freepik or Novita key, only a local model."""
    return {
        "freepik_api_key": None,
        "novita_api_key": None,
        "openai_base_url": vision.base_url,
        "openai_model": DEFAULT_MODEL,
        "openai_provider_label": "Ollama",
        **more,
    }


async def describe(
    harness: Harness, bot: ImageBot, size: tuple[int, int] = (64, 48), **options: Any
) -> dict[str, Any]:
    """Run /describe with options; return the result message."""
    payload = harness.describe_payload(png_bytes(size), options=options or None)
    return await harness.answer(bot, payload)


def labels(message: dict[str, Any]) -> list[str]:
    return [c["label"] for row in message.get("components") or [] for c in row["components"]]


def buttons(message: dict[str, Any]) -> dict[str, str]:
    """Return the message's buttons as label -> custom id."""
    return {c["label"]: c["custom_id"] for row in message.get("components") or [] for c in row["components"]}


def code_blocks(description: str) -> list[str]:
    return [block.strip("\n") for block in description.split("```")[1::2]]


async def test_describe_works_with_only_a_vision_model_and_shows_no_imagine_button(
    harness: Harness, vision: FakeOpenAICompatible
) -> None:
    bot = await harness.start_bot(**only_a_vision_model(harness, vision))
    message = await describe(harness, bot)
    embed = message["embeds"][0]
    assert embed["title"] == DONE
    assert code_blocks(embed["description"])[0].startswith("A red fox sitting in fresh snow")
    assert {"name": "Provider", "value": "Ollama", "inline": True} in embed["fields"]
    # Nothing here generates images: no Imagine button at all.
    assert labels(message) == ["Show as text"]
    assert len(vision.completions()) == 1


@pytest.mark.parametrize(
    ("style", "check"),
    [
        ("short", lambda blocks: blocks == ["A red fox in snow at dawn, golden light"]),
        ("tags", lambda blocks: blocks[0].startswith("fox, animal, red_fur, snow") and "\n" not in blocks[0]),
        ("midjourney", lambda blocks: blocks[0].endswith("soft bokeh --ar 4:3")),
        (
            "stable-diffusion",
            lambda blocks: (
                blocks
                == [
                    "red fox, snow, dawn, golden light, wildlife photo, detailed fur, 85mm",
                    "blurry, lowres, watermark, text, extra limbs",
                ]
            ),
        ),
    ],
)
async def test_each_style_answers_in_its_shape(
    harness: Harness, vision: FakeOpenAICompatible, style: str, check: Any
) -> None:
    bot = await harness.start_bot(**only_a_vision_model(harness, vision))
    message = await describe(harness, bot, size=(64, 48), style=style)
    embed = message["embeds"][0]
    blocks = code_blocks(embed["description"])
    assert check(blocks), blocks
    if style == "stable-diffusion":
        assert "**Negative prompt**" in embed["description"]


async def test_four_suggestions_four_imagine_buttons_each_imagines_its_prompt(
    harness: Harness, vision: FakeOpenAICompatible
) -> None:
    # Freepik generates; the vision model describes (asked for by the provider option).
    bot = await harness.start_bot(openai_base_url=vision.base_url, openai_model=DEFAULT_MODEL)
    message = await describe(harness, bot, provider="openai", suggestions=4)
    embed = message["embeds"][0]
    prompts = code_blocks(embed["description"])
    assert len(prompts) == 4
    assert len(set(prompts)) == 4
    assert [f"**Suggestion {n}**" in embed["description"] for n in range(1, 5)] == [True] * 4
    assert labels(message) == ["Imagine 1", "Imagine 2", "Imagine 3", "Imagine 4", "Show as text"]
    # One task, one unit of quota.
    rows = await bot.core.db.fetchall("SELECT kind, state FROM usage")
    assert [(row["kind"], row["state"]) for row in rows] == [("describe", "committed")]

    for number, prompt in enumerate(prompts, start=1):
        click = harness.discord.button_click(buttons(message)[f"Imagine {number}"], message)
        await harness.interact(bot, click)
        assert harness.freepik.creates(GEMINI)[-1].json["prompt"] == prompt
    assert len(harness.freepik.creates(GEMINI)) == 4


async def test_imagine_buttons_work_after_a_restart(harness: Harness, vision: FakeOpenAICompatible) -> None:
    settings = {"openai_base_url": vision.base_url, "openai_model": DEFAULT_MODEL}
    first = await harness.start_bot(**settings)
    message = await describe(harness, first, provider="openai", suggestions=2)
    second_prompt = code_blocks(message["embeds"][0]["description"])[1]
    await harness.stop_bot(first)
    bot = await harness.start_bot(**settings)
    await harness.interact(bot, harness.discord.button_click(buttons(message)["Imagine 2"], message))
    assert harness.freepik.creates(GEMINI)[-1].json["prompt"] == second_prompt


async def test_show_as_text_numbers_the_suggestions(harness: Harness, vision: FakeOpenAICompatible) -> None:
    bot = await harness.start_bot(**only_a_vision_model(harness, vision))
    message = await describe(harness, bot, suggestions=2, style="stable-diffusion")
    token = await harness.interact(
        bot, harness.discord.button_click(buttons(message)["Show as text"], message)
    )
    # The "thinking" message became the text (the fake, like Discord, makes the first follow-up the answer).
    answer = harness.discord.original_reply(token)
    assert answer["content"].startswith("1. red fox, snow, dawn")
    assert "\nNegative prompt: blurry, lowres" in answer["content"]
    assert "\n\n2. red fox, snow, dawn" in answer["content"]


async def test_a_style_asked_of_freepik_says_which_provider_can(
    harness: Harness, vision: FakeOpenAICompatible
) -> None:
    bot = await harness.start_bot(
        openai_base_url=vision.base_url, openai_model=DEFAULT_MODEL, openai_provider_label="Ollama"
    )
    payload = harness.describe_payload(options={"provider": "freepik", "style": "tags"})
    token = await harness.interact(bot, payload)
    (answer,) = [call.json for call in harness.calls_for(token) if call.method == "POST"]
    assert answer["data"]["content"] == (
        "Freepik gives one detailed prompt only; for another style or several suggestions, choose Ollama "
        "in the provider option."
    )
    assert harness.freepik.count() == 0
    assert vision.completions() == []


async def test_the_provider_option_offers_the_configured_providers_by_the_names_members_see(
    harness: Harness, vision: FakeOpenAICompatible
) -> None:
    # Two bots in one process with different providers: each offers its own (the choices are not shared).
    both = await harness.start_bot(openai_base_url=vision.base_url, openai_model=DEFAULT_MODEL)
    local = await harness.start_bot(**only_a_vision_model(harness, vision))
    offered = {}
    for bot in (both, local):
        command = bot.tree.get_command("describe")
        assert isinstance(command, app_commands.Command)
        (provider,) = [parameter for parameter in command.parameters if parameter.name == "provider"]
        offered[bot] = [(str(choice.name), choice.value) for choice in provider.choices]
    assert offered[both] == [("Freepik", "freepik"), ("Novita", "novita"), ("OpenAI-compatible", "openai")]
    assert offered[local] == [("Ollama", "openai")]
    synced = next(c for c in harness.discord.synced_commands() if c["name"] == "describe")
    (option,) = [option for option in synced["options"] if option["name"] == "provider"]
    assert [(choice["name"], choice["value"]) for choice in option["choices"]] == [("Ollama", "openai")]


async def test_a_provider_the_bot_no_longer_has_gets_one_sentence(
    harness: Harness, vision: FakeOpenAICompatible
) -> None:
    # A member's client may still show a choice from before the admin removed a key (until it reloads).
    bot = await harness.start_bot(**only_a_vision_model(harness, vision))
    token = await harness.interact(bot, harness.describe_payload(options={"provider": "freepik"}))
    (answer,) = [call.json for call in harness.calls_for(token) if call.method == "POST"]
    assert answer["data"]["content"] == (
        "Freepik is not set up on this bot; leave the provider option empty to use Ollama."
    )
    assert answer["data"]["flags"] & 64  # only the member sees it
    assert vision.completions() == []


async def test_a_style_with_no_capable_provider_says_so(harness: Harness) -> None:
    bot = await harness.start_bot()
    payload = harness.describe_payload(options={"suggestions": 3})
    token = await harness.interact(bot, payload)
    (answer,) = [call.json for call in harness.calls_for(token) if call.method == "POST"]
    assert answer["data"]["content"].startswith(
        "Freepik gives one detailed prompt only, and no provider on this bot"
    )


async def test_without_a_provider_option_a_style_goes_to_the_provider_that_can(
    harness: Harness, vision: FakeOpenAICompatible
) -> None:
    bot = await harness.start_bot(openai_base_url=vision.base_url, openai_model=DEFAULT_MODEL)
    message = await describe(harness, bot, style="tags")
    assert message["embeds"][0]["title"] == DONE
    assert harness.freepik.count() == 0
    assert len(vision.completions()) == 1


async def test_the_cache_keys_on_style_and_count(harness: Harness, vision: FakeOpenAICompatible) -> None:
    bot = await harness.start_bot(**only_a_vision_model(harness, vision))
    await describe(harness, bot, style="tags")
    cached = await describe(harness, bot, style="tags")
    assert any(
        field["value"].startswith("Answered from the cache") for field in cached["embeds"][0]["fields"]
    )
    await describe(harness, bot, style="short")
    await describe(harness, bot, style="tags", suggestions=2)
    assert len(vision.completions()) == 1 + 1 + 2  # the numbered list took a second request once (Ollama)


async def test_the_terminal_describes_in_a_style_with_several_suggestions(
    env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    vision: FakeOpenAICompatible,
) -> None:
    image = tmp_path / "photo.png"
    image.write_bytes(png_bytes((64, 48)))
    env.setenv("OPENAI_BASE_URL", vision.base_url)
    env.setenv("OPENAI_MODEL", DEFAULT_MODEL)
    code = await asyncio.to_thread(
        main, ["describe", str(image), "--provider", "openai", "--style", "tags", "--suggestions", "3"]
    )
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert [line[:3] for line in out] == ["1. ", "2. ", "3. "]
    assert all("red_fur" in line for line in out)


@pytest.mark.parametrize("provider", ["novita", "openai"])
async def test_the_terminal_says_where_it_could_not_reach_a_provider(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path, provider: str
) -> None:
    image = tmp_path / "photo.png"
    image.write_bytes(png_bytes((64, 48)))
    closed = "http://127.0.0.1:9/v1"  # nothing listens there: the connection is refused, no answer comes
    setting = {"novita": "NOVITA_BASE_URL", "openai": "OPENAI_BASE_URL"}[provider]
    # Both configured, at addresses where nothing listens: the terminal tries the one asked for, and only it
    # (a fallback to the other would hide the fault the admin is looking for).
    env.setenv("NOVITA_BASE_URL", closed)
    env.setenv("NOVITA_API_KEY", "test-novita-key")
    env.setenv("OPENAI_BASE_URL", closed)
    env.setenv("OPENAI_MODEL", DEFAULT_MODEL)
    code = await asyncio.to_thread(main, ["describe", str(image), "--provider", provider])
    captured = capsys.readouterr()
    assert code != 0
    # The one error line, whole: not "busy" nor a 503 (the job id in the log lines is random hex, so these are
    # checked on the line the admin reads, not on all of stderr).
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {provider} could not be reached at {closed}: check the network and {setting}"]
    assert " fault=unreachable " in captured.err
    assert "falling back" not in captured.err
    other = {"novita": "openai", "openai": "novita"}[provider]
    assert f"{other} could not be reached" not in captured.err


async def test_check_live_finds_the_model(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], vision: FakeOpenAICompatible
) -> None:
    env.setenv("DISCORD_TOKEN", "fake-token")
    env.setenv("OPENAI_BASE_URL", vision.base_url)
    env.setenv("OPENAI_MODEL", DEFAULT_MODEL)
    assert await asyncio.to_thread(main, ["check", "--live"]) == 0
    assert (
        f"ok: openai answered at OPENAI_BASE_URL and lists OPENAI_MODEL {DEFAULT_MODEL}"
        in capsys.readouterr().out
    )
    env.setenv("OPENAI_MODEL", "llava:13b")
    assert await asyncio.to_thread(main, ["check", "--live"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: openai does not have the model named in OPENAI_MODEL (it lists: {DEFAULT_MODEL}): pull it on "
        "the server or name one it lists"
    ]
