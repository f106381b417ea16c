"""Freepik: image-to-prompt and Gemini 2.5 Flash image tasks (create, then poll or webhook)."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Sequence

import aiohttp
from pydantic import BaseModel, Field, HttpUrl, SecretStr, ValidationError
from pydantic_settings import SettingsConfigDict

from bot.core.images import check_image
from bot.domain.errors import BadInput, ProviderError
from bot.domain.ports import Provider, WebhookDelivery
from bot.domain.tasks import (
    DescribeRequest,
    Fault,
    ImageBytes,
    ImageLimits,
    ProviderStatus,
    Suggestion,
    TaskKind,
    TaskSnapshot,
)
from bot.providers.budget import RateLimit, RequestBudget
from bot.providers.http import MisconfigurationLog, RetryPolicy, request_json
from bot.providers.spec import BuildContext, ProviderSettings, ProviderSpec

log = logging.getLogger(__name__)

NAME = "freepik"
_PATHS = {
    TaskKind.DESCRIBE: "/v1/ai/image-to-prompt",
    TaskKind.IMAGINE: "/v1/ai/gemini-2-5-flash-image-preview",
}
_STATUSES = {
    "CREATED": ProviderStatus.CREATED,
    "IN_PROGRESS": ProviderStatus.IN_PROGRESS,
    "COMPLETED": ProviderStatus.COMPLETED,
    "FAILED": ProviderStatus.FAILED,
    "CANCELLED": ProviderStatus.FAILED,
}
# Generated images are downloaded at once (their URLs expire) and uploaded to Discord; this caps
# what one result may weigh in memory.
MAX_RESULT_BYTES = 25_000_000


class FreepikSettings(ProviderSettings):
    model_config = SettingsConfigDict(env_prefix="FREEPIK_")

    api_key: SecretStr | None = Field(
        None, description="enables the Freepik provider (image-to-prompt and image generation)"
    )
    base_url: HttpUrl = Field(
        HttpUrl("https://api.freepik.com"),
        description="where Freepik requests go (a proxy, the renamed host, or a local fake)",
    )
    api_key_header: str = Field(
        "x-freepik-api-key",
        description="the header that carries the Freepik key (`x-magnific-api-key` on the renamed host)",
    )
    # Freepik's documented rate limits (per IP; polls count): the bot never sends more, creates first.
    burst_requests_per_second: float = Field(
        50.0,
        gt=0,
        description="Freepik's burst limit: requests per second over FREEPIK_BURST_WINDOW_SECONDS, "
        "creates and polls together (per IP: share it out when other programs use the same address)",
    )
    burst_window_seconds: float = Field(
        5.0, gt=0, description="the window of Freepik's burst limit, in seconds"
    )
    average_requests_per_second: float = Field(
        10.0,
        gt=0,
        description="Freepik's average limit: requests per second averaged over "
        "FREEPIK_AVERAGE_WINDOW_SECONDS (per IP, as above)",
    )
    average_window_seconds: float = Field(
        120.0, gt=0, description="the window of Freepik's average limit, in seconds"
    )

    @property
    def configured(self) -> bool:
        return self.api_key is not None

    def budget(self) -> RequestBudget:
        """Return a request budget that keeps one process within both documented limits."""
        return RequestBudget(
            [
                RateLimit.per_second(self.burst_requests_per_second, self.burst_window_seconds),
                RateLimit.per_second(self.average_requests_per_second, self.average_window_seconds),
            ]
        )


class TaskBody(BaseModel):
    task_id: str = Field(min_length=1)
    status: str
    generated: list[str]


class TaskEnvelope(BaseModel):
    data: TaskBody


class WebhookBody(TaskBody):
    """A webhook posts the task object without the `data` wrapper; `generated` may be left out."""

    generated: list[str] = Field(default_factory=list)


def snapshot_from_body(body: TaskBody, kind: TaskKind) -> TaskSnapshot:
    """Turn a task object (from a poll or a webhook) into a snapshot."""
    # An unknown status is not an end: the task is taken as still running.
    status = _STATUSES.get(body.status.upper(), ProviderStatus.IN_PROGRESS)
    if status is not ProviderStatus.COMPLETED:
        return TaskSnapshot(task_id=body.task_id, status=status)
    if kind is TaskKind.DESCRIBE:
        # generated[0] holds the prompt TEXT, although the schema calls it an image URL.
        prompts = (Suggestion(body.generated[0]),) if body.generated and body.generated[0].strip() else ()
        return TaskSnapshot(task_id=body.task_id, status=status, suggestions=prompts)
    return TaskSnapshot(task_id=body.task_id, status=status, image_urls=tuple(body.generated))


class FreepikAdapter:
    """Speaks Freepik's task API: a describer, an imaginer, a poller, a webhook reader and a key check."""

    # The API takes images up to 10 MB; base64 grows bytes by a third, so the raw image stays under 7.5 MB.
    image_limits = ImageLimits(max_side=4096, max_bytes=7_500_000)

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        api_key: str,
        base_url: str,
        key_header: str = "x-freepik-api-key",
        request_timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        budget: RequestBudget | None = None,
    ) -> None:
        self._session = session
        self._base = base_url.rstrip("/")
        self._headers = {key_header: api_key, "Accept": "application/json"}
        self._timeout = request_timeout
        self._retry = retry or RetryPolicy()
        self._key_log = MisconfigurationLog()
        # Every request to the API takes a slot under the rate limits (result downloads go elsewhere).
        self.budget = budget

    async def describe(
        self, image: ImageBytes, request: DescribeRequest, *, webhook_url: str | None
    ) -> TaskSnapshot:
        # One detailed prompt is all this endpoint gives: the service asks nothing else of it.
        encoded = base64.b64encode(image.data).decode("ascii")
        # The official example sends a data URI; the MIME type tells the service how to decode it.
        body: dict[str, object] = {"image": f"data:{image.mime};base64,{encoded}"}
        return await self._create(TaskKind.DESCRIBE, body, webhook_url)

    async def imagine(
        self, prompt: str, references: Sequence[ImageBytes], *, webhook_url: str | None
    ) -> TaskSnapshot:
        body: dict[str, object] = {"prompt": prompt}
        if references:
            # Raw base64, no data: prefix, as in the official example.
            body["reference_images"] = [base64.b64encode(ref.data).decode("ascii") for ref in references[:3]]
        return await self._create(TaskKind.IMAGINE, body, webhook_url)

    async def poll(self, kind: TaskKind, task_id: str, *, chance: float = 1.0) -> TaskSnapshot:
        answer = await request_json(
            self._session,
            NAME,
            "GET",
            f"{self._base}{_PATHS[kind]}/{task_id}",
            headers=self._headers,
            key_log=self._key_log,
            timeout=self._timeout,
            budget=self.budget,
            chance=chance,
        )
        return snapshot_from_body(self._parse(answer), kind)

    async def fetch_results(self, snapshot: TaskSnapshot) -> TaskSnapshot:
        if not snapshot.image_urls:
            raise ProviderError(NAME, Fault.BAD_RESULT, "completed without an image")
        images = await asyncio.gather(*(self._download(url) for url in snapshot.image_urls))
        return TaskSnapshot(task_id=snapshot.task_id, status=snapshot.status, images=tuple(images))

    def read_delivery(self, body: bytes) -> WebhookDelivery:
        try:
            parsed = WebhookBody.model_validate_json(body)
        except ValidationError as exc:
            bad_json = any(error["type"] == "json_invalid" for error in exc.errors())
            raise ProviderError(
                NAME, Fault.BAD_RESULT, "malformed JSON" if bad_json else "unexpected body shape"
            ) from None
        return WebhookDelivery(task_id=parsed.task_id, body=parsed)

    def snapshot(self, kind: TaskKind, delivery: WebhookDelivery) -> TaskSnapshot:
        assert isinstance(delivery.body, WebhookBody)
        return snapshot_from_body(delivery.body, kind)

    async def check_key(self) -> None:
        # Listing tasks is free and needs a valid key.
        await request_json(
            self._session,
            NAME,
            "GET",
            f"{self._base}{_PATHS[TaskKind.DESCRIBE]}",
            headers=self._headers,
            key_log=self._key_log,
            timeout=self._timeout,
            budget=self.budget,
        )

    async def _create(self, kind: TaskKind, body: dict[str, object], webhook_url: str | None) -> TaskSnapshot:
        if webhook_url:
            body["webhook_url"] = webhook_url
        answer = await request_json(
            self._session,
            NAME,
            "POST",
            f"{self._base}{_PATHS[kind]}",
            headers=self._headers,
            key_log=self._key_log,
            body=body,
            timeout=self._timeout,
            retry=self._retry,
            creates=True,
            budget=self.budget,
        )
        return snapshot_from_body(self._parse(answer), kind)

    @staticmethod
    def _parse(answer: object) -> TaskBody:
        try:
            return TaskEnvelope.model_validate(answer).data
        except ValidationError as exc:
            raise ProviderError(NAME, Fault.BAD_RESULT, "unexpected task shape") from exc

    async def _download(self, url: str) -> ImageBytes:
        try:
            async with self._session.get(url, timeout=aiohttp.ClientTimeout(total=60)) as response:
                if response.status != 200:
                    raise ProviderError(NAME, Fault.BAD_RESULT, f"result download answered {response.status}")
                data = bytearray()
                async for chunk in response.content.iter_chunked(65536):
                    data.extend(chunk)
                    if len(data) > MAX_RESULT_BYTES:
                        raise ProviderError(NAME, Fault.BAD_RESULT, "result image too large")
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise ProviderError(NAME, Fault.BAD_RESULT, "result download failed") from exc
        try:
            checked = await asyncio.to_thread(check_image, bytes(data), max_bytes=MAX_RESULT_BYTES)
        except BadInput as exc:
            raise ProviderError(NAME, Fault.BAD_RESULT, "result is not an image") from exc
        return ImageBytes(data=checked.data, mime=f"image/{checked.format.lower()}")


def build(settings: FreepikSettings, context: BuildContext) -> Provider:
    assert settings.api_key is not None
    adapter = FreepikAdapter(
        context.session,
        api_key=settings.api_key.get_secret_value(),
        base_url=str(settings.base_url),
        key_header=settings.api_key_header,
        request_timeout=context.request_timeout,
        budget=settings.budget(),
    )
    return Provider(
        name=NAME,
        image_limits=adapter.image_limits,
        key_checker=adapter,
        describer=adapter,
        imaginer=adapter,
        poller=adapter,
        webhooks=adapter,
    )


SPEC = ProviderSpec(
    name=NAME,
    title="Freepik",
    settings=FreepikSettings,
    enabled_by="FREEPIK_API_KEY",
    key_setting="FREEPIK_API_KEY",
    address_setting="FREEPIK_BASE_URL",
    build=build,
)
