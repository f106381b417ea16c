"""The Bot subclass: owns the stores, providers, job runner and webhook listener; loads the cogs."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence

import aiohttp
import discord
from discord import app_commands
from discord.ext import commands

from bot.background import BackgroundTasks
from bot.connection import TRANSIENT_ERRORS, CappedBackoff, one_line
from bot.errors import BotError, StartupError
from bot.heartbeat import Heartbeat, gateway_connected, heartbeat_path
from bot.interactions import reply
from bot.jobs import JobRunner, RunnerConfig
from bot.providers.base import Provider, TaskKind
from bot.providers.breaker import CircuitBreaker
from bot.providers.freepik import FreepikProvider
from bot.providers.novita import NovitaProvider
from bot.reporting import DiscordReporter
from bot.safe_download import SafeDownloader
from bot.service import TaskService
from bot.settings import Settings
from bot.store.database import Database
from bot.store.jobs import JobStore
from bot.store.quotas import QuotaStore
from bot.ui import text
from bot.ui.views import PERSISTENT_BUTTONS, result_view
from bot.webhooks import Delivery, WebhookListener, webhook_url

log = logging.getLogger(__name__)

EXTENSIONS: tuple[str, ...] = ("cogs.describe", "cogs.imagine", "cogs.quota")
_MAINTENANCE_INTERVAL = 3600.0
# Running tasks get this long to reach a safe point at shutdown (SIGTERM must end the process within 10 s).
JOB_GRACE = 5.0
# A reservation outlives its task's timeout by this much before it is taken as abandoned.
_RESERVATION_MARGIN = 300.0


def build_providers(settings: Settings, session: aiohttp.ClientSession) -> dict[str, Provider]:
    """Return the configured providers by name, in preference order."""
    providers: dict[str, Provider] = {}
    if settings.freepik_api_key is not None:
        providers["freepik"] = FreepikProvider(
            session,
            api_key=settings.freepik_api_key.get_secret_value(),
            base_url=str(settings.freepik_base_url),
            key_header=settings.freepik_api_key_header,
            request_timeout=settings.request_timeout_seconds,
        )
    if settings.novita_api_key is not None:
        providers["novita"] = NovitaProvider(
            session,
            api_key=settings.novita_api_key.get_secret_value(),
            base_url=str(settings.novita_base_url),
            # Novita is synchronous and can take a minute when overloaded: never give it less than 90 s.
            request_timeout=max(90.0, settings.request_timeout_seconds),
        )
    return providers


class BotTree(app_commands.CommandTree["ImageBot"]):
    """Turn every app command error into one short reply."""

    def __init__(self, client: ImageBot) -> None:
        super().__init__(client)
        # Errors that were not the member's: tests assert this stays empty.
        self.unexpected_errors: list[BaseException] = []

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        if not self.client.service_accepting:
            await reply(interaction, text.SHUTTING_DOWN)
            return False
        return True

    async def on_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        original = error.original if isinstance(error, app_commands.CommandInvokeError) else error
        if isinstance(original, BotError):
            sentence = text.error_sentence(original)
        elif isinstance(original, app_commands.NoPrivateMessage):
            sentence = text.DM_ONLY_SERVER
        elif isinstance(original, app_commands.MissingPermissions | app_commands.CheckFailure):
            sentence = text.COMMAND_DISABLED
        else:
            self.unexpected_errors.append(original)
            log.error(
                "command %s failed", interaction.command and interaction.command.name, exc_info=original
            )
            sentence = text.error_sentence(original)
        await reply(interaction, sentence)


class ImageBot(commands.Bot):
    """The bot, handed its settings, HTTP session and database by `__main__`."""

    def __init__(
        self,
        *,
        settings: Settings,
        session: aiohttp.ClientSession,
        db: Database,
        downloader: SafeDownloader | None = None,
        clock: Callable[[], float] = time.time,
        extensions: Sequence[str] = EXTENSIONS,
        **options: object,
    ) -> None:
        intents = discord.Intents.default()
        # Reading a replied-to message's attachments needs the privileged message content intent.
        intents.message_content = settings.mention_trigger
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=intents,
            tree_cls=BotTree,
            help_command=None,
            chunk_guilds_at_startup=False,
            allowed_mentions=discord.AllowedMentions.none(),
            **options,  # type: ignore[arg-type]
        )
        self.settings = settings
        self.session = session
        self.db = db
        self._extensions = tuple(extensions)
        self._background = BackgroundTasks()
        self.providers = build_providers(settings, session)
        self.breakers = {name: CircuitBreaker(name) for name in self.providers}
        self.jobs = JobStore(db, clock=clock)
        self.quotas = QuotaStore(
            db,
            defaults={
                TaskKind.DESCRIBE: settings.quota_describe_per_day,
                TaskKind.IMAGINE: settings.quota_imagine_per_day,
            },
            max_inflight_per_user=settings.max_inflight_per_user,
            max_inflight_per_provider=settings.max_inflight_per_provider,
            reservation_ttl=settings.task_timeout_seconds + _RESERVATION_MARGIN,
            clock=clock,
        )
        self.reporter = DiscordReporter(
            self,
            self.jobs,
            coalesce_seconds=settings.edit_coalesce_seconds,
            view_for=result_view,
            clock=clock,
        )
        self.runner = JobRunner(
            jobs=self.jobs,
            quotas=self.quotas,
            providers=self.providers,
            breakers=self.breakers,
            reporter=self.reporter,
            config=RunnerConfig(
                poll_interval=settings.poll_interval_seconds,
                poll_max_interval=settings.poll_max_interval_seconds,
                task_timeout=settings.task_timeout_seconds,
                progress_after=settings.edit_coalesce_seconds,
            ),
            webhook_url_for=self._webhook_url_for,
            clock=clock,
        )
        self.downloader = downloader or SafeDownloader(max_bytes=settings.max_image_bytes)
        self.service = TaskService(
            settings=settings,
            jobs=self.jobs,
            quotas=self.quotas,
            runner=self.runner,
            providers=self.providers,
            downloader=self.downloader,
            clock=clock,
        )
        self.webhooks: WebhookListener | None = None

    async def on_message(self, message: discord.Message, /) -> None:
        # No prefix commands exist: skipping their processing keeps a mention from logging
        # CommandNotFound. Cog listeners (the mention trigger) still receive every message.
        return

    @property
    def service_accepting(self) -> bool:
        return self.runner.accepting

    async def setup_hook(self) -> None:
        for extension in self._extensions:
            await self.load_extension(extension)
        self.add_dynamic_items(*PERSISTENT_BUTTONS)
        try:
            await self.sync_commands_if_changed()
        except TRANSIENT_ERRORS as exc:
            # The bot works without a fresh sync (Discord keeps the last one): keep trying in the background.
            log.warning("could not sync commands (%s); trying again in the background", one_line(exc))
            self._background.spawn(self._sync_when_reachable(), name="command-sync")
        if self.settings.webhooks_enabled:
            await self._start_webhooks()
        resumed = await self.runner.resume()
        if resumed:
            log.info("resumed %d unfinished jobs", resumed)
        self._background.spawn(self._maintenance(), name="maintenance")
        heartbeat = Heartbeat(heartbeat_path(self.settings), lambda: gateway_connected(self))
        self._background.spawn(heartbeat.run(), name="heartbeat")

    async def sync_commands_if_changed(self) -> None:
        """Sync the commands where their definition changed since the last sync (a hash in the database)."""
        guilds: list[discord.Object | None] = [discord.Object(gid) for gid in self.settings.discord_guild_ids]
        for guild in guilds or [None]:
            if guild is not None:
                self.tree.copy_global_to(guild=guild)
            payload = [command.to_dict(self.tree) for command in self.tree.get_commands(guild=guild)]
            digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
            key = f"commands:{self.application_id}:{guild.id if guild else 'global'}"
            if await self.db.get_meta(key) == digest:
                log.info("commands unchanged for %s; not syncing", guild.id if guild else "global")
                continue
            await self.tree.sync(guild=guild)
            await self.db.set_meta(key, digest)
            log.info("synced %d commands to %s", len(payload), guild.id if guild else "all servers (global)")

    async def _sync_when_reachable(self) -> None:
        backoff = CappedBackoff()
        while True:
            wait = backoff.delay()
            await asyncio.sleep(wait)
            try:
                await self.sync_commands_if_changed()
                return
            except TRANSIENT_ERRORS as exc:
                log.warning("could not sync commands (%s); trying again", one_line(exc))

    async def close(self) -> None:
        """Stop taking commands, let jobs reach a safe point, then close; cogs first, resources last."""
        await self.runner.shutdown(grace=JOB_GRACE)
        await self.reporter.close()
        if self.webhooks is not None:
            await self.webhooks.stop()
        await self._background.cancel_all()
        await self.downloader.close()
        await super().close()

    async def health(self) -> dict[str, bool]:
        return {"database": await self.db.is_reachable(), "gateway": gateway_connected(self)}

    def _webhook_url_for(self, provider: str) -> str | None:
        if not self.settings.webhooks_enabled or provider != "freepik":
            return None
        return webhook_url(str(self.settings.webhook_public_url), provider)

    async def _start_webhooks(self) -> None:
        assert self.settings.webhook_secret is not None

        async def on_delivery(delivery: Delivery) -> bool:
            payload = {
                "task_id": delivery.task_id,
                "status": delivery.status,
                "generated": list(delivery.generated),
            }
            return await self.runner.deliver(delivery.provider, payload)

        listener = WebhookListener(
            secret=self.settings.webhook_secret.get_secret_value(),
            port=self.settings.webhook_port,
            on_delivery=on_delivery,
            health=self.health,
        )
        try:
            await listener.start()
        except OSError as exc:
            raise StartupError(
                f"WEBHOOK_PORT {self.settings.webhook_port} cannot be listened on ({exc.strerror}): "
                "another program uses it, or the port needs privileges; choose another port"
            ) from None
        self.webhooks = listener
        log.info("webhook listener on port %d", self.webhooks.bound_port)

    async def _maintenance(self) -> None:
        """Settle abandoned reservations and prune old rows, hourly."""
        while True:
            try:
                expired = await self.quotas.expire()
                # Jobs first: their usage rows can only go once no job points at them.
                pruned = await self.jobs.prune(self.settings.usage_retention_days)
                pruned += await self.quotas.prune(self.settings.usage_retention_days)
                if expired or pruned:
                    log.info("maintenance: %d reservations expired, %d old rows pruned", expired, pruned)
            except Exception:
                log.exception("maintenance failed; trying again later")
            await asyncio.sleep(_MAINTENANCE_INTERVAL)
