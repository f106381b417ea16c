"""The reporter: shows a job's saved state on its Discord message, whatever became of the interaction."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, cast

import aiohttp
import discord

from bot.core.background import BackgroundTasks
from bot.core.images import thumbnail
from bot.discord.connection import one_line
from bot.discord.interactions import shared_locale
from bot.domain.errors import LeaseLost, StorageFull, StoreUnavailable
from bot.domain.metrics import NO_METRICS, Metrics
from bot.domain.ports import JobRepository
from bot.domain.tasks import Job, JobState, Route, TaskKind
from bot.ui.embeds import Rendered, render_job
from bot.ui.views import cancel_view, result_view
from bot.ui.words import DEFAULT_LOCALE, RESULT_MESSAGE_DELETED, Words

log = logging.getLogger(__name__)

# Interaction tokens last 15 minutes; past 14 the bot reports with its own token, so that an edit
# never races the expiry.
INTERACTION_TOKEN_LIFETIME = 14 * 60.0
_UNKNOWN_MESSAGE = 10008
_UNKNOWN_WEBHOOK = 10015
_UNKNOWN_INTERACTION = 10062
_INVALID_WEBHOOK_TOKEN = 50027
_MISSING_PERMISSIONS = 50013
_MISSING_ACCESS = 50001


@dataclass(slots=True)
class _Slot:
    """What is kept per job between edits: the latest state to show and when the last edit went."""

    latest: Job
    # Where the message is and how to reach it. The reporter owns this: it is taken from the job once,
    # changed only here (and saved), and every later state of the job is shown through it.
    route: Route
    sent: tuple[JobState, int | None] | None = None  # what the message shows: the state, and a place in line
    last_sent: float = float("-inf")
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    flusher: asyncio.Task[None] | None = None


def _shown(job: Job) -> tuple[JobState, int | None]:
    """What a message shows of a job, for telling whether an edit would change anything."""
    return (job.state, job.place)


class DiscordReporter:
    """Edit the job's message once per new state, coalescing states that arrive close together."""

    def __init__(
        self,
        client: discord.Client,
        jobs: JobRepository,
        *,
        coalesce_seconds: float,
        provider_labels: Mapping[str, str],
        can_imagine: bool = True,
        default_locale: str = DEFAULT_LOCALE,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        metrics: Metrics = NO_METRICS,
    ) -> None:
        self._client = client
        self._metrics = metrics
        self._jobs = jobs
        self._coalesce = coalesce_seconds
        self._labels = dict(provider_labels)
        self._can_imagine = can_imagine
        self._default_locale = default_locale
        self._clock = clock
        self._monotonic = monotonic
        self._slots: dict[str, _Slot] = {}
        self._tasks = BackgroundTasks()

    async def report(self, job: Job) -> bool:
        slot = self._slots.get(job.id)
        if slot is None:
            sent = None if job.reported_state is None else (job.reported_state, None)
            slot = self._slots[job.id] = _Slot(latest=job, route=job.route, sent=sent)
        job = replace(job, route=slot.route)
        slot.latest = job
        if job.finished:
            # The end is never held back: it replaces whatever intermediate state was waiting.
            async with slot.lock:
                shown = await self._deliver(slot, job)
            if shown:
                self._slots.pop(job.id, None)
            return shown
        if slot.flusher is None or slot.flusher.done():
            slot.flusher = self._tasks.spawn(self._flush(slot), name=f"report-{job.id[:12]}")
        return True

    async def forget(self, job_id: str) -> None:
        slot = self._slots.pop(job_id, None)
        if slot and slot.flusher:
            slot.flusher.cancel()

    async def close(self) -> None:
        await self._tasks.cancel_all()

    async def _flush(self, slot: _Slot) -> None:
        while _shown(slot.latest) != slot.sent and not slot.latest.finished:
            wait = slot.last_sent + self._coalesce - self._monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            async with slot.lock:
                job = slot.latest
                if job.finished or _shown(job) == slot.sent:
                    return
                if not await self._deliver(slot, job):
                    # A state Discord did not take is skipped, not retried in a loop: the next one shows.
                    slot.sent = _shown(job)
                    slot.last_sent = self._monotonic()

    async def _deliver(self, slot: _Slot, job: Job) -> bool:
        """Show the job; False when Discord did not take it for a reason that may pass (worth another try).

        An end that can never be shown here (no permission, a channel gone) counts as shown: it is logged,
        and trying again would not help.
        """
        try:
            job = await self._send(job)
        except asyncio.CancelledError:
            raise
        except discord.HTTPException as exc:
            if exc.status >= 500:
                log.warning("job %s: Discord answered %s; it will be shown again", job.id, exc.status)
                return False
            if not job.finished:
                log.warning("job %s: Discord refused a state (%s); the next one is shown", job.id, exc.status)
                return False
            # The end must show even when its files cannot go (too large, refused): show it without them.
            log.warning(
                "job %s: Discord refused the result (%s); showing it without files", job.id, exc.status
            )
            try:
                job = await self._send(job, with_files=False)
            except discord.HTTPException as again:
                if again.status >= 500:
                    return False
                log.exception("could not show the end of job %s on Discord", job.id)
                return True
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.warning(
                "job %s: Discord could not be reached (%s); it will be shown again", job.id, one_line(exc)
            )
            return False
        except Exception:
            log.exception("could not show job %s on Discord", job.id)
            return True
        if job.finished:  # the end is on Discord now: that is when the member sees it
            self._metrics.result_shown(job.kind, self._clock() - job.updated_at)
        slot.route = job.route
        slot.sent = _shown(job)
        slot.last_sent = self._monotonic()
        slot.latest = replace(slot.latest, route=job.route)
        # Shown already; at worst a resume (or the process that took the job over) shows it once more.
        with contextlib.suppress(StorageFull, StoreUnavailable, LeaseLost):
            await self._jobs.update(job, reported_state=job.state)
        return True

    # --- the routes to the message ---------------------------------------------------------------

    async def _reroute(self, job: Job, **changes: Any) -> Job:
        """Save where the job's message now is; return the job as shown through that route."""
        route = replace(job.route, **changes)
        await self._jobs.save_route(job.id, route)
        return replace(job, route=route)

    async def _send(self, job: Job, *, with_files: bool = True) -> Job:
        """Show the job through the interaction token, else the bot's own token; return it as routed now."""
        if job.route.via == "interaction" and self._token_usable(job.route):
            try:
                message = await self._edit_original(job, with_files=with_files)
            except discord.HTTPException as exc:
                if exc.code == _UNKNOWN_MESSAGE:
                    log.info("job %s: its message was deleted; the result will be posted anew", job.id)
                    return await self._message_gone(job)
                if (
                    exc.code in (_INVALID_WEBHOOK_TOKEN, _UNKNOWN_WEBHOOK, _UNKNOWN_INTERACTION)
                    or exc.status == 401
                ):
                    log.info(
                        "job %s: Discord refused the interaction token; reporting in the channel", job.id
                    )
                    job = await self._reroute(job, via="channel")
                else:
                    raise
            else:
                if message.id != job.route.message_id or message.channel.id != job.route.channel_id:
                    job = await self._reroute(job, message_id=message.id, channel_id=message.channel.id)
                return job
        elif job.route.via == "interaction":
            job = await self._reroute(job, via="channel")
        return await self._send_in_channel(job, with_files=with_files)

    async def _message_gone(self, job: Job) -> Job:
        """Stop editing a deleted message; the end is posted as a new message that mentions the member."""
        job = await self._reroute(job, via="channel", message_id=None)
        if not job.finished:
            return job
        return await self._send_in_channel(job)

    async def _send_in_channel(self, job: Job, *, with_files: bool = True) -> Job:
        route = job.route
        if route.channel_id is None:
            log.warning("job %s has no channel to report in; its end is only in the usage log", job.id)
            return job
        channel = self._client.get_partial_messageable(route.channel_id)
        words = self._words(job)
        if route.message_id is not None:
            try:
                rendered = await self._render(job, words, with_files=with_files)
                await channel.get_partial_message(route.message_id).edit(
                    content=rendered.content,
                    embed=rendered.embed,
                    attachments=rendered.files,
                    view=self._view(job, words),
                )
                return job
            except discord.NotFound:
                log.info("job %s: its message is gone; posting the result anew", job.id)
            except discord.Forbidden:
                log.warning("job %s: no permission to edit in channel %s", job.id, route.channel_id)
                return job
        if not job.finished:
            return job  # a new message is only worth posting for the end
        # A new post belongs to no member: everyone in the channel reads it, in the server's language.
        words = self._words(job, new_post=True)
        rendered = await self._render(job, words, with_files=with_files)
        try:
            message = await channel.send(
                content=words.say(RESULT_MESSAGE_DELETED, mention=f"<@{job.user_id}>"),
                embed=rendered.embed,
                files=rendered.files,
                view=self._view(job, words) or discord.utils.MISSING,
                allowed_mentions=discord.AllowedMentions(users=[discord.Object(job.user_id)]),
            )
        except discord.Forbidden:
            log.warning("job %s: no permission to post in channel %s", job.id, route.channel_id)
            return job
        return await self._reroute(job, message_id=message.id)

    async def _edit_original(self, job: Job, *, with_files: bool = True) -> discord.WebhookMessage:
        route = job.route
        assert route.application_id is not None
        assert route.interaction_token is not None
        webhook = discord.Webhook.partial(route.application_id, route.interaction_token, client=self._client)
        words = self._words(job)
        rendered = await self._render(job, words, with_files=with_files)
        kwargs: dict[str, Any] = {"embed": rendered.embed, "content": rendered.content}
        if job.finished:
            kwargs["attachments"] = rendered.files
        # None takes the Cancel button away from an end without buttons.
        kwargs["view"] = self._view(job, words)
        # "@original" names the interaction's first response, whose id we may not know yet.
        return await webhook.edit_message(cast("int", "@original"), **kwargs)

    def _token_usable(self, route: Route) -> bool:
        if route.interaction_token is None or route.application_id is None or route.token_created_at is None:
            return False
        return self._clock() - route.token_created_at < INTERACTION_TOKEN_LIFETIME

    def _words(self, job: Job, *, new_post: bool = False) -> Words:
        """Return the words a job's message is shown in.

        The interaction's response is the member's: their language (English when the bot lacks it). A
        message that belongs to no member (a new post in the channel, the mention trigger's reply) is in
        the server's language, else DEFAULT_LOCALE.
        """
        route = job.route
        if route.member_locale and not new_post:
            return Words(route.member_locale, self._labels)
        return Words(shared_locale(route.guild_locale, self._default_locale), self._labels)

    def _view(self, job: Job, words: Words) -> discord.ui.View | None:
        if not job.finished:
            return cancel_view(job, words)
        if job.state is not JobState.COMPLETED:
            return None
        return result_view(job, words, can_imagine=self._can_imagine)

    async def _render(self, job: Job, words: Words, *, with_files: bool = True) -> Rendered:
        if job.state is not JobState.COMPLETED or not with_files:
            return render_job(job, words)
        if job.kind is TaskKind.DESCRIBE:
            inputs = await self._jobs.images(job.id, "input")
            small = await asyncio.to_thread(thumbnail, inputs[0]) if inputs else None
            return render_job(job, words, thumbnail=small)
        return render_job(job, words, outputs=await self._jobs.images(job.id, "output"))
