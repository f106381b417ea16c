"""Novita img2prompt: synchronous, so its start returns a finished task."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Mapping

import aiohttp
from pydantic import BaseModel, ValidationError

from bot.errors import ProviderError, ProviderFault
from bot.providers.base import ImageLimits, InputImage, TaskKind, TaskSnapshot, TaskState
from bot.providers.http import MisconfigurationLog, RetryPolicy, request_json

_PATH = "/v3/img2prompt"


class PromptAnswer(BaseModel):
    prompt: str


class NovitaProvider:
    name = "novita"
    kinds = frozenset({TaskKind.DESCRIBE})
    image_limits = ImageLimits(max_side=2048, max_bytes=30_000_000)
    is_synchronous = True

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        api_key: str,
        base_url: str,
        request_timeout: float = 90.0,  # the service can take a minute when overloaded
        retry: RetryPolicy | None = None,
    ) -> None:
        self._session = session
        self._url = base_url.rstrip("/") + _PATH
        self._headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
        self._timeout = request_timeout
        self._retry = retry or RetryPolicy()
        self._key_log = MisconfigurationLog()

    async def start_describe(self, image: InputImage, *, webhook_url: str | None) -> TaskSnapshot:
        # Raw base64 without a data: prefix, as the official SDK sends it.
        body = {"image_file": base64.b64encode(image.data).decode("ascii")}
        answer = await request_json(
            self._session,
            self.name,
            "POST",
            self._url,
            headers=self._headers,
            key_log=self._key_log,
            body=body,
            timeout=self._timeout,
            retry=self._retry,
            creates=True,
        )
        try:
            prompt = PromptAnswer.model_validate(answer).prompt
        except ValidationError as exc:
            raise ProviderError(self.name, ProviderFault.BAD_RESULT, "answer has no prompt") from exc
        # Novita has no task ids; ours lets the usage log tell tasks apart.
        return TaskSnapshot(task_id=f"novita-{uuid.uuid4().hex}", state=TaskState.COMPLETED, prompt=prompt)

    async def start_imagine(
        self, prompt: str, references: list[InputImage], *, webhook_url: str | None
    ) -> TaskSnapshot:
        raise ProviderError(self.name, ProviderFault.REJECTED, "Novita does not generate images here")

    async def poll(self, kind: TaskKind, task_id: str) -> TaskSnapshot:
        # Nothing to poll: every task finished in start. A resumed job that reaches here lost its answer.
        raise ProviderError(self.name, ProviderFault.NOT_FOUND, "synchronous tasks cannot be polled")

    async def fetch_results(self, snapshot: TaskSnapshot) -> TaskSnapshot:
        return snapshot

    def snapshot_from_webhook(self, kind: TaskKind, payload: Mapping[str, object]) -> TaskSnapshot:
        raise ProviderError(self.name, ProviderFault.BAD_RESULT, "Novita sends no webhooks")

    async def check_key(self) -> None:
        # No free endpoint is documented: an empty image is refused (400) only after the key passed
        # (401 otherwise), and a refused request is not billed.
        try:
            await request_json(
                self._session,
                self.name,
                "POST",
                self._url,
                headers=self._headers,
                key_log=self._key_log,
                body={"image_file": ""},
                timeout=self._timeout,
            )
        except ProviderError as exc:
            if exc.fault is not ProviderFault.REJECTED:
                raise
