"""Freepik: image-to-prompt and Gemini 2.5 Flash image tasks (create, then poll or webhook)."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Mapping

import aiohttp
from pydantic import BaseModel, ValidationError

from bot.errors import BadInput, ProviderError, ProviderFault
from bot.images import check_image
from bot.providers.base import GeneratedImage, ImageLimits, InputImage, TaskKind, TaskSnapshot, TaskState
from bot.providers.http import MisconfigurationLog, RetryPolicy, request_json

log = logging.getLogger(__name__)

_PATHS = {
    TaskKind.DESCRIBE: "/v1/ai/image-to-prompt",
    TaskKind.IMAGINE: "/v1/ai/gemini-2-5-flash-image-preview",
}
_STATES = {
    "CREATED": TaskState.CREATED,
    "IN_PROGRESS": TaskState.IN_PROGRESS,
    "COMPLETED": TaskState.COMPLETED,
    "FAILED": TaskState.FAILED,
    "CANCELLED": TaskState.FAILED,
}
# Generated images are downloaded at once (their URLs expire) and uploaded to Discord; this caps
# what one result may weigh in memory.
MAX_RESULT_BYTES = 25_000_000


class TaskBody(BaseModel):
    task_id: str
    status: str
    generated: list[str]


class TaskEnvelope(BaseModel):
    data: TaskBody


def snapshot_from_body(body: TaskBody, kind: TaskKind) -> TaskSnapshot:
    """Turn a task object (from a poll or a webhook) into a snapshot."""
    # An unknown status is not an end: the task is taken as still running.
    state = _STATES.get(body.status.upper(), TaskState.IN_PROGRESS)
    if state is not TaskState.COMPLETED:
        return TaskSnapshot(task_id=body.task_id, state=state)
    if kind is TaskKind.DESCRIBE:
        # generated[0] holds the prompt TEXT, although the schema calls it an image URL.
        return TaskSnapshot(
            task_id=body.task_id, state=state, prompt=body.generated[0] if body.generated else None
        )
    return TaskSnapshot(task_id=body.task_id, state=state, image_urls=tuple(body.generated))


class FreepikProvider:
    name = "freepik"
    kinds = frozenset({TaskKind.DESCRIBE, TaskKind.IMAGINE})
    # The API takes images up to 10 MB; base64 grows bytes by a third, so the raw image stays under 7.5 MB.
    image_limits = ImageLimits(max_side=4096, max_bytes=7_500_000)
    is_synchronous = False

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        api_key: str,
        base_url: str,
        key_header: str = "x-freepik-api-key",
        request_timeout: float = 30.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        self._session = session
        self._base = base_url.rstrip("/")
        self._headers = {key_header: api_key, "Accept": "application/json"}
        self._timeout = request_timeout
        self._retry = retry or RetryPolicy()
        self._key_log = MisconfigurationLog()

    async def start_describe(self, image: InputImage, *, webhook_url: str | None) -> TaskSnapshot:
        encoded = base64.b64encode(image.data).decode("ascii")
        # The official example sends a data URI; the MIME type tells the service how to decode it.
        body: dict[str, object] = {"image": f"data:{image.mime};base64,{encoded}"}
        return await self._create(TaskKind.DESCRIBE, body, webhook_url)

    async def start_imagine(
        self, prompt: str, references: list[InputImage], *, webhook_url: str | None
    ) -> TaskSnapshot:
        body: dict[str, object] = {"prompt": prompt}
        if references:
            # Raw base64, no data: prefix, as in the official example.
            body["reference_images"] = [base64.b64encode(ref.data).decode("ascii") for ref in references[:3]]
        return await self._create(TaskKind.IMAGINE, body, webhook_url)

    async def poll(self, kind: TaskKind, task_id: str) -> TaskSnapshot:
        answer = await request_json(
            self._session,
            self.name,
            "GET",
            f"{self._base}{_PATHS[kind]}/{task_id}",
            headers=self._headers,
            key_log=self._key_log,
            timeout=self._timeout,
        )
        return snapshot_from_body(self._parse(answer), kind)

    async def fetch_results(self, snapshot: TaskSnapshot) -> TaskSnapshot:
        if not snapshot.image_urls:
            raise ProviderError(self.name, ProviderFault.BAD_RESULT, "completed without an image")
        images = await asyncio.gather(*(self._download(url) for url in snapshot.image_urls))
        return TaskSnapshot(task_id=snapshot.task_id, state=snapshot.state, images=tuple(images))

    def snapshot_from_webhook(self, kind: TaskKind, payload: Mapping[str, object]) -> TaskSnapshot:
        try:
            return snapshot_from_body(TaskBody.model_validate(payload), kind)
        except ValidationError as exc:
            raise ProviderError(self.name, ProviderFault.BAD_RESULT, "unexpected webhook shape") from exc

    async def check_key(self) -> None:
        # Listing tasks is free and needs a valid key.
        await request_json(
            self._session,
            self.name,
            "GET",
            f"{self._base}{_PATHS[TaskKind.DESCRIBE]}",
            headers=self._headers,
            key_log=self._key_log,
            timeout=self._timeout,
        )

    async def _create(self, kind: TaskKind, body: dict[str, object], webhook_url: str | None) -> TaskSnapshot:
        if webhook_url:
            body["webhook_url"] = webhook_url
        answer = await request_json(
            self._session,
            self.name,
            "POST",
            f"{self._base}{_PATHS[kind]}",
            headers=self._headers,
            key_log=self._key_log,
            body=body,
            timeout=self._timeout,
            retry=self._retry,
            creates=True,
        )
        return snapshot_from_body(self._parse(answer), kind)

    def _parse(self, answer: object) -> TaskBody:
        try:
            return TaskEnvelope.model_validate(answer).data
        except ValidationError as exc:
            raise ProviderError(self.name, ProviderFault.BAD_RESULT, "unexpected task shape") from exc

    async def _download(self, url: str) -> GeneratedImage:
        try:
            async with self._session.get(url, timeout=aiohttp.ClientTimeout(total=60)) as response:
                if response.status != 200:
                    raise ProviderError(
                        self.name, ProviderFault.BAD_RESULT, f"result download answered {response.status}"
                    )
                data = bytearray()
                async for chunk in response.content.iter_chunked(65536):
                    data.extend(chunk)
                    if len(data) > MAX_RESULT_BYTES:
                        raise ProviderError(self.name, ProviderFault.BAD_RESULT, "result image too large")
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise ProviderError(self.name, ProviderFault.BAD_RESULT, "result download failed") from exc
        try:
            checked = await asyncio.to_thread(check_image, bytes(data), max_bytes=MAX_RESULT_BYTES)
        except BadInput as exc:
            raise ProviderError(self.name, ProviderFault.BAD_RESULT, "result is not an image") from exc
        return GeneratedImage(data=checked.data, mime=f"image/{checked.format.lower()}")
