"""Receive signed task-status webhooks (Standard Webhooks scheme) and serve a health check.

The listener only speeds things up: the bot keeps polling every task slowly, so a lost,
rejected or failed delivery costs latency, never a result.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection
from typing import Final, Protocol, TypeAlias
from urllib.parse import urlsplit, urlunsplit

from aiohttp import web

from bot.app_server import AppServer
from bot.domain.errors import ProviderError
from bot.domain.metrics import NO_METRICS, Metrics, WebhookResult

log = logging.getLogger(__name__)

SECRET_PREFIX: Final = "whsec_"  # noqa: S105 - the scheme's marker, not a secret
DEFAULT_TOLERANCE: Final = 300.0
# Provider names become URL path segments and log fields, so keep them to a tame alphabet.
PROVIDER_PATTERN: Final = r"[a-z0-9][a-z0-9_-]{0,31}"
_PROVIDER_RE: Final = re.compile(PROVIDER_PATTERN)
# Digits only: int() would also accept " 12", "+12" and "1_2", which are not what was signed.
_TIMESTAMP_RE: Final = re.compile(r"[0-9]{1,15}")
_LOG_ID_CHARS: Final = 80
_LOG_EVERY_SECONDS: Final = 60.0


class SignatureError(Exception):
    """A delivery whose headers or signature do not prove it came from the provider."""


class StaleDelivery(SignatureError):
    """A delivery whose timestamp is outside the tolerance (an old capture, or a clock far off)."""


def _candidate_keys(secret: str) -> list[bytes]:
    """Return the HMAC keys a secret may stand for: its UTF-8 bytes and its base64 decoding."""
    # Freepik's docs disagree on which reading is meant; a match under either proves the sender
    # knows the secret, so trying both costs no security.
    keys = [secret.encode("utf-8")]
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        decoded = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        decoded = b""
    if decoded and decoded not in keys:
        keys.append(decoded)
    return keys


def verify_signature(
    secret: str,
    *,
    webhook_id: str,
    timestamp: str,
    body: bytes,
    signature_header: str,
    now: float,
    tolerance: float = DEFAULT_TOLERANCE,
) -> None:
    """Raise SignatureError unless the delivery is fresh and signed with the secret."""
    # Messages are a fixed set (no header values) so they are safe to log and to group by.
    if not secret:
        raise SignatureError("no webhook secret configured")
    if not webhook_id:
        raise SignatureError("missing webhook-id header")
    if not timestamp:
        raise SignatureError("missing webhook-timestamp header")
    if not signature_header:
        raise SignatureError("missing webhook-signature header")
    if not _TIMESTAMP_RE.fullmatch(timestamp):
        raise SignatureError("non-numeric webhook-timestamp")
    sent_at = int(timestamp)
    if now - sent_at > tolerance:
        raise StaleDelivery("webhook-timestamp too old")
    if sent_at - now > tolerance:
        raise StaleDelivery("webhook-timestamp in the future")

    offered: list[bytes] = []
    for item in signature_header.split():
        _version, comma, signature = item.partition(",")
        # The version label is not checked: an HMAC match is the proof, whatever the label says,
        # and a provider that labels its pairs differently would otherwise be locked out.
        if comma and signature:
            offered.append(signature.encode("utf-8", "replace"))
    if not offered:
        raise SignatureError("malformed webhook-signature header")

    # aiohttp decodes header bytes with surrogateescape; reverse that so odd bytes cannot raise.
    raw_id = webhook_id.encode("utf-8", "surrogateescape")
    signed = b"%s.%s.%s" % (raw_id, timestamp.encode("ascii"), body)
    for key in _candidate_keys(secret):
        expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest())
        for offer in offered:
            if hmac.compare_digest(expected, offer):
                return
    raise SignatureError("no matching signature")


class ReplayGuard:
    """Remember recently seen webhook ids so a replayed delivery is handled once."""

    def __init__(self, window: float = 2 * DEFAULT_TOLERANCE, max_entries: int = 10_000) -> None:
        self._window = window
        self._max_entries = max_entries
        self._seen: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def seen_before(self, webhook_id: str, now: float) -> bool:
        """Record the id and return True when it was already seen within the window."""
        self._evict(now)
        if webhook_id in self._seen:
            return True
        self._seen[webhook_id] = now
        # The cap only bites under a flood of validly signed ids; dropping the oldest then may let
        # a very old replay through, which the handler tolerates (polling delivers duplicates too).
        while len(self._seen) > self._max_entries:
            self._seen.popitem(last=False)
        return False

    def forget(self, webhook_id: str) -> None:
        """Drop the id so the provider's retry of a delivery we failed to handle is accepted."""
        self._seen.pop(webhook_id, None)

    def _evict(self, now: float) -> None:
        """Drop entries older than the window (insertion order is arrival order)."""
        while self._seen:
            oldest_id, seen_at = next(iter(self._seen.items()))
            if now - seen_at <= self._window:
                break
            del self._seen[oldest_id]


