"""Any OpenAI-compatible vision model (Ollama, vLLM, LM Studio, llama.cpp, OpenRouter, OpenAI): describe in styles.

Synchronous: one chat completion, one answer. Several suggestions use `n` where the server honours it;
a server that ignores `n` (Ollama) is asked, from then on, for a numbered list in one answer.
"""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import re
import uuid

import aiohttp
from PIL import Image
from pydantic import BaseModel, Field, HttpUrl, SecretStr, ValidationError
from pydantic_settings import SettingsConfigDict

from bot.domain.errors import ProviderError
from bot.domain.ports import Provider
from bot.domain.tasks import (
    DescribeRequest,
    DescribeStyle,
    Fault,
    ImageBytes,
    ImageLimits,
    ProviderStatus,
    TaskSnapshot,
)
from bot.providers import describe_styles
from bot.providers.http import MisconfigurationLog, RetryPolicy, request_json
from bot.providers.spec import BuildContext, ProviderSettings, ProviderSpec

log = logging.getLogger(__name__)

NAME = "openai"
# Tokens per prompt asked for; a numbered list of several gets this many per item.
_MAX_TOKENS = 400
_MAX_SUGGESTIONS = 4
_IMAGE_WORDS = re.compile(r"image|vision|multimodal|multi-modal|image_url", re.IGNORECASE)
_POLICY_WORDS = re.compile(r"content[_ ]policy|safety|moderation", re.IGNORECASE)


class OpenAISettings(ProviderSettings):
    model_config = SettingsConfigDict(env_prefix="OPENAI_")

    base_url: HttpUrl | None = Field(
        None,
        description="enables the `openai` provider: any OpenAI-compatible chat-completions server with a vision "
        "model (Ollama `http://localhost:11434/v1`, vLLM, LM Studio, llama.cpp server, OpenRouter, OpenAI)",
    )
    api_key: SecretStr | None = Field(
        None, description="sent as a Bearer token when set (local servers need none)"
    )
    model: str | None = Field(
        None, description="the vision model, e.g. `qwen2.5vl:7b` (required with OPENAI_BASE_URL)"
    )
    provider_label: str = Field(
        "OpenAI-compatible", description="the name members see for this provider, e.g. `Ollama`"
    )
    timeout_seconds: float = Field(
        300.0,
        gt=0,
        description="how long one answer of the model may take (a model on a CPU can take minutes)",
    )

    @property
    def configured(self) -> bool:
        return self.base_url is not None

    def problems(self) -> list[str]:
        if self.base_url is not None and not (self.model or "").strip():
            return ["OPENAI_MODEL is required with OPENAI_BASE_URL: name the vision model, e.g. qwen2.5vl:7b"]
        return []


class _Message(BaseModel):
    content: str | None = None


class _Choice(BaseModel):
    message: _Message


class _ChatAnswer(BaseModel):
    choices: list[_Choice]


class _ModelEntry(BaseModel):
    id: str


class _ModelList(BaseModel):
    data: list[_ModelEntry]


def image_size(image: ImageBytes) -> tuple[int, int]:
    """Return an image's width and height, read from its header."""
    with Image.open(io.BytesIO(image.data)) as opened:
        return opened.size


