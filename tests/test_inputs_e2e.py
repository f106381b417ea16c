"""Every way an image comes in, end to end: bad input is answered in one sentence with nothing spent.

The real bot runs against the fake Discord and the fake providers. Links are served from 127.0.0.2,
which the tests' address policy treats as the public internet; every other address stays refused, and
a guard fails any test that tries to connect outside the loopback network.
"""

from __future__ import annotations

import asyncio
import io
import random
import struct
import time
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web
from PIL import Image

from bot.core.images import MAX_PIXELS
from bot.discord.client import ImageBot
from bot.domain.errors import Refusal
from bot.domain.quota import Member
from bot.domain.tasks import Notice, NoticeCode
from bot.ui.words import PICK_IMAGE, Words
from tests.conftest import Harness, eventually, png_bytes
from tests.fakes.discord import RecordedCall
from tests.fakes.dns import StubResolver
from tests.sentences import sentence

STAND_IN = "127.0.0.2"  # "the public internet" for these tests
EPHEMERAL = 1 << 6
DONE_TITLE = "Image to prompt · Done"
PROMPT = "a small coloured rectangle on a plain background"


# --- images ------------------------------------------------------------------------------------


def noise_png(size: tuple[int, int], seed: int = 7) -> bytes:
    """Return a PNG of random pixels, which barely compresses."""
    pixels = random.Random(seed).randbytes(size[0] * size[1] * 3)
    buffer = io.BytesIO()
    Image.frombytes("RGB", size, pixels).save(buffer, "PNG")
    return buffer.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def pixel_bomb() -> bytes:
    """Return a 1 KB PNG whose header claims 30000 x 30000 pixels."""
    header = struct.pack(">IIBBBBB", 30_000, 30_000, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 10_000, 9))
        + _png_chunk(b"IEND", b"")
    )