class ReplayStore(Protocol):
    """Where seen webhook ids are kept: this process's memory, or a database several processes share."""

    async def seen_before(self, webhook_id: str, now: float, window: float) -> bool:
        """Record the id and return True when it was already seen within the window."""
        ...

    async def forget(self, webhook_id: str) -> None:
        """Drop the id so the provider's retry of a delivery we failed to handle is accepted."""
        ...


class _LocalReplays:
    """A ReplayGuard in this process's memory, seen through the ReplayStore interface."""

    def __init__(self, guard: ReplayGuard) -> None:
        self._guard = guard

    async def seen_before(self, webhook_id: str, now: float, window: float) -> bool:
        return self._guard.seen_before(webhook_id, now)

    async def forget(self, webhook_id: str) -> None:
        self._guard.forget(webhook_id)


# Given the provider's name and the verified body; True when a job of ours has that task. The handler
# parses the body (once, with the provider's own model) and raises ProviderError for a body of the wrong shape.
DeliveryHandler: TypeAlias = Callable[[str, bytes], Awaitable[bool]]
HealthCheck: TypeAlias = Callable[[], Awaitable[dict[str, bool]]]


class _RejectionLog:
    """Log rejected deliveries at most once per reason per interval, counting the rest."""

    def __init__(self, interval: float = _LOG_EVERY_SECONDS) -> None:
        self._interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warn(self, reason: str, webhook_id: str) -> None:
        """Log one rejection unless this reason was already logged within the interval."""
        # Monotonic, not the listener's wall clock: a clock step back must not silence the log.
        now = time.monotonic()
        last = self._last.get(reason)
        if last is not None and now - last < self._interval:
            self._suppressed[reason] = self._suppressed.get(reason, 0) + 1
            return
        self._last[reason] = now
        suppressed = self._suppressed.pop(reason, 0)
        # The id is sender-controlled: repr() and a length cap keep it from forging log lines.
        log.warning(
            "rejected webhook delivery: %s (webhook-id %r; %d similar suppressed)",
            reason,
            webhook_id[:_LOG_ID_CHARS],
            suppressed,
        )


def _normalize_prefix(path_prefix: str) -> str:
    """Return the prefix as "/a/b" (or "" for the root)."""
    stripped = path_prefix.strip("/")
    return f"/{stripped}" if stripped else ""


