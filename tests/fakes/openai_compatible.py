"""A fake OpenAI-compatible chat-completions server on 127.0.0.1, answering like OpenAI or like Ollama.

`flavour="openai"` honours `n` and answers errors as `{"error": {"message", "type", "code"}}`;
`flavour="ollama"` ignores `n` and answers errors as `{"error": "..."}`. Both list models at `GET /v1/models`
and take a vision message (an `image_url` part, as an object or, Ollama-style, a bare string). Every
request is checked as the real servers would, and what the bot gets wrong is kept in `violations`.

Answers are made from the request (the style's instructions, a numbered list when several were asked
for), or taken from `answers` when a test scripts them; `fenced` and `preamble` dress them up the way
some models do.
"""

from __future__ import annotations

import base64
import io
import itertools
import re
from typing import Any, Literal

from aiohttp import web
from PIL import Image

from tests.fakes.providers import _JSON_KEY, _Abort, _FakeServer

Flavour = Literal["openai", "ollama"]
DEFAULT_MODEL = "qwen2.5vl:7b"
MAX_SIDE = 1536  # what the bot promises to send at most


def _style_of(system: str) -> str:
    lowered = system.lower()
    for marker, style in (
        ("booru", "tags"),
        ("midjourney", "midjourney"),
        ("stable diffusion", "stable-diffusion"),
        ("short prompt", "short"),
    ):
        if marker in lowered:
            return style
    return "detailed"


_TEXTS = {
    "detailed": "A red fox sitting in fresh snow at dawn, soft golden light, shallow depth of field, "
    "wildlife photography, 85mm lens, muted blue shadows, crisp detail in the fur",
    "short": "A red fox in snow at dawn, golden light",
    "tags": "fox, animal, red_fur, snow, winter, outdoors, dawn, golden_light, no_humans, realistic",
    "midjourney": "red fox in fresh snow, dawn, golden hour light, wildlife photography, soft bokeh",
    "stable-diffusion": "Positive: red fox, snow, dawn, golden light, wildlife photo, detailed fur, 85mm\n"
    "Negative: blurry, lowres, watermark, text, extra limbs",
}


