"""Discord's side of the metrics, read from discord.py's own HTTP session through an aiohttp trace.

discord.py takes an `aiohttp.TraceConfig` as a documented client option (`http_trace`) and gives it to the
one session it makes at login. Every request it sends goes through that session: the REST API with its
rate-limit buckets, interaction callbacks and follow-ups (its webhook adapter borrows the same session),
CDN reads and the gateway handshake. So this module sees each answer without patching discord.py: its
status, and the rate-limit headers that make discord.py wait (a 429, or a bucket whose last request was
just spent, after which discord.py sleeps until the bucket resets). An interaction's acknowledgement is
its callback request: its id is a snowflake that says when Discord created the interaction, so the time
to acknowledge is measured as the member waits it, gateway delay included.

Nothing from a URL becomes a label but which of four routes it was; ids and tokens are never kept.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Mapping
from types import SimpleNamespace
from typing import Final, Protocol

import aiohttp

from bot.domain.metrics import status_label

_DISCORD_EPOCH_MS: Final = 1_420_070_400_000
_CALLBACK: Final = re.compile(r"/interactions/(?P<id>[0-9]{1,20})/[^/]+/callback$")
_INTERACTION_WEBHOOK: Final = re.compile(r"/webhooks/[0-9]{1,20}/[^/]+(/|$)")
_API: Final = re.compile(r"/api/v[0-9]+/")

# The routes a request is counted under.
CALLBACK_ROUTE: Final = "interaction_callback"  # acknowledging an interaction
WEBHOOK_ROUTE: Final = "interaction_webhook"  # editing a reply, follow-ups (the interaction's token)
API_ROUTE: Final = "api"  # every other REST call: channel messages, command sync, ...
OTHER_ROUTE: Final = "other"  # the CDN (attachments) and the gateway's handshake
ROUTES: Final = (CALLBACK_ROUTE, WEBHOOK_ROUTE, API_ROUTE, OTHER_ROUTE)

# Why discord.py waited: a bucket it spent ("bucket"), or a 429 by its X-RateLimit-Scope.
RATE_LIMIT_REASONS: Final = ("bucket", "user", "shared", "global", "unknown")
# Requests that got no answer at all.
NO_ANSWER_STATUSES: Final = ("timeout", "connection")


class DiscordObserver(Protocol):
    def interaction_acknowledged(self, seconds: float) -> None: ...

    def discord_error(self, route: str, status: str) -> None: ...

    def discord_rate_limited(self, reason: str, seconds: float) -> None: ...


def route_of(path: str) -> str:
    if _CALLBACK.search(path):
        return CALLBACK_ROUTE
    if _INTERACTION_WEBHOOK.search(path):
        return WEBHOOK_ROUTE
    return API_ROUTE if _API.search(path) else OTHER_ROUTE


def snowflake_time(snowflake: int) -> float:
    """Return when Discord made an id, in seconds since the Unix epoch."""
    return ((snowflake >> 22) + _DISCORD_EPOCH_MS) / 1000


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def bucket_wait(headers: Mapping[str, str]) -> float | None:
    """Return how long discord.py waits after an answer that spent its bucket, or None when it did not."""
    if headers.get("X-RateLimit-Remaining") != "0":
        return None
    return _seconds(headers.get("X-RateLimit-Reset-After")) or 0.0


def rate_limited_by(headers: Mapping[str, str]) -> tuple[str, float]:
    """Return the scope of a 429 and the wait it asks for (Reset-After is precise; Retry-After whole seconds)."""
    scope = headers.get("X-RateLimit-Scope", "").lower()
    if scope not in RATE_LIMIT_REASONS or scope == "bucket":
        scope = "global" if headers.get("X-RateLimit-Global") else "unknown"
    wait = _seconds(headers.get("X-RateLimit-Reset-After"))
    if wait is None:
        wait = _seconds(headers.get("Retry-After")) or 0.0
    return scope, wait


def discord_trace(
    observer: DiscordObserver, *, clock: Callable[[], float] = time.time
) -> aiohttp.TraceConfig:
    """Return the trace to hand discord.py as `http_trace`."""
    trace = aiohttp.TraceConfig()

    async def on_request_end(
        session: aiohttp.ClientSession, context: SimpleNamespace, params: aiohttp.TraceRequestEndParams
    ) -> None:
        path = params.url.path
        status = params.response.status
        headers = params.response.headers
        if status == 429:
            observer.discord_error(route_of(path), status_label(status))
            observer.discord_rate_limited(*rate_limited_by(headers))
            return
        if status >= 400:
            observer.discord_error(route_of(path), status_label(status))
            return
        callback = _CALLBACK.search(path)
        if callback is not None:
            created = snowflake_time(int(callback["id"]))
            observer.interaction_acknowledged(max(0.0, clock() - created))
        wait = bucket_wait(headers)
        if wait is not None:
            observer.discord_rate_limited("bucket", wait)

    async def on_request_exception(
        session: aiohttp.ClientSession,
        context: SimpleNamespace,
        params: aiohttp.TraceRequestExceptionParams,
    ) -> None:
        if isinstance(params.exception, asyncio.CancelledError):
            return  # the bot stopped waiting (shutdown), Discord did nothing wrong
        status = "timeout" if isinstance(params.exception, TimeoutError) else "connection"
        observer.discord_error(route_of(params.url.path), status)

    trace.on_request_end.append(on_request_end)
    trace.on_request_exception.append(on_request_exception)
    return trace