class WebhookListener:
    """An aiohttp server for provider webhooks and the /healthz probe."""

    def __init__(
        self,
        *,
        secret: str,
        port: int,
        host: str = "0.0.0.0",  # noqa: S104 - the provider must reach it; a reverse proxy is optional
        providers: Collection[str],
        on_delivery: DeliveryHandler,
        health: HealthCheck,
        path_prefix: str = "/webhooks",
        max_body_bytes: int = 65536,
        clock: Callable[[], float] = time.time,
        tolerance: float = DEFAULT_TOLERANCE,
        read_timeout: float = 10.0,
        health_timeout: float = 5.0,
        metrics: Metrics = NO_METRICS,
        replays: ReplayStore | None = None,
    ) -> None:
        if not secret:
            # An empty HMAC key is no key: anyone could sign deliveries.
            raise ValueError("webhook secret must not be empty")
        self._secret = secret
        self._server = AppServer("webhook listener", host, port, shutdown_timeout=5.0)
        self._providers = frozenset(providers)
        self._on_delivery = on_delivery
        self._health = health
        self._prefix = _normalize_prefix(path_prefix)
        self._max_body_bytes = max_body_bytes
        self._clock = clock
        self._tolerance = tolerance
        self._read_timeout = read_timeout
        self._health_timeout = health_timeout
        # A signed delivery can be replayed for as long as its timestamp passes the check, which
        # is up to 2 x tolerance after arrival when the sender's clock runs ahead. Several processes
        # behind one URL share a store of seen ids (`replays`); one process keeps them in memory.
        self._replay_window = 2 * tolerance
        self._replays: ReplayStore = replays or _LocalReplays(ReplayGuard(window=self._replay_window))
        self._rejections = _RejectionLog()
        self._metrics = metrics

    def __repr__(self) -> str:
        # Never show the secret, even in a debugger or a stray log of the object.
        return f"WebhookListener(host={self._server.host!r}, port={self._server.port!r}, prefix={self._prefix!r})"

    @property
    def bound_port(self) -> int:
        """Return the port actually listened on (useful with port=0)."""
        return self._server.bound_port

    def _make_app(self) -> web.Application:
        """Build the aiohttp application with the body-size cap and routes."""
        app = web.Application(client_max_size=self._max_body_bytes)
        app.router.add_post(f"{self._prefix}/{{provider:{PROVIDER_PATTERN}}}", self._handle_delivery)
        app.router.add_get("/healthz", self._handle_health)
        return app

    async def start(self) -> None:
        """Start listening."""
        await self._server.start(self._make_app())
        log.info("webhook listener on %s:%d%s/<provider>", self._server.host, self.bound_port, self._prefix)

    async def stop(self) -> None:
        """Stop listening; safe to call when not started."""
        await self._server.stop()

    def _reject(self, status: int, reason: str, webhook_id: str, result: WebhookResult) -> web.Response:
        """Count and log the rejection (the log rate-limited) and answer with the status."""
        self._metrics.webhook_delivery(result)
        self._rejections.warn(reason, webhook_id)
        return web.Response(status=status, text=reason)

    async def _handle_delivery(self, request: web.Request) -> web.StreamResponse:
        """Verify, de-duplicate, parse and hand over one delivery."""
        provider = request.match_info["provider"]
        webhook_id = request.headers.get("webhook-id", "")
        # Refuse on the declared size before reading a byte; chunked bodies hit client_max_size.
        if request.content_length is not None and request.content_length > self._max_body_bytes:
            return self._reject(413, "body too large", webhook_id, WebhookResult.TOO_LARGE)
        try:
            async with asyncio.timeout(self._read_timeout):
                body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self._reject(413, "body too large", webhook_id, WebhookResult.TOO_LARGE)
        except TimeoutError:
            return self._reject(408, "body read timed out", webhook_id, WebhookResult.READ_TIMEOUT)

        try:
            verify_signature(
                self._secret,
                webhook_id=webhook_id,
                timestamp=request.headers.get("webhook-timestamp", ""),
                body=body,
                signature_header=request.headers.get("webhook-signature", ""),
                now=self._clock(),
                tolerance=self._tolerance,
            )
        except SignatureError as exc:
            stale = isinstance(exc, StaleDelivery)
            result = WebhookResult.STALE if stale else WebhookResult.BAD_SIGNATURE
            return self._reject(401, str(exc), webhook_id, result)

        # 200, not 409, for a replay: a repeated id is almost always the provider retrying a
        # delivery whose answer it missed, and any 2xx is what stops it retrying a duplicate.
        try:
            replayed = await self._replays.seen_before(webhook_id, self._clock(), self._replay_window)
        except Exception as exc:  # the shared store is away: the provider retries later
            log.warning("webhook replay guard unavailable (%s); asking the provider to retry", exc)
            self._metrics.webhook_delivery(WebhookResult.ERROR)
            return web.Response(status=503, text="try again later")
        if replayed:
            self._metrics.webhook_delivery(WebhookResult.REPLAYED)
            self._rejections.warn("replayed webhook-id", webhook_id)
            return web.Response(status=200, text="duplicate delivery ignored")

        if provider not in self._providers:
            return self._reject(
                404, "no such provider takes webhooks here", webhook_id, WebhookResult.UNKNOWN_PROVIDER
            )
        try:
            known = await self._on_delivery(provider, body)
        except ProviderError as exc:
            # The body is not the provider's task object: the same body will never be accepted.
            return self._reject(
                400, exc.detail or "unexpected body shape", webhook_id, WebhookResult.MALFORMED
            )
        except asyncio.CancelledError:
            await self._forget(webhook_id)
            raise
        except Exception:
            # Let the provider's retry through the replay guard; polling remains the safety net.
            await self._forget(webhook_id)
            log.exception("webhook handler failed for a %s delivery", provider)
            self._metrics.webhook_delivery(WebhookResult.ERROR)
            return web.Response(status=500, text="handler failed")
        if not known:
            # 200 so the provider stops retrying: a task we do not know will not become known.
            log.debug("webhook for an unknown %s task ignored", provider)
            self._metrics.webhook_delivery(WebhookResult.UNKNOWN)
            return web.Response(status=200, text="unknown task ignored")
        self._metrics.webhook_delivery(WebhookResult.ACCEPTED)
        return web.Response(status=204)

    async def _forget(self, webhook_id: str) -> None:
        try:
            await self._replays.forget(webhook_id)
        except Exception as exc:  # at worst the provider's retry is taken for a replay; polling covers it
            log.warning("could not forget webhook id in the replay guard (%s)", exc)

    async def _handle_health(self, request: web.Request) -> web.StreamResponse:
        """Answer 200 when every check passes, else 503, with each check's result."""
        try:
            async with asyncio.timeout(self._health_timeout):
                checks = await self._health()
        except Exception:
            log.exception("health check failed")
            return web.json_response({"status": "error"}, status=503)
        healthy = all(checks.values())
        payload: dict[str, object] = {**checks, "status": "ok" if healthy else "degraded"}
        return web.json_response(payload, status=200 if healthy else 503)


def webhook_url(public_url: str, provider: str, path_prefix: str = "/webhooks") -> str:
    """Return the URL a provider should post to, under the bot's public base URL."""
    if not _PROVIDER_RE.fullmatch(provider):
        raise ValueError(f"invalid provider name {provider!r}")
    parts = urlsplit(public_url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("WEBHOOK_PUBLIC_URL must be an absolute http(s) URL")
    if parts.fragment:
        raise ValueError("WEBHOOK_PUBLIC_URL must not have a #fragment")
    path = f"{parts.path.rstrip('/')}{_normalize_prefix(path_prefix)}/{provider}"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))