def photo_with_exif(size: tuple[int, int]) -> bytes:
    """Return a landscape JPEG whose EXIF says "rotate 90°" and names the camera and a GPS position."""
    img = Image.new("RGB", size, (40, 120, 200))
    img.paste((220, 30, 30), (0, 0, size[0] // 4, size[1] // 4))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: the camera was held upright; show it rotated 90° clockwise
    exif[0x010F] = "Camera maker"
    exif[0x0110] = "Camera model"
    exif.get_ifd(0x8825)[1] = "N"  # GPSLatitudeRef: a location rides along in many phone photos
    buffer = io.BytesIO()
    img.save(buffer, "JPEG", quality=85, exif=exif.tobytes())
    return buffer.getvalue()


TRUNCATED_PNG = noise_png((200, 200))[:20_000]
SVG = b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"></svg>'
HTML = b"<!DOCTYPE html><html><head><title>Cute cats</title></head><body><img src=cat.png></body></html>"


# --- the stand-in internet and a guard on every connection ---------------------------------------


@pytest.fixture(autouse=True)
def loopback_only(loopback_connections: list[str]) -> list[str]:
    """Every test here runs with the loopback guard (tests/conftest.py)."""
    return loopback_connections


@dataclass
class Site:
    """A web server on the public stand-in, serving what a test puts in `files`."""

    port: int
    files: dict[str, tuple[bytes, str]]
    hits: list[str]

    def url(self, path: str, host: str = STAND_IN) -> str:
        return f"http://{host}:{self.port}{path}"


@pytest.fixture
async def site() -> AsyncIterator[Site]:
    stop = asyncio.Event()
    state = Site(port=0, files={}, hits=[])

    async def serve(request: web.Request) -> web.StreamResponse:
        state.hits.append(request.path_qs)
        name = request.match_info["name"]
        if name == "hang":  # accepts the connection, never answers
            await stop.wait()
            return web.Response(status=204)
        if name == "forever":  # an endless image/png body
            resp = web.StreamResponse(headers={"Content-Type": "image/png"})
            await resp.prepare(request)
            chunk = b"\x89PNG" + b"\x00" * 65_532
            while not stop.is_set():
                await resp.write(chunk)
            return resp
        if name == "redirect":
            raise web.HTTPFound(request.query["to"])
        body, content_type = state.files[name]
        return web.Response(body=body, headers={"Content-Type": content_type})

    app = web.Application()
    app.router.add_get("/{name}", serve)
    runner = web.AppRunner(app, shutdown_timeout=0.5, access_log=None)
    await runner.setup()
    tcp = web.TCPSite(runner, STAND_IN, 0)
    await tcp.start()
    state.port = runner.addresses[0][1]
    yield state
    stop.set()
    await runner.cleanup()


# --- driving the bot -------------------------------------------------------------------------------


@dataclass
class Answer:
    """What the member saw for one interaction: the final sentence, and whether only they saw it."""

    token: str
    sentence: str
    ephemeral: bool
    deferred: bool
    calls: list[RecordedCall]


def _is_answer(token: str) -> Callable[[RecordedCall], bool]:
    def check(call: RecordedCall) -> bool:
        if token not in call.path:
            return False
        if call.path.endswith("/callback"):
            return bool(call.json and call.json.get("type") == 4)
        return call.method == "PATCH"

    return check


async def ask(harness: Harness, bot: ImageBot, payload: dict[str, Any]) -> Answer:
    """Send an interaction, wait for its answer (a message, or the edit of the deferred one) and jobs."""
    token = str(payload["token"])
    await harness.discord.send_interaction(payload)
    await harness.discord.wait_for_call(_is_answer(token), timeout=5)
    await harness.settle(bot)
    calls = harness.calls_for(token)
    first, last = calls[0], calls[-1]
    if last.path.endswith("/callback"):
        data = last.json["data"]
        return Answer(token, data.get("content", ""), bool(data.get("flags", 0) & EPHEMERAL), False, calls)
    message = harness.discord.original_reply(token)
    return Answer(
        token, message["content"], bool(message["flags"] & EPHEMERAL), first.json["type"] == 5, calls
    )


async def nothing_spent(harness: Harness, bot: ImageBot, user_id: int | None = None) -> None:
    """Assert that no provider saw a request and the member's quota is untouched."""
    assert harness.freepik.count() == 0
    assert harness.novita.count() == 0
    member = Member(harness.discord.guild_ids[0], user_id or harness.discord.default_user_id)
    assert [status.used for status in await bot.core.quotas.status(member)] == [0, 0]


def describe_attachment(
    harness: Harness, data: bytes, filename: str, content_type: str | None
) -> dict[str, Any]:
    attachment = harness.discord.add_attachment(data, filename, content_type)
    return harness.discord.slash("describe", attachments={"image": attachment})


def describe_url(harness: Harness, url: str) -> dict[str, Any]:
    return harness.discord.slash("describe", {"url": url})


async def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    await eventually(predicate, what, timeout)


# --- bad files, attached ---------------------------------------------------------------------------

BAD_FILES = [
    pytest.param(
        b"Shopping list: eggs, milk, bread.\n", "notes.txt", "text/plain",
        sentence(Refusal.IMAGE_NOT_AN_IMAGE), id="non-image file",
    ),
    pytest.param(b"", "empty.png", "image/png", sentence(Refusal.IMAGE_EMPTY), id="zero bytes"),
    pytest.param(TRUNCATED_PNG, "cut.png", "image/png", sentence(Refusal.IMAGE_DAMAGED), id="truncated PNG"),
    pytest.param(SVG, "drawing.svg", "image/svg+xml", sentence(Refusal.IMAGE_IS_SVG), id="SVG"),
    pytest.param(
        pixel_bomb(), "bomb.png", "image/png", sentence(Refusal.IMAGE_TOO_MANY_PIXELS, max_pixels=MAX_PIXELS), id="pixel bomb"
    ),
]  # fmt: skip


@pytest.mark.parametrize(("data", "filename", "content_type", "expected"), BAD_FILES)
async def test_bad_attachment_is_answered_with_nothing_spent(
    harness: Harness, data: bytes, filename: str, content_type: str, expected: str
) -> None:
    bot = await harness.start_bot(describe_provider="novita")

    answer = await ask(harness, bot, describe_attachment(harness, data, filename, content_type))

    assert answer.sentence == expected
    # Acknowledged first (the bytes are read after the defer), then the same message says why.
    assert answer.deferred
    assert [call.method for call in answer.calls] == ["POST", "PATCH"]
    assert answer.calls[-1].json["embeds"] == []
    await nothing_spent(harness, bot)


async def test_attachment_over_the_byte_limit_is_refused_before_the_defer(harness: Harness) -> None:
    bot = await harness.start_bot(describe_provider="novita", max_image_bytes=100_000)
    big = noise_png((300, 300))
    assert len(big) > 100_000

    answer = await ask(harness, bot, describe_attachment(harness, big, "big.png", "image/png"))

    assert answer.sentence == sentence(Refusal.IMAGE_TOO_LARGE, max_bytes=100_000)
    assert answer.sentence == "That image is larger than 100 KB; send a smaller one."
    assert answer.ephemeral
    assert not answer.deferred
    # Discord's size field sufficed: the file was never downloaded.
    assert not any("/cdn/attachments/" in call.path for call in harness.discord.calls)
    await nothing_spent(harness, bot)


# --- bad links -------------------------------------------------------------------------------------

PRIVATE_LINKS = [
    pytest.param("http://127.0.0.1:{port}/photo.png", id="127.0.0.1"),
    pytest.param("http://10.0.0.1/photo.png", id="10.0.0.1"),
    pytest.param("http://169.254.169.254/latest/meta-data/", id="169.254.169.254 (cloud metadata)"),
    pytest.param("http://[::1]:{port}/photo.png", id="[::1]"),
    pytest.param("http://2130706433:{port}/photo.png", id="127.0.0.1 as one number"),
    pytest.param(
        "http://{stand_in}:{port}/redirect?to=http://127.0.0.1:{port}/photo.png",
        id="public-looking link redirecting to loopback",
    ),
]


@pytest.mark.parametrize("template", PRIVATE_LINKS)
async def test_link_to_a_private_address_is_refused(harness: Harness, site: Site, template: str) -> None:
    site.files["photo.png"] = (png_bytes(), "image/png")
    bot = await harness.start_bot(describe_provider="novita")
    url = template.format(port=site.port, stand_in=STAND_IN)

    answer = await ask(harness, bot, describe_url(harness, url))

    assert answer.sentence == sentence(Refusal.LINK_NOT_PUBLIC)
    assert answer.deferred
    assert [call.method for call in answer.calls] == ["POST", "PATCH"]
    # The only connection to the stand-in is the public hop of the redirect; 127.0.0.1 and the
    # others were refused before any connection was made.
    assert site.hits == (["/redirect?to=" + url.split("to=", 1)[1]] if "redirect" in url else [])
    await nothing_spent(harness, bot)


@pytest.mark.parametrize(
    "url", ["ftp://example.com/photo.png", "file:///etc/passwd"], ids=["ftp://", "file://"]
)
async def test_link_that_is_not_http_is_refused_before_the_defer(harness: Harness, url: str) -> None:
    bot = await harness.start_bot(describe_provider="novita")

    answer = await ask(harness, bot, describe_url(harness, url))

    assert answer.sentence == sentence(Refusal.LINK_NOT_WEB)
    assert answer.ephemeral
    assert not answer.deferred
    await nothing_spent(harness, bot)


async def test_redirect_to_a_file_url_is_refused(harness: Harness, site: Site) -> None:
    bot = await harness.start_bot(describe_provider="novita")

    answer = await ask(harness, bot, describe_url(harness, site.url("/redirect?to=file:///etc/passwd")))

    assert answer.sentence == sentence(Refusal.LINK_BAD_REDIRECT)
    await nothing_spent(harness, bot)


async def test_html_served_as_png_is_refused(harness: Harness, site: Site) -> None:
    site.files["cat.png"] = (HTML, "image/png")
    bot = await harness.start_bot(describe_provider="novita")

    answer = await ask(harness, bot, describe_url(harness, site.url("/cat.png")))

    assert answer.sentence == sentence(Refusal.IMAGE_IS_HTML)
    assert site.hits == ["/cat.png"]
    await nothing_spent(harness, bot)


async def test_link_that_never_answers_times_out(harness: Harness, site: Site) -> None:
    bot = await harness.start_bot(describe_provider="novita")  # the harness's downloader waits 1 s
    started = time.monotonic()

    answer = await ask(harness, bot, describe_url(harness, site.url("/hang")))

    assert answer.sentence == sentence(Refusal.LINK_TOO_SLOW)
    assert time.monotonic() - started < 4
    await nothing_spent(harness, bot)


async def test_link_that_streams_forever_is_cut_at_the_byte_limit(harness: Harness, site: Site) -> None:
    bot = await harness.start_bot(describe_provider="novita", max_image_bytes=1_000_000)

    answer = await ask(harness, bot, describe_url(harness, site.url("/forever")))

    assert answer.sentence == sentence(Refusal.LINK_TOO_LARGE, max_bytes=1_000_000)
    assert answer.sentence == "That link's file is larger than 1 MB; send a smaller image."
    await nothing_spent(harness, bot)


async def test_linked_file_over_the_byte_limit_is_refused(harness: Harness, site: Site) -> None:
    site.files["big.png"] = (noise_png((300, 300)), "image/png")
    bot = await harness.start_bot(describe_provider="novita", max_image_bytes=100_000)

    answer = await ask(harness, bot, describe_url(harness, site.url("/big.png")))

    assert answer.sentence == sentence(Refusal.LINK_TOO_LARGE, max_bytes=100_000)
    await nothing_spent(harness, bot)


@pytest.fixture
async def resolving_bot(harness: Harness) -> tuple[ImageBot, StubResolver]:
    """A harness bot whose downloader asks a stub DNS."""
    resolver = StubResolver({"photos.example.test": [[STAND_IN]], "sneaky.example.test": [["127.0.0.1"]]})
    return await harness.start_bot(describe_provider="novita", resolver=resolver), resolver


async def test_name_that_resolves_to_loopback_is_refused(
    harness: Harness, site: Site, resolving_bot: tuple[ImageBot, StubResolver]
) -> None:
    bot, resolver = resolving_bot
    site.files["photo.png"] = (png_bytes(), "image/png")

    answer = await ask(
        harness, bot, describe_url(harness, site.url("/photo.png", host="sneaky.example.test"))
    )

    assert answer.sentence == sentence(Refusal.LINK_NOT_PUBLIC)
    assert resolver.calls == ["sneaky.example.test"]
    assert site.hits == []
    await nothing_spent(harness, bot)


async def test_name_that_resolves_to_a_public_address_is_described(
    harness: Harness, site: Site, resolving_bot: tuple[ImageBot, StubResolver]
) -> None:
    bot, resolver = resolving_bot
    site.files["photo.png"] = (png_bytes((40, 30)), "image/png")

    answer = await ask(
        harness, bot, describe_url(harness, site.url("/photo.png", host="photos.example.test"))
    )

    assert answer.calls[-1].json["embeds"][0]["title"] == DONE_TITLE
    assert resolver.calls == ["photos.example.test"]
    assert site.hits == ["/photo.png"]
    assert [(i["width"], i["height"]) for i in harness.novita.received_images] == [(40, 30)]


# --- the cheap checks ------------------------------------------------------------------------------


async def test_both_image_and_url_is_refused_privately(harness: Harness) -> None:
    bot = await harness.start_bot(describe_provider="novita")
    attachment = harness.discord.add_attachment(png_bytes(), "photo.png", "image/png")
    payload = harness.discord.slash(
        "describe", {"url": "https://example.com/a.png"}, attachments={"image": attachment}
    )

    answer = await ask(harness, bot, payload)

    assert (answer.sentence, answer.ephemeral) == (sentence(Refusal.BOTH_IMAGE_AND_URL), True)
    await nothing_spent(harness, bot)


async def test_neither_image_nor_url_is_refused_privately(harness: Harness) -> None:
    bot = await harness.start_bot(describe_provider="novita")

    answer = await ask(harness, bot, harness.discord.slash("describe"))

    assert (answer.sentence, answer.ephemeral) == (sentence(Refusal.NEITHER_IMAGE_NOR_URL), True)
    await nothing_spent(harness, bot)


# --- good paths ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "max_side", "max_bytes"),
    [("novita", 2048, 30_000_000), ("freepik", 4096, 7_500_000)],
)
async def test_oversized_photo_arrives_upright_downscaled_and_without_exif(
    harness: Harness, provider: str, max_side: int, max_bytes: int
) -> None:
    bot = await harness.start_bot(describe_provider=provider)
    photo = photo_with_exif((4800, 3200))
    with Image.open(io.BytesIO(photo)) as sent:
        assert sent.getexif()[0x0112] == 6
        assert sent.getexif().get_ifd(0x8825)

    answer = await ask(harness, bot, describe_attachment(harness, photo, "IMG_0001.jpg", "image/jpeg"))

    assert answer.calls[-1].json["embeds"][0]["title"] == DONE_TITLE
    fake = harness.novita if provider == "novita" else harness.freepik
    [received] = fake.received_images
    assert received["valid"]
    assert received["format"] == "JPEG"
    assert not received["has_exif"]
    assert received["bytes"] <= max_bytes
    # Upright: the EXIF rotation turned the 4800 x 3200 landscape into a portrait, then it shrank.
    assert (received["width"], received["height"]) == (round(3200 * max_side / 4800), max_side)
    member = Member(harness.discord.guild_ids[0], harness.discord.default_user_id)
    assert (await bot.core.quotas.status(member))[0].used == 1


def image_embed(url: str, size: tuple[int, int]) -> dict[str, Any]:
    """Return the embed Discord makes when a member pastes a link to a picture."""
    thumbnail = {"url": url, "proxy_url": url, "width": size[0], "height": size[1]}
    return {"type": "image", "url": url, "thumbnail": thumbnail}


async def test_context_menu_picks_one_of_three_images(harness: Harness, site: Site) -> None:
    harness.novita.prompt_text = PROMPT
    site.files["blue.png"] = (png_bytes((96, 72), (20, 20, 200)), "image/png")
    bot = await harness.start_bot(describe_provider="novita")
    red = harness.discord.add_attachment(png_bytes((64, 48), (200, 20, 20)), "image.png", "image/png")
    green = harness.discord.add_attachment(png_bytes((80, 60), (20, 200, 20)), "image.png", "image/png")
    target = harness.discord.make_message(
        content="three pictures",
        attachments=[red, green],
        embeds=[image_embed(site.url("/blue.png"), (96, 72))],
    )

    menu = await ask(harness, bot, harness.discord.message_command("Describe image", target))

    # A private picker, one numbered option per image: two attachments and the previewed link.
    assert menu.ephemeral
    assert menu.sentence == Words().say(PICK_IMAGE, count=3)
    picker = harness.discord.original_reply(menu.token)
    [select] = picker["components"][0]["components"]
    assert [option["label"] for option in select["options"]] == [
        "1. image.png",
        "2. image.png",
        "3. blue.png",
    ]
    await nothing_spent(harness, bot)

    # Another member cannot use it.
    other = 999999999999999999
    intruder = await ask(
        harness, bot, harness.discord.select(select["custom_id"], ["1"], picker, user_id=other)
    )
    assert (intruder.sentence, intruder.ephemeral) == (sentence(Refusal.ONLY_INVOKER), True)
    await nothing_spent(harness, bot, other)

    # The member who asked picks the linked picture; it is downloaded, described, and the picker goes.
    pick = await ask(harness, bot, harness.discord.select(select["custom_id"], ["2"], picker))

    assert pick.deferred
    assert not pick.ephemeral
    final = pick.calls[-1].json["embeds"][0]
    assert final["title"] == DONE_TITLE
    assert PROMPT in final["description"]
    assert site.hits == ["/blue.png"]
    assert [(i["width"], i["height"]) for i in harness.novita.received_images] == [(96, 72)]
    assert harness.discord.original_message(menu.token) is None


async def test_context_menu_on_a_message_without_images_says_so(harness: Harness) -> None:
    bot = await harness.start_bot(describe_provider="novita")
    article = {
        "type": "article",
        "url": "https://example.com/",
        "title": "News",
        "thumbnail": {"url": "https://example.com/t.png"},
    }
    document = harness.discord.add_attachment(b"%PDF-1.7\n", "report.pdf", "application/pdf")
    target = harness.discord.make_message(
        content="no pictures here", attachments=[document], embeds=[article]
    )

    answer = await ask(harness, bot, harness.discord.message_command("Describe image", target))

    assert (answer.sentence, answer.ephemeral) == (sentence(Refusal.NO_IMAGE_IN_MESSAGE), True)
    await nothing_spent(harness, bot)


async def test_cached_image_is_answered_at_once_for_free(harness: Harness) -> None:
    harness.novita.prompt_text = PROMPT
    bot = await harness.start_bot(describe_provider="novita")
    photo = png_bytes((120, 90), (10, 160, 90))
    member = Member(harness.discord.guild_ids[0], harness.discord.default_user_id)

    first = await ask(harness, bot, describe_attachment(harness, photo, "a.png", "image/png"))
    second = await ask(harness, bot, describe_attachment(harness, photo, "same-again.png", "image/png"))

    assert harness.novita.count() == 1
    assert (await bot.core.quotas.status(member))[0].used == 1
    first_embed = first.calls[-1].json["embeds"][0]
    second_embed = second.calls[-1].json["embeds"][0]
    assert first_embed["title"] == second_embed["title"] == DONE_TITLE
    assert PROMPT in second_embed["description"]
    notes = [field["value"] for field in second_embed["fields"] if field["name"] == "Note"]
    assert notes == [Words().notice(Notice(NoticeCode.CACHED))]
    assert not any(field["name"] == "Note" for field in first_embed["fields"])
    # Answered at once: the defer and the finished result, nothing in between.
    assert [call.method for call in second.calls] == ["POST", "PATCH"]


# --- replying to an image and mentioning the bot ----------------------------------------------------


def mention_reply(
    harness: Harness, target: dict[str, Any], *, content: str | None = None, mentions_bot: bool = True
) -> dict[str, Any]:
    """Build the MESSAGE_CREATE of a member replying to `target`."""
    fake = harness.discord
    message = fake.make_message(
        content=f"<@{fake.bot_user_id}> what is this?" if content is None else content,
        mentions=[fake.bot_user] if mentions_bot else [],
        message_reference={
            "type": 0,
            "message_id": target["id"],
            "channel_id": target["channel_id"],
            "guild_id": target["guild_id"],
        },
    )
    message["member"] = {
        "roles": [],
        "joined_at": message["timestamp"],
        "deaf": False,
        "mute": False,
        "flags": 0,
    }
    return message


def bot_replies(harness: Harness) -> list[dict[str, Any]]:
    return [m for m in harness.discord.channel_messages() if m.get("message_reference")]


async def test_mention_in_a_reply_describes_the_replied_image(harness: Harness) -> None:
    harness.novita.prompt_text = PROMPT
    bot = await harness.start_bot(describe_provider="novita", mention_trigger=True)
    photo = harness.discord.add_attachment(png_bytes((72, 54)), "holiday.png", "image/png")
    target = harness.discord.make_message(content="look", attachments=[photo])
    ask_message = mention_reply(harness, target)

    await harness.discord.dispatch("MESSAGE_CREATE", ask_message)
    await wait_until(
        lambda: any(m["embeds"] and m["embeds"][0]["title"] == DONE_TITLE for m in bot_replies(harness)),
        "the reply to show the result",
    )
    await harness.settle(bot)

    [reply] = bot_replies(harness)
    assert str(reply["message_reference"]["message_id"]) == ask_message["id"]
    assert reply["content"] == ""  # no "Queued" left over above the result
    assert PROMPT in reply["embeds"][0]["description"]
    # Posted once, then edited in place as the task moved.
    posts = [c for c in harness.discord.calls if c.method == "POST" and c.path.endswith("/messages")]
    edits = [
        c
        for c in harness.discord.calls
        if c.method == "PATCH" and c.path.endswith(f"/messages/{reply['id']}")
    ]
    assert len(posts) == 1
    assert posts[0].json["embeds"][0]["title"] == "Image to prompt · Queued"
    assert edits
    assert [(i["width"], i["height"]) for i in harness.novita.received_images] == [(72, 54)]
    member = Member(harness.discord.guild_ids[0], harness.discord.default_user_id)
    assert (await bot.core.quotas.status(member))[0].used == 1


async def test_mention_of_the_bots_own_role_counts_as_a_mention(harness: Harness) -> None:
    bot = await harness.start_bot(describe_provider="novita", mention_trigger=True)
    fake = harness.discord
    guild_id = fake.guild_ids[0]
    role_id = 777777777777777777
    role = {
        "id": str(role_id),
        "name": "fake-bot",
        "permissions": "0",
        "position": 1,
        "color": 0,
        "hoist": False,
        "managed": True,
        "mentionable": False,
        "flags": 0,
        "tags": {"bot_id": str(fake.bot_user_id)},
    }
    await fake.dispatch("GUILD_ROLE_CREATE", {"guild_id": str(guild_id), "role": role})
    photo = fake.add_attachment(png_bytes(), "photo.png", "image/png")
    target = fake.make_message(attachments=[photo])

    await fake.dispatch(
        "MESSAGE_CREATE",
        mention_reply(harness, target, content=f"<@&{role_id}> describe", mentions_bot=False),
    )
    await wait_until(
        lambda: any(m["embeds"] and m["embeds"][0]["title"] == DONE_TITLE for m in bot_replies(harness)),
        "the reply to show the result",
    )
    await harness.settle(bot)

    assert harness.novita.count() == 1


async def test_mention_reply_to_a_bad_image_says_why_with_nothing_spent(harness: Harness) -> None:
    bot = await harness.start_bot(describe_provider="novita", mention_trigger=True)
    empty = harness.discord.add_attachment(b"", "empty.png", "image/png")
    target = harness.discord.make_message(attachments=[empty])

    await harness.discord.dispatch("MESSAGE_CREATE", mention_reply(harness, target))
    await wait_until(lambda: any(m["content"] for m in bot_replies(harness)), "the answer")
    await harness.settle(bot)

    [reply] = bot_replies(harness)
    assert reply["content"] == sentence(Refusal.IMAGE_EMPTY)
    assert reply["embeds"] == []
    await nothing_spent(harness, bot)


async def test_mention_reply_to_a_message_without_an_image_says_so(harness: Harness) -> None:
    bot = await harness.start_bot(describe_provider="novita", mention_trigger=True)
    target = harness.discord.make_message(content="just words")

    await harness.discord.dispatch("MESSAGE_CREATE", mention_reply(harness, target))
    await wait_until(lambda: bool(bot_replies(harness)), "the answer")

    [reply] = bot_replies(harness)
    assert reply["content"] == sentence(Refusal.NO_IMAGE_IN_MESSAGE)
    await nothing_spent(harness, bot)


@pytest.mark.parametrize(
    ("mention_trigger", "typed_mention", "mentions_bot"),
    [
        pytest.param(False, True, True, id="setting off"),
        pytest.param(True, False, True, id="reply ping without a typed mention"),
    ],
)
async def test_mention_trigger_stays_quiet_unless_asked(
    harness: Harness, mention_trigger: bool, typed_mention: bool, mentions_bot: bool
) -> None:
    bot = await harness.start_bot(describe_provider="novita", mention_trigger=mention_trigger)
    photo = harness.discord.add_attachment(png_bytes(), "photo.png", "image/png")
    # The bot's own picture: replying to it with a ping on puts the bot in `mentions`.
    target = harness.discord.make_message(attachments=[photo], author_id=harness.discord.bot_user_id)
    content = f"<@{harness.discord.bot_user_id}> nice" if typed_mention else "nice picture!"

    message = mention_reply(harness, target, content=content, mentions_bot=mentions_bot)
    # Wait until the bot has the message and its listeners have run: only then is silence an answer.
    received = asyncio.ensure_future(bot.wait_for("message", check=lambda m: str(m.id) == message["id"]))
    await harness.discord.dispatch("MESSAGE_CREATE", message)
    await asyncio.wait_for(received, 15)
    await harness.settle(bot)

    assert bot_replies(harness) == []
    await nothing_spent(harness, bot)
