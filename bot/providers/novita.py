"""Novita img2prompt: synchronous, so its describe answers with a finished task."""

from __future__ import annotations

import base64
import uuid

import aiohttp
from pydantic import BaseModel, Field, HttpUrl, SecretStr, ValidationError
from pydantic_settings import SettingsConfigDict

from bot.domain.errors import ProviderError
from bot.domain.ports import Provider
from bot.domain.tasks import (
    DescribeRequest,
    Fault,
    ImageBytes,
    ImageLimits,
    ProviderStatus,
    Suggestion,
    TaskSnapshot,
)
from bot.providers.http import MisconfigurationLog, RetryPolicy, request_json
from bot.providers.spec import BuildContext, ProviderSettings, ProviderSpec

NAME = "novita"
_PATH = "/v3/img2prompt"
# Novita is synchronous and can take a minute when overloaded: its requests never get less than this.
MIN_REQUEST_TIMEOUT = 90.0


class NovitaSettings(ProviderSettings):
    model_config = SettingsConfigDict(env_prefix="NOVITA_")

    api_key: SecretStr | None = Field(None, description="enables the Novita provider (image-to-prompt)")
    base_url: HttpUrl = Field(HttpUrl("https://api.novita.ai"), description="where Novita requests go")

    @property
    def configured(self) -> bool:
        return self.api_key is not None


class PromptAnswer(BaseModel):
    prompt: str


class NovitaAdapter:
    """Speaks Novita's img2prompt: a describer and a key check."""

    image_limits = ImageLimits(max_side=2048, max_bytes=30_000_000)

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        api_key: str,
        base_url: str,
        request_timeout: float = MIN_REQUEST_TIMEOUT,
        retry: RetryPolicy | None = None,
    ) -> None:
        self._session = session
        self._url = base_url.rstrip("/") + _PATH
        self._headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
        self._timeout = request_timeout
        self._retry = retry or RetryPolicy()
        self._key_log = MisconfigurationLog()

    async def describe(
        self, image: ImageBytes, request: DescribeRequest, *, webhook_url: str | None
    ) -> TaskSnapshot:
        # One detailed prompt is all this endpoint gives: the service asks nothing else of it.
        # Raw base64 without a data: prefix, as the official SDK sends it.
        body = {"image_file": base64.b64encode(image.data).decode("ascii")}
        answer = await request_json(
            self._session,
            NAME,
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
            raise ProviderError(NAME, Fault.BAD_RESULT, "answer has no prompt") from exc
        # Novita has no task ids; ours lets the usage log tell tasks apart.
        prompts = (Suggestion(prompt),) if prompt.strip() else ()
        return TaskSnapshot(
            task_id=f"novita-{uuid.uuid4().hex}", status=ProviderStatus.COMPLETED, suggestions=prompts
        )

    async def check_key(self) -> None:
        # No free endpoint is documented: an empty image is refused (400) only after the key passed
        # (401 otherwise), and a refused request is not billed.
        try:
            await request_json(
                self._session,
                NAME,
                "POST",
                self._url,
                headers=self._headers,
                key_log=self._key_log,
                body={"image_file": ""},
                timeout=self._timeout,
            )
        except ProviderError as exc:
            if exc.fault is not Fault.REJECTED:
                raise


def build(settings: NovitaSettings, context: BuildContext) -> Provider:
    assert settings.api_key is not None
    adapter = NovitaAdapter(
        context.session,
        api_key=settings.api_key.get_secret_value(),
        base_url=str(settings.base_url),
        request_timeout=max(MIN_REQUEST_TIMEOUT, context.request_timeout),
    )
    return Provider(name=NAME, image_limits=adapter.image_limits, key_checker=adapter, describer=adapter)


SPEC = ProviderSpec(
    name=NAME,
    title="Novita",
    settings=NovitaSettings,
    enabled_by="NOVITA_API_KEY",
    key_setting="NOVITA_API_KEY",
    address_setting="NOVITA_BASE_URL",
    build=build,
)
