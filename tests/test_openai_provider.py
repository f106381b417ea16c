"""The OpenAI-compatible provider against a fake that answers like OpenAI or like Ollama."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import AsyncIterator

import aiohttp
import pytest
from PIL import Image

from bot.core.images import check_image, prepare_for_provider
from bot.domain.errors import ProviderError
from bot.domain.tasks import DescribeRequest, DescribeStyle, Fault, ImageBytes, Suggestion
from bot.providers import describe_styles
from bot.providers.http import RetryPolicy
from bot.providers.openai_compatible import OpenAICompatibleAdapter
from bot.ui.words import Words
from tests.fakes.openai_compatible import DEFAULT_MODEL, FakeOpenAICompatible

QUICK_RETRY = RetryPolicy(attempts=3, base_delay=0.0, max_delay=0.0)


def photo(size: tuple[int, int] = (3000, 2000)) -> ImageBytes:
    """A landscape photo, prepared for this provider as the service prepares it (downscaled to 1536)."""
    buffer = io.BytesIO()
    Image.new("RGB", size, (180, 90, 40)).save(buffer, "JPEG")
    checked = check_image(buffer.getvalue(), max_bytes=50_000_000)
    return prepare_for_provider(checked, OpenAICompatibleAdapter.image_limits)


@pytest.fixture(params=["openai", "ollama"])
async def fake(request: pytest.FixtureRequest) -> AsyncIterator[FakeOpenAICompatible]:
    async with FakeOpenAICompatible(flavour=request.param) as server:
        yield server
    assert server.violations == []


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as open_session:
        yield open_session


def adapter(
    session: aiohttp.ClientSession,
    fake: FakeOpenAICompatible,
    *,
    model: str = DEFAULT_MODEL,
    **options: object,
) -> OpenAICompatibleAdapter:
    return OpenAICompatibleAdapter(
        session,
        base_url=fake.base_url,
        model=model,
        retry=QUICK_RETRY,
        **options,  # type: ignore[arg-type]
    )


async def describe(
    subject: OpenAICompatibleAdapter, style: DescribeStyle, count: int = 1
) -> tuple[Suggestion, ...]:
    snapshot = await subject.describe(photo(), DescribeRequest(style, count), webhook_url=None)
    return snapshot.suggestions


# --- each style in its shape ---------------------------------------------------------------------


async def test_detailed_is_one_prompt_from_one_request_with_the_downscaled_image_as_a_data_uri(
    session: aiohttp.ClientSession, fake: FakeOpenAICompatible
) -> None:
    (suggestion,) = await describe(adapter(session, fake), DescribeStyle.DETAILED)
    assert suggestion.prompt.startswith("A red fox sitting in fresh snow")
    assert suggestion.negative is None
    (request,) = fake.completions()
    assert request.json["model"] == DEFAULT_MODEL
    assert "n" not in request.json
    assert request.json["messages"][0] == {
        "role": "system",
        "content": describe_styles.INSTRUCTIONS[DescribeStyle.DETAILED],
    }
    assert "authorization" not in request.headers  # no key configured, none sent
    assert [(i["width"], i["height"], i["mime"]) for i in fake.received_images] == [
        (1536, 1024, "image/jpeg")
    ]


async def test_tags_are_comma_separated_and_unique(
    session: aiohttp.ClientSession, fake: FakeOpenAICompatible
) -> None:
    fake.answers.append("fox, snow,\nfox, red_fur, dawn.")
    (suggestion,) = await describe(adapter(session, fake), DescribeStyle.TAGS)
    assert suggestion.prompt == "fox, snow, red_fur, dawn"


async def test_midjourney_ends_with_the_aspect_ratio_of_the_image(
    session: aiohttp.ClientSession, fake: FakeOpenAICompatible
) -> None:
    fake.answers.append("/imagine prompt: red fox in snow, golden hour --ar 16:9 --v 6")
    (suggestion,) = await describe(adapter(session, fake), DescribeStyle.MIDJOURNEY)
    # The model's own parameters go; the image is 3000x2000, so 3:2.
    assert suggestion.prompt == "red fox in snow, golden hour --ar 3:2"


@pytest.mark.parametrize(
    ("size", "ratio"),
    [((1000, 1000), "1:1"), ((1080, 1920), "9:16"), ((2048, 1536), "4:3"), ((2560, 1080), "21:9")],
)
def test_aspect_ratio_is_the_nearest_common_one(size: tuple[int, int], ratio: str) -> None:
    assert describe_styles.aspect_ratio(*size) == ratio


async def test_stable_diffusion_is_a_positive_and_a_negative_prompt(
    session: aiohttp.ClientSession, fake: FakeOpenAICompatible
) -> None:
    (suggestion,) = await describe(adapter(session, fake), DescribeStyle.STABLE_DIFFUSION)
    assert suggestion.prompt.startswith("red fox, snow, dawn")
    assert suggestion.negative == "blurry, lowres, watermark, text, extra limbs"


async def test_answers_are_cleaned_of_fences_and_preambles(
    session: aiohttp.ClientSession, fake: FakeOpenAICompatible
) -> None:
    fake.fenced = True
    fake.preamble = "Sure! Here is a detailed prompt:"
    (suggestion,) = await describe(adapter(session, fake), DescribeStyle.SHORT)
    assert suggestion.prompt.startswith("A red fox in snow at dawn, golden light")
    assert "```" not in suggestion.prompt
    assert "Here is" not in suggestion.prompt


# --- several suggestions ---------------------------------------------------------------------------------


async def test_four_suggestions_use_n_where_honoured_and_a_numbered_list_where_not(
    session: aiohttp.ClientSession, fake: FakeOpenAICompatible
) -> None:
    subject = adapter(session, fake)
    suggestions = await describe(subject, DescribeStyle.DETAILED, 4)
    assert len(suggestions) == 4
    assert len(set(suggestions)) == 4
    if fake.flavour == "openai":
        (request,) = fake.completions()
        assert request.json["n"] == 4
    else:
        # Ollama ignored n: one more request, for a numbered list; the adapter remembers.
        first, second = fake.completions()
        assert first.json["n"] == 4
        assert "n" not in second.json
        assert "numbered list" in second.json["messages"][1]["content"][0]["text"]
        await describe(subject, DescribeStyle.DETAILED, 3)
        assert len(fake.completions()) == 3  # straight to the numbered list this time


async def test_fewer_suggestions_than_asked_are_shown_as_they_came(session: aiohttp.ClientSession) -> None:
    async with FakeOpenAICompatible(flavour="ollama") as fake:
        subject = adapter(session, fake)
        fake.answers += ["one prompt only", "1. first idea\n2. second idea"]
        suggestions = await describe(subject, DescribeStyle.DETAILED, 4)
    assert [s.prompt for s in suggestions] == ["first idea", "second idea"]


def test_numbered_items_take_continuation_lines_and_markup() -> None:
    answer = "Here are the prompts:\n1. **a fox**\n   in snow\n2) a cat\n\n3. a dog"
    assert describe_styles.numbered_items(answer) == ["a fox\nin snow", "a cat", "a dog"]
    # Shaped by the style, a detailed item is one line again.
    (fox, *_) = describe_styles.numbered_items(answer)
    assert describe_styles.suggestion(DescribeStyle.DETAILED, fox, size=(1, 1)) == Suggestion("a fox in snow")


# --- faults, each with its sentence ---------------------------------------------------------------------


async def failure(subject: OpenAICompatibleAdapter) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        await describe(subject, DescribeStyle.DETAILED)
    return caught.value


async def test_a_refused_key_is_misconfigured(session: aiohttp.ClientSession) -> None:
    async with FakeOpenAICompatible(api_key="the-right-key") as fake:
        error = await failure(adapter(session, fake, api_key="a-wrong-key"))
        assert fake.completions()[0].headers["authorization"] == "Bearer a-wrong-key"
    assert error.fault is Fault.MISCONFIGURED
    assert Words(None, {"openai": "Ollama"}).fault(error.provider, error.fault) == (
        "The bot is misconfigured: Ollama rejected its API key or plan; please tell a server admin "
        "(this did not use your quota)."
    )


async def test_an_unknown_model_names_openai_model_for_the_admin(
    session: aiohttp.ClientSession, fake: FakeOpenAICompatible, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        error = await failure(adapter(session, fake, model="llava:404"))
    assert error.fault is Fault.MODEL_NOT_FOUND
    assert "OPENAI_MODEL" in caplog.text
    assert "llava:404" in caplog.text
    assert (
        Words()
        .fault("openai", error.fault)
        .startswith("The bot is misconfigured: Openai does not have the model")
    )


async def test_a_model_that_cannot_see_says_so(
    session: aiohttp.ClientSession, fake: FakeOpenAICompatible
) -> None:
    fake.blind = True
    error = await failure(adapter(session, fake))
    assert error.fault is Fault.MODEL_BLIND


@pytest.mark.parametrize("status", [429, 503])
async def test_busy_is_retried(
    session: aiohttp.ClientSession, fake: FakeOpenAICompatible, status: int
) -> None:
    fake.fail_next("POST", "/v1/chat/completions", status)
    (suggestion,) = await describe(adapter(session, fake), DescribeStyle.DETAILED)
    assert suggestion.prompt
    assert len(fake.completions()) == 2


async def test_still_busy_after_retries_is_busy(
    session: aiohttp.ClientSession, fake: FakeOpenAICompatible
) -> None:
    fake.fail_next("POST", "/v1/chat/completions", 503, times=5)
    error = await failure(adapter(session, fake))
    assert error.fault is Fault.BUSY


async def test_too_slow_is_a_timeout(session: aiohttp.ClientSession, fake: FakeOpenAICompatible) -> None:
    fake.hold = asyncio.Event()
    try:
        error = await failure(adapter(session, fake, request_timeout=0.2))
    finally:
        fake.hold.set()
    assert error.fault is Fault.TIMEOUT
    assert len(fake.completions()) == 1  # a timeout is not retried


async def test_an_empty_answer_is_unusable(
    session: aiohttp.ClientSession, fake: FakeOpenAICompatible
) -> None:
    fake.answers.append("   ")
    error = await failure(adapter(session, fake))
    assert error.fault is Fault.BAD_RESULT


async def test_a_web_page_means_the_address_is_wrong(
    session: aiohttp.ClientSession, fake: FakeOpenAICompatible, caplog: pytest.LogCaptureFixture
) -> None:
    fake.html = True
    with caplog.at_level(logging.ERROR):
        error = await failure(adapter(session, fake))
    assert error.fault is Fault.INCOMPATIBLE
    assert "OPENAI_BASE_URL" in caplog.text


async def test_a_path_the_server_does_not_have_means_the_address_is_wrong(
    session: aiohttp.ClientSession, fake: FakeOpenAICompatible
) -> None:
    wrong = OpenAICompatibleAdapter(session, base_url=fake.base_url.removesuffix("/v1"), model=DEFAULT_MODEL)
    error = await failure(wrong)
    assert error.fault is Fault.INCOMPATIBLE


# --- the live check --------------------------------------------------------------------------------------


async def test_the_live_check_finds_the_model(
    session: aiohttp.ClientSession, fake: FakeOpenAICompatible
) -> None:
    await adapter(session, fake).check_key()
    with pytest.raises(ProviderError) as caught:
        await adapter(session, fake, model="not-pulled").check_key()
    assert caught.value.fault is Fault.MODEL_NOT_FOUND
    assert caught.value.detail == f"it lists: {DEFAULT_MODEL}"