class OpenAICompatibleAdapter:
    """Speaks OpenAI's chat completions with an image: a describer in every style, and a live check."""

    # Vision models resize to well under this anyway; it keeps requests small.
    image_limits = ImageLimits(max_side=1536, max_bytes=4_000_000)

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        base_url: str,
        model: str,
        api_key: str | None = None,
        request_timeout: float = 300.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        self._session = session
        self._base = base_url.rstrip("/")
        self._model = model
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._timeout = request_timeout
        self._retry = retry or RetryPolicy()
        self._admin_log = MisconfigurationLog()
        # Learnt from the first answer that came with fewer choices than `n` asked for.
        self._ignores_n = False

    async def describe(
        self, image: ImageBytes, request: DescribeRequest, *, webhook_url: str | None
    ) -> TaskSnapshot:
        size = await asyncio.to_thread(image_size, image)
        answers = await self._answers(image, request)
        found = [describe_styles.suggestion(request.style, answer, size=size) for answer in answers]
        # Fewer than asked is shown as what came: never padded, never repeated.
        unique = list(dict.fromkeys(s for s in found if s is not None))[: request.count]
        if not unique:
            raise ProviderError(NAME, Fault.BAD_RESULT, "the answer had no usable prompt")
        return TaskSnapshot(
            task_id=f"openai-{uuid.uuid4().hex}", status=ProviderStatus.COMPLETED, suggestions=tuple(unique)
        )

    async def _answers(self, image: ImageBytes, request: DescribeRequest) -> list[str]:
        if request.count == 1:
            return await self._ask(image, request.style, n=1)
        if not self._ignores_n:
            answers = await self._ask(image, request.style, n=request.count)
            if len(answers) >= request.count:
                return answers
            self._ignores_n = True
            log.info(
                "%s ignores n (asked %d, got %d): asking for numbered lists from now on",
                NAME,
                request.count,
                len(answers),
            )
        (answer,) = await self._ask(image, request.style, n=1, several=request.count) or [""]
        # A model that did not number its list gave one prompt: take it as that.
        return describe_styles.numbered_items(answer) or [answer]

    async def _ask(
        self, image: ImageBytes, style: DescribeStyle, *, n: int, several: int | None = None
    ) -> list[str]:
        """Send one chat completion with the image; return the non-empty answers."""
        encoded = base64.b64encode(image.data).decode("ascii")
        text = describe_styles.USER_TEXT if several is None else describe_styles.several(several)
        body: dict[str, object] = {
            "model": self._model,
            "messages": [
                {"role": "system", "content": describe_styles.INSTRUCTIONS[style]},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": text},
                        {"type": "image_url", "image_url": {"url": f"data:{image.mime};base64,{encoded}"}},
                    ],
                },
            ],
            "max_tokens": _MAX_TOKENS * (several or 1),
            # Different suggestions need room to differ; one prompt is better steady.
            "temperature": 0.9 if (n > 1 or several) else 0.4,
        }
        if n > 1:
            body["n"] = n
        try:
            answer = await request_json(
                self._session,
                NAME,
                "POST",
                f"{self._base}/chat/completions",
                headers=self._headers,
                key_log=self._admin_log,
                body=body,
                timeout=self._timeout,
                retry=self._retry,
                timeout_fault=Fault.TIMEOUT,
            )
        except ProviderError as exc:
            raise self._explained(exc) from None
        try:
            choices = _ChatAnswer.model_validate(answer).choices
        except ValidationError:
            raise self._explained(
                ProviderError(NAME, Fault.INCOMPATIBLE, "the answer is not a chat completion")
            ) from None
        return [
            choice.message.content
            for choice in choices
            if choice.message.content and choice.message.content.strip()
        ]

    def _explained(self, exc: ProviderError) -> ProviderError:
        """Name what an error means for this kind of server, and tell the admin which setting to fix."""
        detail = exc.detail
        fault = exc.fault
        if fault is Fault.NOT_FOUND:
            fault = Fault.MODEL_NOT_FOUND if "model" in detail.lower() else Fault.INCOMPATIBLE
        elif fault is Fault.REJECTED and not _POLICY_WORDS.search(detail):
            # A refusal that is not about the content is about the request: the model cannot see, or
            # the server speaks another API.
            fault = Fault.MODEL_BLIND if _IMAGE_WORDS.search(detail) else Fault.INCOMPATIBLE
        elif fault is Fault.BAD_RESULT and "not JSON" in detail:
            fault = Fault.INCOMPATIBLE
        if fault is Fault.MODEL_NOT_FOUND:
            self._admin_log.say(
                NAME,
                fault.value,
                f"{NAME}: the server has no model {self._model!r} (OPENAI_MODEL): pull it (e.g. `ollama pull "
                f"{self._model}`) or set OPENAI_MODEL to one it has ({detail or 'no detail'})",
            )
        elif fault is Fault.MODEL_BLIND:
            self._admin_log.say(
                NAME,
                fault.value,
                f"{NAME}: the model {self._model!r} (OPENAI_MODEL) cannot read images: choose a vision model "
                f"such as qwen2.5vl:7b ({detail or 'no detail'})",
            )
        elif fault is Fault.INCOMPATIBLE:
            self._admin_log.say(
                NAME,
                fault.value,
                f"{NAME}: {self._base} (OPENAI_BASE_URL) does not answer like an OpenAI-compatible server "
                f"({detail or 'no detail'}): such addresses usually end in /v1",
            )
        if fault is exc.fault:
            return exc
        return ProviderError(NAME, fault, detail, status=exc.status, retry_after=exc.retry_after)

    async def check_key(self) -> None:
        """Ask for the server's models (free): the key works, and the model is there."""
        try:
            answer = await request_json(
                self._session,
                NAME,
                "GET",
                f"{self._base}/models",
                headers=self._headers,
                key_log=self._admin_log,
                timeout=min(self._timeout, 30.0),
            )
        except ProviderError as exc:
            raise self._explained(exc) from None
        try:
            listed = [entry.id for entry in _ModelList.model_validate(answer).data]
        except ValidationError:
            raise ProviderError(NAME, Fault.INCOMPATIBLE, "GET /models is not a model list") from None
        if self._model not in listed:
            shown = ", ".join(listed[:10]) + (", ..." if len(listed) > 10 else "")
            raise ProviderError(NAME, Fault.MODEL_NOT_FOUND, f"it lists: {shown or 'no models'}")


def build(settings: OpenAISettings, context: BuildContext) -> Provider:
    assert settings.base_url is not None
    assert settings.model is not None
    adapter = OpenAICompatibleAdapter(
        context.session,
        base_url=str(settings.base_url),
        model=settings.model.strip(),
        api_key=settings.api_key.get_secret_value() if settings.api_key else None,
        request_timeout=settings.timeout_seconds,
    )
    return Provider(
        name=NAME,
        image_limits=adapter.image_limits,
        key_checker=adapter,
        describer=adapter,
        describe_styles=frozenset(DescribeStyle),
        max_suggestions=_MAX_SUGGESTIONS,
        cache_scope=settings.model.strip(),
    )


def _live_check_summary(settings: OpenAISettings) -> str:
    key = " and accepted OPENAI_API_KEY" if settings.api_key else ""
    return f"answered at OPENAI_BASE_URL{key} and lists OPENAI_MODEL {settings.model}"


SPEC = ProviderSpec(
    name=NAME,
    title="OpenAI-compatible",
    settings=OpenAISettings,
    enabled_by="OPENAI_BASE_URL",
    key_setting="OPENAI_API_KEY",
    address_setting="OPENAI_BASE_URL",
    model_setting="OPENAI_MODEL",
    build=build,
    label=lambda settings: settings.provider_label,
    live_check_summary=_live_check_summary,
)
