"""Fake Freepik and Novita HTTP APIs on 127.0.0.1 that record requests and inject faults.

Both fakes answer with the real services' status codes and body shapes (see "What the providers
speak" in docs/architecture.md), keep every request in ``requests`` and every image they could
decode in ``received_images``, and take faults through ``fail_next`` and ``hang_next``.
They are built for end-to-end tests and for a benchmark of hundreds of simultaneous tasks, so a
request costs a dict lookup and no sleep unless ``delay`` asks for one.

Configuration attributes are read when they take effect, so a test may change them between
requests: ``outcome`` and ``prompt_text`` when a task finishes, ``polls_per_state`` and
``seconds_per_state`` whenever a task is looked at.

The fake Freepik has a "limits" mode (``limits=FREEPIK_LIMITS``, or any ``RateLimit``s): like the real
service it then answers 429 to a request that would make more than N requests arrive within any window of
S seconds (every request to the API counts, those refused too; result downloads do not).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import bisect
import contextlib
import functools
import hashlib
import hmac
import io
import json
import logging
import time
import uuid
import warnings
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, Literal, Self
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from PIL import Image, UnidentifiedImageError

log = logging.getLogger(__name__)

CREATED: Final = "CREATED"
IN_PROGRESS: Final = "IN_PROGRESS"
COMPLETED: Final = "COMPLETED"
FAILED: Final = "FAILED"
FINAL_STATUSES: Final = frozenset({COMPLETED, FAILED})

IMAGE_TO_PROMPT: Final = "image-to-prompt"
GEMINI: Final = "gemini-2-5-flash-image-preview"
FREEPIK_KINDS: Final = (IMAGE_TO_PROMPT, GEMINI)

DEFAULT_FREEPIK_KEY: Final = "test-freepik-key"
DEFAULT_NOVITA_KEY: Final = "test-novita-key"
DEFAULT_PROMPT_TEXT: Final = (
    "a red fox sitting in fresh snow at dawn, soft light, highly detailed, 35mm photo"
)
# Standard Webhooks form: "whsec_" + base64 of the key bytes.
DEFAULT_WEBHOOK_SECRET: Final = "whsec_" + base64.b64encode(b"fake-freepik-webhook-signing-key!").decode()

# Real uploads are up to 30 MB decoded, about 40 MB as base64 JSON; aiohttp's default is 1 MiB.
_MAX_REQUEST_BYTES: Final = 64 * 1024 * 1024
# Short, because hanging handlers are woken before shutdown and nothing else should linger.
_SHUTDOWN_TIMEOUT: Final = 1.0
_SENSITIVE_MARKERS: Final = ("authorization", "cookie", "api-key", "apikey", "token", "secret")

# aiohttp 3.14 warns about plain string keys in request storage; older releases lack RequestKey.
_JSON_KEY: Any = (
    web.RequestKey("fake_provider_json", object) if hasattr(web, "RequestKey") else "fake_provider_json"
)

WebhookSecretMode = Literal["decoded", "raw"]


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most ``requests`` arriving in any window of ``seconds``."""

    requests: int
    seconds: float


# Freepik's documented limits: 50 requests/s burst over 5 s, 10 requests/s averaged over 2 minutes (per IP).
FREEPIK_LIMITS: Final = (RateLimit(250, 5.0), RateLimit(1200, 120.0))
Outcome = Literal["COMPLETED", "FAILED"]


@functools.cache
def default_result_png() -> bytes:
    """Return a small valid PNG (64x48, solid colour) to serve as a generated image."""
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (220, 90, 40)).save(buffer, format="PNG")
    return buffer.getvalue()


def webhook_key(secret: str, mode: WebhookSecretMode = "decoded") -> bytes:
    """Return the HMAC key a Standard Webhooks secret stands for in the given mode."""
    if mode == "raw":
        return secret.encode("utf-8")
    return base64.b64decode(secret.removeprefix("whsec_"))


