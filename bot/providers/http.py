"""One request helper for every provider: timeouts, retry with backoff, error body to ProviderError."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from bot.domain.errors import ProviderError
from bot.domain.tasks import Fault
from bot.providers.budget import RequestBudget

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]

# Statuses that say the request was not acted on (nothing was created), so sending it again is safe.
RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})
_MAX_RETRY_AFTER = 30.0
_ERROR_TEXT_LIMIT = 200


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with full jitter; a Retry-After header wins when present."""

    attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 8.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, _MAX_RETRY_AFTER)
        return random.uniform(0, min(self.max_delay, self.base_delay * 2**attempt))  # noqa: S311 (jitter)


NO_RETRY = RetryPolicy(attempts=1)


class MisconfigurationLog:
    """Tell the admin what is wrong with a provider's settings at most once a minute per kind of problem."""

    def __init__(self, interval: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval = interval
        self._clock = clock
        self._last: dict[tuple[str, str], float] = {}

    def report(self, provider: str, status: int, detail: str) -> None:
        self.say(
            provider,
            "key",
            f"{provider} rejected the bot's API key or plan (HTTP {status}: {detail or 'no detail'}): "
            "check the key in the settings",
        )

    def say(self, provider: str, problem: str, line: str) -> None:
        """Log one ERROR line for the admin, unless this problem was told within the interval."""
        now = self._clock()
        last = self._last.get((provider, problem))
        if last is not None and now - last < self._interval:
            return
        self._last[(provider, problem)] = now
        log.error("%s", line)


async def request_json(
    session: aiohttp.ClientSession,
    provider: str,
    method: str,
    url: str,
    *,
    headers: Mapping[str, str],
    body: Any = None,
    timeout: float,
    retry: RetryPolicy = NO_RETRY,
    creates: bool = False,
    timeout_fault: Fault | None = None,
    key_log: MisconfigurationLog | None = None,
    sleep: Sleep = asyncio.sleep,
    budget: RequestBudget | None = None,
    chance: float | None = None,
) -> Any:
    """Send one JSON request, retrying what is safe to retry; return the parsed answer.

    `creates` marks a request whose lost answer may still have created a paid task: it is then never
    sent again after a timeout, and the caller learns it as Fault.LOST. `timeout_fault` says what a
    timeout means instead, for a request whose answer is the whole task (a model that was too slow).
    With a `budget`, every attempt waits for a slot under the provider's rate limits: a poll with its
    `chance` of finding the task ended, anything else (None) first in line; a 429 holds the budget back.
    """
    # A create whose answer was lost may have made a paid task; anything else was merely not answered.
    on_loss = Fault.LOST if creates else Fault.BUSY
    on_timeout = timeout_fault or on_loss
    attempt = 0
    while True:
        try:
            async with budget.slot(chance=chance) if budget is not None else contextlib.nullcontext():
                return await _send_once(
                    session, provider, method, url, headers, body, timeout, (on_timeout, on_loss), key_log
                )
        except ProviderError as exc:
            if budget is not None and exc.status == 429:
                budget.hold(exc.retry_after)
            attempt += 1
            # Safe to send again: the provider said it did nothing (429, 5xx), or it was never reached.
            retryable = exc.fault is Fault.UNREACHABLE or (
                exc.fault is Fault.BUSY and exc.status in RETRYABLE_STATUSES
            )
            if not retryable or attempt >= retry.attempts:
                raise
            delay = retry.delay(attempt - 1, exc.retry_after)
            what = f"answered {exc.status}" if exc.status is not None else "could not be reached"
            log.info("%s %s; retrying in %.1f s (attempt %d)", provider, what, delay, attempt + 1)
            await sleep(delay)


async def _send_once(
    session: aiohttp.ClientSession,
    provider: str,
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: Any,
    timeout: float,
    faults: tuple[Fault, Fault],  # (on a timeout, on another lost answer)
    key_log: MisconfigurationLog | None,
) -> Any:
    try:
        async with session.request(
            method, url, headers=dict(headers), json=body, timeout=aiohttp.ClientTimeout(total=timeout)
        ) as response:
            raw = await response.read()
            status = response.status
            retry_after = _retry_after(response.headers.get("Retry-After"))
    except aiohttp.ClientConnectorError as exc:
        # Nothing reached the provider, so nothing was created: safe to retry. No status: none came.
        raise ProviderError(provider, Fault.UNREACHABLE, _connect_failure(exc)) from exc
    except TimeoutError as exc:
        raise ProviderError(provider, faults[0], type(exc).__name__) from exc
    except aiohttp.ClientError as exc:
        raise ProviderError(provider, faults[1], type(exc).__name__) from exc

    if 200 <= status < 300:
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise ProviderError(provider, Fault.BAD_RESULT, "answer is not JSON", status=status) from exc

    detail = _error_detail(raw)
    if status in (401, 402, 403):
        if key_log is not None:
            key_log.report(provider, status, detail)
        raise ProviderError(provider, Fault.MISCONFIGURED, detail, status=status)
    if status == 404:
        raise ProviderError(provider, Fault.NOT_FOUND, detail, status=status)
    if status in (400, 413, 415, 422):
        raise ProviderError(provider, Fault.REJECTED, detail, status=status)
    raise ProviderError(provider, Fault.BUSY, detail, status=status, retry_after=retry_after)


def _connect_failure(exc: aiohttp.ClientConnectorError) -> str:
    """Say why no connection was made, without the URL (the admin's base URL setting says where)."""
    error = exc.os_error
    # asyncio puts the address in strerror ("Connect call failed (...)"); the errno's own words are plainer.
    reason = os.strerror(error.errno) if error is not None and error.errno else ""
    return f"could not connect: {reason}" if reason else "could not connect"


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: rare for APIs; the exponential backoff covers it


def _error_detail(raw: bytes) -> str:
    """Pull a short reason out of an error body, whatever its shape (providers differ)."""
    try:
        parsed = json.loads(raw)
    except ValueError:
        return raw[:_ERROR_TEXT_LIMIT].decode("utf-8", "replace").strip()
    if isinstance(parsed, dict):
        for key in ("message", "reason", "error", "detail"):
            value = parsed.get(key)
            if isinstance(value, str) and value:
                return value[:_ERROR_TEXT_LIMIT]
            if isinstance(value, dict) and isinstance(value.get("message"), str):
                return str(value["message"])[:_ERROR_TEXT_LIMIT]
    return ""