class FakeOpenAICompatible(_FakeServer):
    """Fake `POST /v1/chat/completions` and `GET /v1/models` of an OpenAI-compatible server."""

    def __init__(
        self,
        *,
        flavour: Flavour = "openai",
        api_key: str | None = None,
        models: tuple[str, ...] = (DEFAULT_MODEL,),
        delay: float = 0.0,
        record_bodies: bool = True,
    ) -> None:
        super().__init__(delay=delay, record_bodies=record_bodies)
        self.flavour = flavour
        self.api_key = api_key
        self.models = models
        # Scripted answers, taken in order (one per choice); when empty, answers are made from the request.
        self.answers: list[str] = []
        self.fenced = False  # wrap every answer in a ```text code block
        self.preamble = ""  # put this line before every answer, e.g. "Here is a prompt:"
        self.blind = False  # the model cannot see: 400 on any image
        self.html = False  # answer 200 with a web page, as a wrong address would
        self.violations: list[str] = []
        self._counter = itertools.count(1)

    @property
    def base_url(self) -> str:
        """Return the address the bot is configured with (OpenAI-compatible addresses end in /v1)."""
        return super().base_url + "/v1"

    def completions(self) -> list[Any]:
        return self._select("POST", "/v1/chat/completions")

    def _add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)

    def _error(self, status: int, message: str, code: str = "invalid_request_error") -> _Abort:
        if self.flavour == "ollama":
            return _Abort(web.json_response({"error": message}, status=status))
        body = {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}}
        return _Abort(web.json_response(body, status=status))

    def _error_body(self, status: int) -> dict[str, Any]:
        messages = {429: "Rate limit reached", 503: "The server is overloaded", 500: "Internal error"}
        message = messages.get(status, "error")
        if self.flavour == "ollama":
            return {"error": message}
        return {"error": {"message": message, "type": "server_error", "param": None, "code": None}}

    def _check_key(self, request: web.Request) -> None:
        given = request.headers.get("Authorization")
        if self.api_key is None:
            if given is not None:
                self.violations.append("an Authorization header was sent with no key configured")
            return
        if given != f"Bearer {self.api_key}":
            raise self._error(401, "Incorrect API key provided", code="invalid_api_key")

    async def _models(self, request: web.Request) -> web.Response:
        self._check_key(request)
        return web.json_response(
            {"object": "list", "data": [{"id": m, "object": "model"} for m in self.models]}
        )

    async def _chat(self, request: web.Request) -> web.Response:
        self._check_key(request)
        if self.html:
            return web.Response(
                text="<!doctype html><html><body>Welcome</body></html>", content_type="text/html"
            )
        body = request[_JSON_KEY]
        if not isinstance(body, dict):
            raise self._error(400, "request body must be JSON")
        model = body.get("model")
        if model not in self.models:
            if self.flavour == "ollama":
                raise self._error(404, f'model "{model}" not found, try pulling it first')
            raise self._error(
                404, f"The model `{model}` does not exist or you do not have access to it.", "model_not_found"
            )
        system, text, image = self._read_messages(body.get("messages"))
        if self.blind and image is not None:
            raise self._error(400, "this model does not support image input (vision)")
        n = body.get("n", 1) if self.flavour == "openai" else 1
        if not isinstance(n, int) or not 1 <= n <= 8:
            raise self._error(400, "n must be an integer from 1 to 8")
        asked = re.search(r"Give (\d) different prompts", text)
        contents = [
            self._answer(system, int(asked.group(1)) if asked else 1, i if n > 1 else 0) for i in range(n)
        ]
        choices = [
            {"index": i, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
            for i, content in enumerate(contents)
        ]
        answer: dict[str, Any] = {
            "id": f"chatcmpl-{next(self._counter)}",
            "object": "chat.completion",
            "model": model,
            "choices": choices,
        }
        if self.flavour == "openai":
            answer["usage"] = {"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150}
        return web.json_response(answer)

    def _read_messages(self, messages: Any) -> tuple[str, str, tuple[int, int] | None]:
        """Return the system text, the user text and the image's size; keep what breaks the contract."""
        if not isinstance(messages, list) or not messages:
            raise self._error(400, "messages must be a non-empty list")
        system = next((m.get("content", "") for m in messages if m.get("role") == "system"), "")
        user = next((m for m in messages if m.get("role") == "user"), None)
        if user is None or not isinstance(user.get("content"), list):
            raise self._error(400, "the user message must be a list of content parts")
        text = " ".join(part.get("text", "") for part in user["content"] if part.get("type") == "text")
        image = None
        for part in user["content"]:
            if part.get("type") != "image_url":
                continue
            url = part.get("image_url")
            url = url.get("url") if isinstance(url, dict) else url  # Ollama accepts a bare string too
            image = self._decode(url)
        if image is None:
            self.violations.append("no image_url part in the user message")
        return system, text, image

    def _decode(self, url: Any) -> tuple[int, int] | None:
        match = re.fullmatch(r"data:(image/[a-z]+);base64,(.+)", url or "", flags=re.DOTALL)
        if not match:
            self.violations.append("the image is not a data URI")
            raise self._error(400, "image_url must be a data URI or an http(s) URL")
        data = base64.b64decode(match.group(2))
        with Image.open(io.BytesIO(data)) as img:
            size = img.size
            info = {
                "valid": True,
                "width": size[0],
                "height": size[1],
                "format": img.format,
                "mime": match.group(1),
            }
        self.received_images.append(info)
        if max(size) > MAX_SIDE:
            self.violations.append(f"the image is {size[0]}x{size[1]}, larger than {MAX_SIDE} px")
        return size

    def _answer(self, system: str, several: int, choice: int) -> str:
        if self.answers:
            text = self.answers.pop(0)
        else:
            style = _style_of(system)
            if several > 1:
                text = "\n".join(f"{i}. {_vary(_TEXTS[style], i - 1)}" for i in range(1, several + 1))
            else:
                # Several choices of one request differ, as a model's do at a temperature above zero.
                text = _vary(_TEXTS[style], choice)
        if self.fenced:
            text = f"```text\n{text}\n```"
        if self.preamble:
            text = f"{self.preamble}\n{text}"
        return text


_VARIANTS = ("", ", from a low angle", ", with falling snowflakes", ", in a painterly style", ", at dusk")


def _vary(text: str, variant: int) -> str:
    """Return the text with its first line told apart (the negative prompt of a second line stays)."""
    first, _, rest = text.partition("\n")
    return f"{first}{_VARIANTS[variant % len(_VARIANTS)]}" + (f"\n{rest}" if rest else "")