def sign_webhook(
    secret: str, webhook_id: str, timestamp: str, body: bytes, mode: WebhookSecretMode = "decoded"
) -> str:
    """Return the ``webhook-signature`` header value for one delivery."""
    signed = b"%s.%s.%s" % (webhook_id.encode(), timestamp.encode(), body)
    digest = hmac.new(webhook_key(secret, mode), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def _is_sensitive(header: str) -> bool:
    """Tell whether a header carries a credential and must not be shown."""
    name = header.lower()
    return any(marker in name for marker in _SENSITIVE_MARKERS)


@dataclass(repr=False, slots=True)
class RecordedRequest:
    """One request as the fake received it; header names are lower-cased."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    json: Any
    raw: bytes
    at: float
    status: int | None = None

    def masked_headers(self) -> dict[str, str]:
        """Return the headers with credentials replaced by ``***``."""
        return {name: "***" if _is_sensitive(name) else value for name, value in self.headers.items()}

    def __repr__(self) -> str:
        """Show the request without credentials or megabytes of base64."""
        body = sorted(self.json) if isinstance(self.json, dict) else type(self.json).__name__
        return (
            f"RecordedRequest({self.method} {self.path} query={self.query!r} status={self.status} "
            f"headers={self.masked_headers()!r} json_keys={body!r} raw=<{len(self.raw)} bytes>)"
        )


@dataclass(slots=True)
class FakeTask:
    """One Freepik task as the fake tracks it."""

    task_id: str
    kind: str
    status: str
    created_at: float
    request: dict[str, Any]
    webhook_url: str | None
    polls: int = 0
    generated: list[str] = field(default_factory=list)

    def snapshot(self) -> dict[str, Any]:
        """Return the task object the API answers (inside ``data``) and webhooks send."""
        return {"task_id": self.task_id, "status": self.status, "generated": list(self.generated)}


@dataclass(slots=True)
class WebhookDelivery:
    """One webhook POST the fake made, and how the receiver answered it."""

    task_id: str
    status: str
    url: str
    webhook_id: str
    timestamp: str
    signature: str
    body: bytes
    at: float
    answered: int | None = None
    error: str | None = None


@dataclass(slots=True)
class _Fault:
    """A queued fault: answer ``status`` (or hang) for the next ``times`` matching requests."""

    method: str
    path_prefix: str
    times: int
    status: int | None = None
    body: dict[str, Any] | str | None = None
    headers: dict[str, str] | None = None

    def matches(self, method: str, path: str) -> bool:
        """Tell whether this fault applies to a request."""
        return self.method in ("*", method) and path.startswith(self.path_prefix)


class _Abort(Exception):
    """Stop handling a request and answer with the response it carries."""

    def __init__(self, response: web.StreamResponse) -> None:
        super().__init__(response.status)
        self.response = response


def _describe_image(
    data: bytes | None, source: str, field_name: str, url: str | None = None
) -> dict[str, Any]:
    """Return what an upload is (size, format, EXIF) without decoding its pixels.

    Keys: field, source ("base64", "data-uri" or "url"), url, bytes, width, height, format,
    has_exif, valid (None for a URL, which the fake does not fetch).
    """
    info: dict[str, Any] = {
        "field": field_name,
        "source": source,
        "url": url,
        "bytes": 0 if data is None else len(data),
        "width": None,
        "height": None,
        "format": None,
        "has_exif": False,
        "valid": None if data is None and url is not None else False,
    }
    if data is None:
        return info
    try:
        # Image.open reads only the header; a bomb-sized header must count as refused, not crash.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                info.update(
                    width=image.width,
                    height=image.height,
                    format=image.format,
                    has_exif=bool(image.info.get("exif")) or bool(image.getexif()),
                    valid=True,
                )
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError):
        pass
    return info


def _decode_base64(text: str) -> bytes | None:
    """Decode standard base64 (line breaks allowed) or return None."""
    try:
        return base64.b64decode(text.replace("\n", "").replace("\r", ""), validate=True)
    except (binascii.Error, ValueError):
        return None


def _is_http_url(value: str) -> bool:
    """Tell whether a string is an absolute http(s) URL."""
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


class _FakeServer:
    """Shared plumbing: the aiohttp server, request recording, faults, delay and clean shutdown."""

    def __init__(self, *, delay: float, record_bodies: bool) -> None:
        self.delay = delay
        # While set to an unset Event, answers wait for it: a test decides when a slow answer comes.
        self.hold: asyncio.Event | None = None
        # The benchmark can turn this off so 500 base64 images are not all kept in memory.
        self.record_bodies = record_bodies
        self.requests: list[RecordedRequest] = []
        self.received_images: list[dict[str, Any]] = []
        self._faults: list[_Fault] = []
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._background: set[asyncio.Task[Any]] = set()

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """Return ``http://127.0.0.1:PORT`` of the running fake."""
        if self._port is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return f"http://127.0.0.1:{self._port}"

    async def start(self) -> None:
        """Bind to a free port on 127.0.0.1 and start serving."""
        if self._runner is not None:
            return
        self._closing = asyncio.Event()
        app = web.Application(middlewares=[self._middleware], client_max_size=_MAX_REQUEST_BYTES)
        self._add_routes(app)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=_SHUTDOWN_TIMEOUT)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self._runner = runner
        self._port = runner.addresses[0][1]
        await self._on_start()

    async def close(self) -> None:
        """Wake hanging requests, stop background work and shut the server down."""
        if self._runner is None:
            return
        self._closing.set()
        tasks = list(self._background)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._on_close()
        await self._runner.cleanup()
        self._runner = None
        self._port = None

    async def __aenter__(self) -> Self:
        """Start the fake."""
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the fake."""
        await self.close()

    # -- test-facing API -------------------------------------------------------------------------

    # Positional to match how tests read: fail_next("POST", "/v1/ai", 429, {...}).
    def fail_next(
        self,
        method: str,
        path_prefix: str,
        status: int,
        body: dict[str, Any] | str | None = None,
        headers: dict[str, str] | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` matching requests with ``status`` (``method`` may be ``*``)."""
        self._faults.append(_Fault(method.upper(), path_prefix, times, status, body, headers))

    def hang_next(self, method: str, path_prefix: str, times: int = 1) -> None:
        """Accept the next ``times`` matching requests and never answer them."""
        self._faults.append(_Fault(method.upper(), path_prefix, times))

    def clear_faults(self) -> None:
        """Drop every queued fault."""
        self._faults.clear()

    def count(self, method: str | None = None, path_prefix: str | None = None) -> int:
        """Count recorded requests by method and path prefix."""
        return len(self._select(method, path_prefix))

    def reset(self) -> None:
        """Forget recorded requests, images and faults (state such as tasks is kept)."""
        self.requests.clear()
        self.received_images.clear()
        self._faults.clear()

    # -- hooks for subclasses --------------------------------------------------------------------

    def _add_routes(self, app: web.Application) -> None:
        """Register the provider's routes."""
        raise NotImplementedError

    def _error_body(self, status: int) -> dict[str, Any]:
        """Return the provider's error body for a fault injected without one."""
        raise NotImplementedError

    def _refuse(self, request: web.Request, at: float) -> web.Response | None:
        """Return the answer to a request the provider refuses before looking at it (rate limits)."""
        return None

    async def _on_start(self) -> None:
        """Start provider-specific background work."""

    async def _on_close(self) -> None:
        """Release provider-specific resources."""

    # -- internals -------------------------------------------------------------------------------

    def _select(self, method: str | None, path_prefix: str | None) -> list[RecordedRequest]:
        """Return recorded requests matching a method and path prefix."""
        wanted = method.upper() if method else None
        return [
            r
            for r in self.requests
            if (wanted is None or r.method == wanted)
            and (path_prefix is None or r.path.startswith(path_prefix))
        ]

    def _take_fault(self, method: str, path: str) -> _Fault | None:
        """Pop one use of the first fault matching a request."""
        for index, fault in enumerate(self._faults):
            if fault.matches(method, path):
                fault.times -= 1
                if fault.times <= 0:
                    del self._faults[index]
                return fault
        return None

    def _spawn(self, coro: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        """Run a tracked background task whose failure is logged and which close() cancels."""
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        task.set_name(name)
        self._background.add(task)
        task.add_done_callback(self._background_done)
        return task

    def _background_done(self, task: asyncio.Task[Any]) -> None:
        """Forget a finished background task and log its failure."""
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("fake background task %s failed", task.get_name(), exc_info=task.exception())

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but return early when the fake is closing."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), timeout=seconds)

    def _fault_response(self, fault: _Fault) -> web.Response:
        """Build the answer for an injected failure."""
        status = fault.status or 500
        headers = fault.headers or {}
        if isinstance(fault.body, str):
            return web.Response(status=status, text=fault.body, headers=headers)
        body = fault.body if fault.body is not None else self._error_body(status)
        return web.json_response(body, status=status, headers=headers)

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Record the request, apply faults and delay, then dispatch it."""
        raw = await request.read()
        parsed: Any = None
        if raw:
            with contextlib.suppress(ValueError):
                parsed = json.loads(raw)
        record = RecordedRequest(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers={name.lower(): value for name, value in request.headers.items()},
            json=parsed,
            raw=raw if self.record_bodies else b"",
            at=time.monotonic(),
        )
        self.requests.append(record)
        # Handlers read the parsed body from here rather than parse 40 MB of JSON twice.
        request[_JSON_KEY] = parsed

        refusal = self._refuse(request, record.at)
        if refusal is not None:
            record.status = refusal.status
            return refusal
        fault = self._take_fault(request.method, request.path)
        if fault is not None and fault.status is None:
            await self._closing.wait()
            # Drop the connection so a client still waiting sees a disconnect, never an answer.
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=503)
        if self.delay > 0:
            await self._sleep(self.delay)
        if self.hold is not None:
            await self.hold.wait()
        if fault is not None:
            response: web.StreamResponse = self._fault_response(fault)
        else:
            try:
                response = await handler(request)
            except _Abort as abort:
                response = abort.response
            except web.HTTPException as exc:
                record.status = exc.status
                raise
        record.status = response.status
        if not self.record_bodies:
            record.json = None
        return response


# ------------------------------------------------------------------------------------------------
# Freepik
# ------------------------------------------------------------------------------------------------


class FakeFreepik(_FakeServer):
    """Fake Freepik task API: image-to-prompt, Gemini 2.5 Flash image tasks, webhooks, result files.

    Webhooks are sent on status changes only, like the real provider: one delivery for
    IN_PROGRESS and one for the final status (COMPLETED or FAILED), never for CREATED (the
    create answer already carries that). A change that skips a state (a slow poll in time mode)
    still sends each crossed state, in order. Deliveries of one task are serialised; different
    tasks deliver concurrently.
    """

    def __init__(
        self,
        api_key: str = DEFAULT_FREEPIK_KEY,
        *,
        api_key_header: str = "x-freepik-api-key",
        polls_per_state: int = 1,
        seconds_per_state: float | None = None,
        outcome: Outcome = "COMPLETED",
        prompt_text: str = DEFAULT_PROMPT_TEXT,
        webhook_secret: str = DEFAULT_WEBHOOK_SECRET,
        webhook_secret_mode: WebhookSecretMode = "decoded",
        deliver_webhooks: bool = True,
        delay: float = 0.0,
        ticker_interval: float = 0.02,
        record_bodies: bool = True,
        limits: Sequence[RateLimit] = (),
    ) -> None:
        super().__init__(delay=delay, record_bodies=record_bodies)
        # Limits mode: a request past any of these is answered 429 (empty: no limits).
        self.limits: tuple[RateLimit, ...] = tuple(limits)
        self.refused: list[RecordedRequest] = []  # the 429s the limits gave
        self._arrivals: list[float] = []  # API requests, in order, when limits are on
        self.api_key = api_key
        self.api_key_header = api_key_header
        # Poll mode: each state answers polls_per_state times, counting the create answer as one.
        self.polls_per_state = polls_per_state
        # Time mode (when set): each state lasts this many seconds from creation.
        self.seconds_per_state = seconds_per_state
        self.outcome: Outcome = outcome
        self.prompt_text = prompt_text
        # Fail here, not later inside a background delivery, when the secret is not valid base64.
        webhook_key(webhook_secret, webhook_secret_mode)
        self.webhook_secret = webhook_secret
        self.webhook_secret_mode: WebhookSecretMode = webhook_secret_mode
        self.deliver_webhooks = deliver_webhooks
        self.ticker_interval = ticker_interval
        self.result_image: bytes = default_result_png()
        self.result_content_type = "image/png"
        self.result_status = 200
        self.tasks: dict[str, FakeTask] = {}
        self.deliveries: list[WebhookDelivery] = []
        # At each create: how many tasks the bot has running here, the new one included (created, and
        # their end not yet told to the bot by a poll or a delivery). The bot's own count is never lower.
        self.running_at_create: list[int] = []
        self._ends_told: set[str] = set()
        self._by_kind: dict[str, dict[str, FakeTask]] = {kind: {} for kind in FREEPIK_KINDS}
        # Unfinished tasks with a webhook: the only ones the ticker must look at.
        self._watched: dict[str, FakeTask] = {}
        self._delivery_chain: dict[str, asyncio.Task[Any]] = {}
        self._session: aiohttp.ClientSession | None = None

    # -- test-facing helpers ---------------------------------------------------------------------

    def creates(self, kind: str | None = None) -> list[RecordedRequest]:
        """Return the recorded task-creating POSTs (of one kind, or all)."""
        paths = {f"/v1/ai/{k}" for k in ((kind,) if kind else FREEPIK_KINDS)}
        return [r for r in self.requests if r.method == "POST" and r.path in paths]

    def polls(self, kind: str | None = None) -> list[RecordedRequest]:
        """Return the recorded task-status GETs (of one kind, or all)."""
        prefixes = tuple(f"/v1/ai/{k}/" for k in ((kind,) if kind else FREEPIK_KINDS))
        return [r for r in self.requests if r.method == "GET" and r.path.startswith(prefixes)]

    def result_url(self, task_id: str) -> str:
        """Return the URL a completed Gemini task points at."""
        return f"{self.base_url}/files/{task_id}.png"

    async def deliver(
        self,
        task_id: str,
        *,
        status: str | None = None,
        secret: str | None = None,
        timestamp: int | str | None = None,
        webhook_id: str | None = None,
        body_override: bytes | str | dict[str, Any] | None = None,
        signature: str | None = None,
        url: str | None = None,
        secret_mode: WebhookSecretMode | None = None,
    ) -> int:
        """Send one webhook for a task now and return the HTTP status the receiver answered."""
        task = self.tasks[task_id]
        target = url or task.webhook_url
        if target is None:
            raise ValueError(f"task {task_id} has no webhook_url; pass url=")
        if body_override is None:
            payload = task.snapshot()
            if status is not None:
                payload.update(status=status, generated=self._generated_for(task, status))
            body = self._encode(payload)
        elif isinstance(body_override, dict):
            body = self._encode(body_override)
        elif isinstance(body_override, str):
            body = body_override.encode()
        else:
            body = body_override
        delivery = await self._post_webhook(
            task,
            target,
            body,
            status=status or task.status,
            secret=secret,
            timestamp=timestamp,
            webhook_id=webhook_id,
            signature=signature,
            secret_mode=secret_mode,
        )
        if delivery.answered is None:
            raise ConnectionError(f"webhook delivery to {target} failed: {delivery.error}")
        return delivery.answered

    async def wait_deliveries(self) -> None:
        """Wait until every scheduled webhook delivery has been made."""
        while pending := [t for t in self._delivery_chain.values() if not t.done()]:
            await asyncio.gather(*pending, return_exceptions=True)

    # -- server plumbing -------------------------------------------------------------------------

    def peak(self, seconds: float, since: float = -1.0) -> int:
        """Return the most API requests that arrived within any window of `seconds` (after `since`)."""
        arrivals = [r.at for r in self.requests if r.at > since and r.path.startswith("/v1/")]
        most = 0
        first = 0
        for last, at in enumerate(arrivals):
            while at - arrivals[first] >= seconds:
                first += 1
            most = max(most, last - first + 1)
        return most

    def _refuse(self, request: web.Request, at: float) -> web.Response | None:
        """In limits mode, answer 429 to a request that makes any window hold more than its limit."""
        if not self.limits or not request.path.startswith("/v1/"):
            return None
        self._arrivals.append(at)
        for limit in self.limits:
            inside = len(self._arrivals) - bisect.bisect_right(self._arrivals, at - limit.seconds)
            if inside > limit.requests:
                self.refused.append(self.requests[-1])
                return web.json_response({"message": "Too Many Requests"}, status=429)
        return None

    def _add_routes(self, app: web.Application) -> None:
        """Register the task routes and the result file route."""
        for kind in FREEPIK_KINDS:
            app.router.add_post(f"/v1/ai/{kind}", functools.partial(self._create, kind))
            app.router.add_get(f"/v1/ai/{kind}", functools.partial(self._list, kind))
            app.router.add_get(f"/v1/ai/{kind}/{{task_id}}", functools.partial(self._poll, kind))
        app.router.add_get("/files/{name}", self._file)

    def _error_body(self, status: int) -> dict[str, Any]:
        """Return Freepik's error body for an injected status."""
        messages = {
            400: "Parameter ':attribute' is not valid",
            401: "Invalid API key",
            404: "Not found",
            429: "Too Many Requests",
            500: "Internal Server Error",
            503: "Service Unavailable. Please try again later.",
        }
        return {"message": messages.get(status, "Error")}

    async def _on_start(self) -> None:
        """Open the webhook client and start the time-mode ticker."""
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        self._spawn(self._ticker(), "fake-freepik-ticker")

    async def _on_close(self) -> None:
        """Close the webhook client."""
        self._delivery_chain.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _check_key(self, request: web.Request) -> None:
        """Refuse a request without the right API key, with Freepik's two messages."""
        given = request.headers.get(self.api_key_header)
        if not given:
            raise _Abort(web.json_response({"message": "Missing API key"}, status=401))
        if not hmac.compare_digest(given.encode(), self.api_key.encode()):
            raise _Abort(web.json_response({"message": "Invalid API key"}, status=401))

    @staticmethod
    def _bad_parameter(name: str) -> _Abort:
        """Return the 400 Freepik answers for a bad parameter."""
        return _Abort(web.json_response({"message": f"Parameter '{name}' is not valid"}, status=400))

    async def _create(self, kind: str, request: web.Request) -> web.Response:
        """Create a task after checking the key and the body."""
        self._check_key(request)
        body = request[_JSON_KEY]
        if kind == IMAGE_TO_PROMPT:
            if not isinstance(body, dict) or not isinstance(body.get("image"), str) or not body["image"]:
                raise self._bad_parameter("image")
            self._record_image(body["image"], "image")
        else:
            if not isinstance(body, dict) or not isinstance(body.get("prompt"), str) or not body["prompt"]:
                raise self._bad_parameter("prompt")
            refs = body.get("reference_images", [])
            if not isinstance(refs, list) or len(refs) > 3 or not all(isinstance(r, str) and r for r in refs):
                raise self._bad_parameter("reference_images")
            for index, ref in enumerate(refs):
                self._record_image(ref, f"reference_images[{index}]")
        webhook_url = body.get("webhook_url")
        if webhook_url is not None and not (isinstance(webhook_url, str) and _is_http_url(webhook_url)):
            raise self._bad_parameter("webhook_url")

        task = FakeTask(
            task_id=str(uuid.uuid4()),
            kind=kind,
            status=CREATED,
            created_at=time.monotonic(),
            request=body,
            webhook_url=webhook_url,
        )
        self.tasks[task.task_id] = task
        self._by_kind[kind][task.task_id] = task
        self.running_at_create.append(len(self.tasks) - len(self._ends_told))
        if webhook_url:
            self._watched[task.task_id] = task
        return web.json_response({"data": task.snapshot()})

    async def _list(self, kind: str, request: web.Request) -> web.Response:
        """List the tasks of one kind (the cheap call a key check uses)."""
        self._check_key(request)
        items = []
        for task in self._by_kind[kind].values():
            self._advance(task, polled=False)
            items.append({"task_id": task.task_id, "status": task.status})
        return web.json_response({"data": items})

    async def _poll(self, kind: str, request: web.Request) -> web.Response:
        """Answer a task's status, advancing it by one poll (or by elapsed time)."""
        self._check_key(request)
        task = self._by_kind[kind].get(request.match_info["task_id"])
        if task is None:
            return web.json_response({"message": "Not found"}, status=404)
        self._advance(task, polled=True)
        if task.status in FINAL_STATUSES:
            self._ends_told.add(task.task_id)
        return web.json_response({"data": task.snapshot()})

    async def _file(self, request: web.Request) -> web.Response:
        """Serve the generated image (or the configured failure)."""
        if self.result_status != 200:
            return web.Response(status=self.result_status, text="Not Found")
        return web.Response(body=self.result_image, content_type=self.result_content_type)

    def _record_image(self, value: str, field_name: str) -> None:
        """Decode a base64 or data-URI image into ``received_images``; note URLs as such."""
        if _is_http_url(value):
            self.received_images.append(_describe_image(None, "url", field_name, url=value))
            return
        if value.startswith("data:"):
            header, _, payload = value.partition(",")
            data = _decode_base64(payload) if header.endswith(";base64") else None
            source = "data-uri"
        else:
            data = _decode_base64(value)
            source = "base64"
        self.received_images.append(_describe_image(data, source, field_name))

    # -- task progress ---------------------------------------------------------------------------

    def _generated_for(self, task: FakeTask, status: str) -> list[str]:
        """Return what ``generated`` holds for a task in a status."""
        if status != COMPLETED:
            return []
        if task.kind == IMAGE_TO_PROMPT:
            # The real API puts the prompt TEXT here although its schema says image URL.
            return [self.prompt_text]
        return [self.result_url(task.task_id)]

    def _target_stage(self, task: FakeTask, *, polled: bool) -> int | None:
        """Return the stage (0 created, 1 in progress, 2 final) a task should be at, if known."""
        step = self.seconds_per_state
        if step is not None:
            if step <= 0:
                return 2
            return min(2, int((time.monotonic() - task.created_at) // step))
        if not polled:
            return None
        per_state = self.polls_per_state
        if per_state <= 0:
            return 2
        return min(2, task.polls // per_state)

    def _advance(self, task: FakeTask, *, polled: bool) -> None:
        """Move a task forward to where its mode says it is, sending a webhook per change."""
        if polled:
            task.polls += 1
        if task.status in FINAL_STATUSES:
            return
        target = self._target_stage(task, polled=polled)
        current = 1 if task.status == IN_PROGRESS else 0
        if target is None or target <= current:
            return
        for stage in range(current + 1, target + 1):
            status = IN_PROGRESS if stage == 1 else self.outcome
            task.status = status
            task.generated = self._generated_for(task, status)
            if task.webhook_url and self.deliver_webhooks and self._session is not None:
                self._schedule_delivery(task, self._encode(task.snapshot()), status)
        if task.status in FINAL_STATUSES:
            self._watched.pop(task.task_id, None)

    async def _ticker(self) -> None:
        """Advance time-mode tasks that have a webhook, so deliveries happen without polls."""
        while True:
            await asyncio.sleep(self.ticker_interval)
            if self.seconds_per_state is None or not self._watched:
                continue
            for task in list(self._watched.values()):
                self._advance(task, polled=False)

    # -- webhooks --------------------------------------------------------------------------------

    @staticmethod
    def _encode(payload: dict[str, Any]) -> bytes:
        """Serialise a webhook body compactly (the signature covers these exact bytes)."""
        return json.dumps(payload, separators=(",", ":")).encode()

    def _schedule_delivery(self, task: FakeTask, body: bytes, status: str) -> None:
        """Queue a delivery behind the task's previous one so they arrive in order."""
        previous = self._delivery_chain.get(task.task_id)
        url = task.webhook_url
        assert url is not None

        async def run() -> None:
            if previous is not None:
                # wait() neither raises the previous delivery's error nor cancels it.
                await asyncio.wait([previous])
            await self._post_webhook(task, url, body, status=status)

        self._delivery_chain[task.task_id] = self._spawn(
            run(), f"fake-freepik-webhook-{task.task_id}-{status}"
        )

    async def _post_webhook(
        self,
        task: FakeTask,
        url: str,
        body: bytes,
        *,
        status: str,
        secret: str | None = None,
        timestamp: int | str | None = None,
        webhook_id: str | None = None,
        signature: str | None = None,
        secret_mode: WebhookSecretMode | None = None,
    ) -> WebhookDelivery:
        """POST one signed delivery and record it."""
        if self._session is None:
            raise RuntimeError("FakeFreepik is not started")
        if status in FINAL_STATUSES:
            self._ends_told.add(task.task_id)
        msg_id = webhook_id or f"msg_{uuid.uuid4().hex}"
        stamp = str(int(time.time()) if timestamp is None else timestamp)
        sig = signature or sign_webhook(
            secret if secret is not None else self.webhook_secret,
            msg_id,
            stamp,
            body,
            secret_mode or self.webhook_secret_mode,
        )
        delivery = WebhookDelivery(task.task_id, status, url, msg_id, stamp, sig, body, time.monotonic())
        self.deliveries.append(delivery)
        headers = {
            "content-type": "application/json",
            "webhook-id": msg_id,
            "webhook-timestamp": stamp,
            "webhook-signature": sig,
        }
        try:
            async with self._session.post(url, data=body, headers=headers) as response:
                await response.read()
                delivery.answered = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            delivery.error = repr(exc)
            log.info("fake webhook to %s failed: %r", url, exc)
        return delivery


# ------------------------------------------------------------------------------------------------
# Novita
# ------------------------------------------------------------------------------------------------


class FakeNovita(_FakeServer):
    """Fake Novita ``POST /v3/img2prompt``: synchronous, JSON only, raw base64 images up to 2048 px."""

    def __init__(
        self,
        api_key: str = DEFAULT_NOVITA_KEY,
        *,
        prompt_text: str = DEFAULT_PROMPT_TEXT,
        delay: float = 0.0,
        max_side: int = 2048,
        max_bytes: int = 30_000_000,
        record_bodies: bool = True,
    ) -> None:
        super().__init__(delay=delay, record_bodies=record_bodies)
        self.api_key = api_key
        self.prompt_text = prompt_text
        self.max_side = max_side
        # 30 MB read as decimal megabytes: the stricter reading keeps the bot honest.
        self.max_bytes = max_bytes

    def calls(self) -> list[RecordedRequest]:
        """Return the recorded img2prompt POSTs."""
        return self._select("POST", "/v3/img2prompt")

    def _add_routes(self, app: web.Application) -> None:
        """Register the img2prompt route."""
        app.router.add_post("/v3/img2prompt", self._img2prompt)

    def _error_body(self, status: int) -> dict[str, Any]:
        """Return Novita's error body for an injected status."""
        reasons = {
            400: "INVALID_REQUEST_BODY",
            401: "INVALID_API_KEY",
            403: "FORBIDDEN",
            429: "RATE_LIMIT_EXCEEDED",
            500: "INTERNAL_ERROR",
            503: "SERVICE_UNAVAILABLE",
            504: "GATEWAY_TIMEOUT",
        }
        reason = reasons.get(status, "ERROR")
        return {"code": status, "reason": reason, "message": reason.lower().replace("_", " ")}

    @staticmethod
    def _invalid(message: str) -> _Abort:
        """Return Novita's 400 for a bad request body."""
        body = {"code": 400, "reason": "INVALID_REQUEST_BODY", "message": message}
        return _Abort(web.json_response(body, status=400))

    async def _img2prompt(self, request: web.Request) -> web.Response:
        """Check key, content type and image, then answer the prompt."""
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), self.api_key.encode()
        ):
            body = {"code": 401, "reason": "INVALID_API_KEY", "message": "invalid api key"}
            return web.json_response(body, status=401)
        if request.content_type != "application/json":
            raise self._invalid(f"unsupported content type {request.content_type!r}: only application/json")
        body = request[_JSON_KEY]
        encoded = body.get("image_file") if isinstance(body, dict) else None
        if not isinstance(encoded, str) or not encoded:
            raise self._invalid("image_file is required")
        if encoded.startswith("data:"):
            raise self._invalid("image_file must be raw base64, not a data URI")
        data = _decode_base64(encoded)
        if data is None:
            raise self._invalid("image_file is not valid base64")
        info = _describe_image(data, "base64", "image_file")
        if not info["valid"]:
            raise self._invalid("image_file is not a supported image")
        self.received_images.append(info)
        if len(data) > self.max_bytes:
            raise self._invalid(f"image is larger than {self.max_bytes} bytes")
        if info["width"] > self.max_side or info["height"] > self.max_side:
            raise self._invalid(f"image resolution exceeds {self.max_side}x{self.max_side}")
        return web.json_response({"prompt": self.prompt_text})
