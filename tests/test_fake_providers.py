"""Drive the fake Freepik and Novita servers with plain aiohttp clients."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import io
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDictProxy
from PIL import Image

from tests.conftest import eventually
from tests.fakes.openapi import FreepikContractError, validate_freepik_request
from tests.fakes.providers import (
    DEFAULT_FREEPIK_KEY,
    DEFAULT_NOVITA_KEY,
    DEFAULT_WEBHOOK_SECRET,
    FakeFreepik,
    FakeNovita,
    WebhookSecretMode,
)

FREEPIK_KEY = {"x-freepik-api-key": DEFAULT_FREEPIK_KEY}
NOVITA_KEY = {"Authorization": f"Bearer {DEFAULT_NOVITA_KEY}"}
I2P = "/v1/ai/image-to-prompt"
GEMINI = "/v1/ai/gemini-2-5-flash-image-preview"


def image_bytes(size: tuple[int, int] = (32, 24), fmt: str = "PNG", *, exif: bool = False) -> bytes:
    """Encode a solid-colour image, optionally with an EXIF camera tag."""
    buffer = io.BytesIO()
    extra: dict[str, Any] = {}
    if exif:
        tags = Image.Exif()
        tags[0x010F] = "FakeCam"  # Make
        extra["exif"] = tags.tobytes()
    Image.new("RGB", size, (10, 120, 200)).save(buffer, format=fmt, **extra)
    return buffer.getvalue()


def b64(data: bytes) -> str:
    """Return raw base64 text."""
    return base64.b64encode(data).decode()


class WebhookReceiver:
    """A tiny bot-side webhook endpoint that keeps what it was sent."""

    def __init__(self) -> None:
        self.status = 200
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.url = ""
        self._arrived = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        """Keep the delivery and answer the configured status."""
        self.received.append(({k.lower(): v for k, v in request.headers.items()}, await request.read()))
        self._arrived.set()
        return web.Response(status=self.status)

    async def wait_for(self, count: int) -> None:
        """Wait (at most 2 s) until ``count`` deliveries arrived."""
        async with asyncio.timeout(2.0):
            while len(self.received) < count:
                self._arrived.clear()
                await self._arrived.wait()


def expected_signature(key: bytes, headers: dict[str, str], body: bytes) -> str:
    """Compute a Standard Webhooks v1 signature independently of the fake."""
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """Give a client session."""
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture
async def freepik() -> AsyncIterator[FakeFreepik]:
    """Give a running poll-mode fake Freepik."""
    async with FakeFreepik() as fake:
        yield fake


@pytest.fixture
async def novita() -> AsyncIterator[FakeNovita]:
    """Give a running fake Novita."""
    async with FakeNovita() as fake:
        yield fake


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    """Give a webhook receiver listening on 127.0.0.1."""
    hook = WebhookReceiver()
    app = web.Application()
    app.router.add_post("/hooks/freepik", hook.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    hook.url = f"http://127.0.0.1:{runner.addresses[0][1]}/hooks/freepik"
    yield hook
    await runner.cleanup()


async def call(
    session: aiohttp.ClientSession, method: str, url: str, **kwargs: Any
) -> tuple[int, Any, CIMultiDictProxy[str]]:
    """Send one request and return status, parsed JSON (or text) and headers."""
    async with session.request(method, url, **kwargs) as response:
        if response.content_type == "application/json":
            return response.status, await response.json(), response.headers
        return response.status, await response.text(), response.headers


async def create_i2p(session: aiohttp.ClientSession, fake: FakeFreepik, **extra: Any) -> str:
    """Create an image-to-prompt task from a data URI and return its id."""
    body = {"image": "data:image/png;base64," + b64(image_bytes()), **extra}
    status, data, _ = await call(session, "POST", fake.base_url + I2P, json=body, headers=FREEPIK_KEY)
    assert status == 200, data
    return str(data["data"]["task_id"])


async def poll_statuses(session: aiohttp.ClientSession, url: str, times: int) -> list[dict[str, Any]]:
    """Poll a task URL several times and return the task objects."""
    tasks = []
    for _ in range(times):
        status, data, _ = await call(session, "GET", url, headers=FREEPIK_KEY)
        assert status == 200, data
        tasks.append(data["data"])
    return tasks


# -- Freepik: tasks ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("polls_per_state", "expected"),
    [
        (1, ["IN_PROGRESS", "COMPLETED", "COMPLETED"]),
        (2, ["CREATED", "IN_PROGRESS", "IN_PROGRESS", "COMPLETED"]),
    ],
)
async def test_image_to_prompt_over_polls(
    session: aiohttp.ClientSession, freepik: FakeFreepik, polls_per_state: int, expected: list[str]
) -> None:
    freepik.polls_per_state = polls_per_state
    body = {"image": "data:image/png;base64," + b64(image_bytes())}
    status, created, _ = await call(session, "POST", freepik.base_url + I2P, json=body, headers=FREEPIK_KEY)

    assert status == 200
    assert created["data"]["status"] == "CREATED"
    assert created["data"]["generated"] == []
    task_id = created["data"]["task_id"]
    assert uuid.UUID(task_id).version == 4
    seen = await poll_statuses(session, f"{freepik.base_url}{I2P}/{task_id}", len(expected))
    assert [t["status"] for t in seen] == expected
    assert seen[-1] == {"task_id": task_id, "status": "COMPLETED", "generated": [freepik.prompt_text]}
    assert all(t["generated"] == [] for t in seen if t["status"] != "COMPLETED")

    assert freepik.count() == 1 + len(expected)
    assert len(freepik.creates()) == 1
    assert len(freepik.polls()) == len(expected)
    assert freepik.tasks[task_id].polls == len(expected)
    assert freepik.tasks[task_id].kind == "image-to-prompt"
    first = freepik.requests[0]
    assert first.headers["x-freepik-api-key"] == DEFAULT_FREEPIK_KEY
    assert DEFAULT_FREEPIK_KEY not in repr(first)
    assert first.json == body
    assert first.status == 200
    [image] = freepik.received_images
    assert image["source"] == "data-uri"
    assert (image["width"], image["height"], image["format"], image["has_exif"]) == (32, 24, "PNG", False)


async def test_image_to_prompt_over_time(session: aiohttp.ClientSession) -> None:
    async with FakeFreepik(seconds_per_state=10.0, prompt_text="a lighthouse") as fake:
        task_id = await create_i2p(session, fake)
        url = f"{fake.base_url}{I2P}/{task_id}"
        task = fake.tasks[task_id]

        assert [t["status"] for t in await poll_statuses(session, url, 2)] == ["CREATED", "CREATED"]
        # Shift the creation time rather than sleep, so the test stays fast and exact.
        task.created_at -= 10.0
        assert (await poll_statuses(session, url, 1))[0]["status"] == "IN_PROGRESS"
        task.created_at -= 10.0
        assert (await poll_statuses(session, url, 1))[0]["generated"] == ["a lighthouse"]

        # And with a real clock: a short state length completes on its own.
        fake.seconds_per_state = 0.02
        quick = await create_i2p(session, fake)
        await asyncio.sleep(0.06)
        done = await poll_statuses(session, f"{fake.base_url}{I2P}/{quick}", 1)
        assert done[0]["status"] == "COMPLETED"


async def test_gemini_three_references_and_result_file(
    session: aiohttp.ClientSession, freepik: FakeFreepik
) -> None:
    refs = [b64(image_bytes((40, 30))), b64(image_bytes((20, 10), "JPEG", exif=True)), "https://x.test/a.png"]
    body = {"prompt": "make it snow", "reference_images": refs}
    status, created, _ = await call(
        session, "POST", freepik.base_url + GEMINI, json=body, headers=FREEPIK_KEY
    )
    assert status == 200
    task_id = created["data"]["task_id"]

    done = (await poll_statuses(session, f"{freepik.base_url}{GEMINI}/{task_id}", 2))[-1]
    assert done["status"] == "COMPLETED"
    [url] = done["generated"]
    assert url.startswith(freepik.base_url + "/files/")

    async with session.get(url) as response:
        assert response.status == 200
        assert response.content_type == "image/png"
        with Image.open(io.BytesIO(await response.read())) as result:
            assert result.size == (64, 48)

    freepik.result_status = 404
    assert (await call(session, "GET", url))[0] == 404
    freepik.result_status = 200
    freepik.result_image = b"<html>expired</html>"
    freepik.result_content_type = "text/html"
    status, text, _ = await call(session, "GET", url)
    assert (status, text) == (200, "<html>expired</html>")

    images = freepik.received_images
    assert [i["field"] for i in images] == [f"reference_images[{n}]" for n in range(3)]
    assert (images[0]["width"], images[0]["source"]) == (40, "base64")
    assert (images[1]["format"], images[1]["has_exif"]) == ("JPEG", True)
    assert (images[2]["source"], images[2]["url"]) == ("url", "https://x.test/a.png")


async def test_freepik_rejects_bad_bodies_and_unknown_tasks(
    session: aiohttp.ClientSession, freepik: FakeFreepik
) -> None:
    base = freepik.base_url
    four = {"prompt": "x", "reference_images": ["aGk="] * 4}
    cases: list[tuple[str, dict[str, Any]]] = [
        (I2P, {"data": b"{not json", "headers": {**FREEPIK_KEY, "Content-Type": "application/json"}}),
        (I2P, {"json": {"image": ""}, "headers": FREEPIK_KEY}),
        (I2P, {"json": {"webhook_url": "https://x.test/h"}, "headers": FREEPIK_KEY}),
        (GEMINI, {"json": {"reference_images": []}, "headers": FREEPIK_KEY}),
        (GEMINI, {"json": four, "headers": FREEPIK_KEY}),
    ]
    answers = [await call(session, "POST", base + path, **kwargs) for path, kwargs in cases]
    assert [status for status, _, _ in answers] == [400] * 5
    assert answers[0][1] == {"message": "Parameter 'image' is not valid"}
    assert answers[3][1] == {"message": "Parameter 'prompt' is not valid"}
    assert answers[4][1] == {"message": "Parameter 'reference_images' is not valid"}
    assert freepik.tasks == {}

    status, body, _ = await call(session, "GET", f"{base}{I2P}/{uuid.uuid4()}", headers=FREEPIK_KEY)
    assert (status, body) == (404, {"message": "Not found"})

    # A task is only found under its own kind, and the list call shows it.
    task_id = await create_i2p(session, freepik)
    assert (await call(session, "GET", f"{base}{GEMINI}/{task_id}", headers=FREEPIK_KEY))[0] == 404
    status, listing, _ = await call(session, "GET", base + I2P, headers=FREEPIK_KEY)
    assert (status, listing) == (200, {"data": [{"task_id": task_id, "status": "CREATED"}]})
    assert (await call(session, "GET", base + GEMINI, headers=FREEPIK_KEY))[1] == {"data": []}


async def test_failed_outcome(session: aiohttp.ClientSession) -> None:
    async with FakeFreepik(outcome="FAILED") as fake:
        task_id = await create_i2p(session, fake)
        seen = await poll_statuses(session, f"{fake.base_url}{I2P}/{task_id}", 3)
    assert [(t["status"], t["generated"]) for t in seen] == [
        ("IN_PROGRESS", []),
        ("FAILED", []),
        ("FAILED", []),
    ]


async def test_missing_and_wrong_key(session: aiohttp.ClientSession, freepik: FakeFreepik) -> None:
    url = freepik.base_url + I2P
    missing = await call(session, "GET", url)
    wrong = await call(session, "GET", url, headers={"x-freepik-api-key": "nope"})
    assert missing[:2] == (401, {"message": "Missing API key"})
    assert wrong[:2] == (401, {"message": "Invalid API key"})
    assert [r.status for r in freepik.requests] == [401, 401]

    async with FakeFreepik("k2", api_key_header="x-magnific-api-key") as renamed:
        assert (await call(session, "GET", renamed.base_url + I2P, headers={"x-magnific-api-key": "k2"}))[
            0
        ] == 200
        assert repr(renamed.requests[0]).count("k2") == 0


async def test_fail_next_then_success(session: aiohttp.ClientSession, freepik: FakeFreepik) -> None:
    freepik.fail_next("POST", I2P, 429, {"message": "Too Many Requests"}, {"Retry-After": "1"})
    freepik.fail_next("POST", "/v1/ai/", 503)
    body = {"image": "https://x.test/cat.jpg"}
    url = freepik.base_url + I2P

    first, second, third = [
        await call(session, "POST", url, json=body, headers=FREEPIK_KEY) for _ in range(3)
    ]
    assert first[:2] == (429, {"message": "Too Many Requests"})
    assert first[2]["Retry-After"] == "1"
    assert second[:2] == (503, {"message": "Service Unavailable. Please try again later."})
    assert third[0] == 200
    assert [r.status for r in freepik.creates()] == [429, 503, 200]
    assert len(freepik.tasks) == 1

    freepik.fail_next("*", "/v1", 500, "upstream exploded", times=2)
    answers = [await call(session, "GET", url, headers=FREEPIK_KEY) for _ in range(3)]
    assert [(s, b) for s, b, _ in answers[:2]] == [(500, "upstream exploded")] * 2
    assert answers[2][0] == 200


async def test_hang_next_times_out_and_closes_cleanly(session: aiohttp.ClientSession) -> None:
    fake = FakeFreepik()
    await fake.start()
    fake.hang_next("GET", I2P)
    with pytest.raises(TimeoutError):
        await call(
            session, "GET", fake.base_url + I2P, headers=FREEPIK_KEY, timeout=aiohttp.ClientTimeout(total=0.2)
        )
    # Only the next request hangs.
    assert (await call(session, "GET", fake.base_url + I2P, headers=FREEPIK_KEY))[0] == 200
    fake.hang_next("GET", I2P)
    pending = asyncio.ensure_future(call(session, "GET", fake.base_url + I2P, headers=FREEPIK_KEY))
    await eventually(lambda: len(fake.requests) == 3, "the hanging request to arrive")

    started = time.monotonic()
    await fake.close()
    assert time.monotonic() - started < 1.0
    with pytest.raises(aiohttp.ClientError):
        await pending
    assert [r.status for r in fake.requests] == [None, 200, None]


# -- Freepik: webhooks -------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["decoded", "raw"])
async def test_webhooks_over_time_are_signed(
    session: aiohttp.ClientSession, receiver: WebhookReceiver, mode: WebhookSecretMode
) -> None:
    secret = DEFAULT_WEBHOOK_SECRET
    async with FakeFreepik(seconds_per_state=0.01, webhook_secret=secret, webhook_secret_mode=mode) as fake:
        task_id = await create_i2p(session, fake, webhook_url=receiver.url)
        await receiver.wait_for(2)
        assert fake.polls() == []

    key = base64.b64decode(secret.removeprefix("whsec_")) if mode == "decoded" else secret.encode()
    other = secret.encode() if mode == "decoded" else base64.b64decode(secret.removeprefix("whsec_"))
    statuses = []
    for headers, body in receiver.received:
        assert headers["webhook-signature"] == expected_signature(key, headers, body)
        assert headers["webhook-signature"] != expected_signature(other, headers, body)
        assert headers["webhook-id"].startswith("msg_")
        assert abs(int(headers["webhook-timestamp"]) - time.time()) < 60
        payload = json.loads(body)
        assert set(payload) == {"task_id", "status", "generated"}
        assert payload["task_id"] == task_id
        statuses.append((payload["status"], payload["generated"]))
    assert statuses == [("IN_PROGRESS", []), ("COMPLETED", [fake.prompt_text])]
    assert len({h["webhook-id"] for h, _ in receiver.received}) == 2


async def test_webhooks_in_poll_mode_and_on_demand(
    session: aiohttp.ClientSession, freepik: FakeFreepik, receiver: WebhookReceiver
) -> None:
    task_id = await create_i2p(session, freepik, webhook_url=receiver.url)
    await poll_statuses(session, f"{freepik.base_url}{I2P}/{task_id}", 3)
    await freepik.wait_deliveries()
    assert [d.status for d in freepik.deliveries] == ["IN_PROGRESS", "COMPLETED"]
    assert [d.answered for d in freepik.deliveries] == [200, 200]

    # A replay: same id and timestamp twice; and a receiver that refuses.
    for _ in range(2):
        assert await freepik.deliver(task_id, webhook_id="msg_fixed", timestamp=1_700_000_000) == 200
    headers, _ = receiver.received[-1]
    assert (headers["webhook-id"], headers["webhook-timestamp"]) == ("msg_fixed", "1700000000")
    receiver.status = 401
    assert await freepik.deliver(task_id, secret="whsec_" + b64(b"wrong"), status="IN_PROGRESS") == 401
    headers, body = receiver.received[-1]
    assert b'"status":"IN_PROGRESS"' in body
    assert headers["webhook-signature"] == expected_signature(b"wrong", headers, body)
    await freepik.deliver(task_id, body_override=b'{"tampered":true}')
    assert receiver.received[-1][1] == b'{"tampered":true}'

    freepik.deliver_webhooks = False
    quiet = await create_i2p(session, freepik, webhook_url=receiver.url)
    await poll_statuses(session, f"{freepik.base_url}{I2P}/{quiet}", 2)
    await freepik.wait_deliveries()
    assert len(receiver.received) == 2 + 4


# -- Novita ------------------------------------------------------------------------------------


async def test_novita_success_and_received_images(session: aiohttp.ClientSession, novita: FakeNovita) -> None:
    url = novita.base_url + "/v3/img2prompt"
    for data in (image_bytes((300, 200), "JPEG", exif=True), image_bytes((2048, 16))):
        status, body, _ = await call(session, "POST", url, json={"image_file": b64(data)}, headers=NOVITA_KEY)
        assert (status, body) == (200, {"prompt": novita.prompt_text})
    first, second = novita.received_images
    assert (first["width"], first["height"], first["format"], first["has_exif"]) == (300, 200, "JPEG", True)
    assert (second["width"], second["format"], second["has_exif"]) == (2048, "PNG", False)
    assert len(novita.calls()) == 2
    assert DEFAULT_NOVITA_KEY not in repr(novita.requests[0])
    assert novita.requests[0].headers["authorization"] == f"Bearer {DEFAULT_NOVITA_KEY}"


async def test_novita_refusals(session: aiohttp.ClientSession, novita: FakeNovita) -> None:
    url = novita.base_url + "/v3/img2prompt"
    good = b64(image_bytes())
    unauthorized = {"code": 401, "reason": "INVALID_API_KEY", "message": "invalid api key"}
    assert (await call(session, "POST", url, json={"image_file": good}))[:2] == (401, unauthorized)
    wrong = {"Authorization": "Bearer nope"}
    assert (await call(session, "POST", url, json={"image_file": good}, headers=wrong))[:2] == (
        401,
        unauthorized,
    )

    bad_requests: list[dict[str, Any]] = [
        {"json": {"image_file": "data:image/png;base64," + good}},
        {"json": {"image_file": b64(image_bytes((2049, 8)))}},
        {"json": {"image_file": b64(b"<html>not an image</html>")}},
        {"json": {"image_file": "***"}},
        {"json": {}},
        {"data": f'{{"image_file": "{good}"}}', "headers": {**NOVITA_KEY, "Content-Type": "text/plain"}},
    ]
    for kwargs in bad_requests:
        kwargs.setdefault("headers", NOVITA_KEY)
        status, body, _ = await call(session, "POST", url, **kwargs)
        assert status == 400, kwargs
        assert body["code"] == 400
        assert body["reason"] == "INVALID_REQUEST_BODY"
        assert isinstance(body["message"], str)
    # The oversized image was decoded and recorded before it was refused.
    assert [i["width"] for i in novita.received_images] == [2049]


async def test_novita_faults(session: aiohttp.ClientSession, novita: FakeNovita) -> None:
    url = novita.base_url + "/v3/img2prompt"
    novita.fail_next("POST", "/v3", 503)
    novita.delay = 0.05
    body = {"image_file": b64(image_bytes())}
    status, error, _ = await call(session, "POST", url, json=body, headers=NOVITA_KEY)
    assert (status, error["code"], error["reason"]) == (503, 503, "SERVICE_UNAVAILABLE")
    started = time.monotonic()
    assert (await call(session, "POST", url, json=body, headers=NOVITA_KEY))[0] == 200
    assert time.monotonic() - started >= 0.05
    assert novita.count("POST", "/v3/img2prompt") == 2


# -- OpenAPI contract --------------------------------------------------------------------------


async def test_openapi_accepts_what_the_fake_recorded(
    session: aiohttp.ClientSession, freepik: FakeFreepik
) -> None:
    task_id = await create_i2p(session, freepik, webhook_url="https://bot.example/hooks/freepik")
    await poll_statuses(session, f"{freepik.base_url}{I2P}/{task_id}", 1)
    await call(session, "GET", freepik.base_url + I2P, headers=FREEPIK_KEY)
    body = {"prompt": "a cat", "reference_images": [b64(image_bytes())] * 3}
    status, created, _ = await call(
        session, "POST", freepik.base_url + GEMINI, json=body, headers=FREEPIK_KEY
    )
    assert status == 200
    await poll_statuses(session, f"{freepik.base_url}{GEMINI}/{created['data']['task_id']}", 1)

    assert len(freepik.requests) == 5
    for request in freepik.requests:
        validate_freepik_request(request)


async def test_openapi_rejects_nonconforming_requests(
    session: aiohttp.ClientSession, freepik: FakeFreepik
) -> None:
    base = freepik.base_url
    await call(session, "POST", base + I2P, json={"webhook_url": "https://x.test/h"}, headers=FREEPIK_KEY)
    await call(session, "POST", base + I2P, json={"image": "aGk="})
    await call(
        session,
        "POST",
        base + GEMINI,
        json={"prompt": "x", "reference_images": ["aGk="] * 4},
        headers=FREEPIK_KEY,
    )
    await call(
        session, "POST", base + I2P, json={"image": "aGk=", "webhook_url": "not a url"}, headers=FREEPIK_KEY
    )
    await call(session, "GET", f"{base}{I2P}/not-a-uuid", headers=FREEPIK_KEY)

    expected = [
        "'image' is a required property",
        "Security not found",
        "is too long",
        "is not a 'uri'",
        "uuid",
    ]
    assert len(freepik.requests) == len(expected)
    for request, fragment in zip(freepik.requests, expected, strict=True):
        with pytest.raises(FreepikContractError, match=fragment):
            validate_freepik_request(request)
