"""The Bot subclass: handed its resources, it builds the core, loads the cogs and listens for webhooks."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import aiohttp
import discord
from discord.ext import commands

from bot.core.background import BackgroundTasks
from bot.core.safe_download import SafeDownloader
from bot.discord.connection import TRANSIENT_ERRORS, CappedBackoff, one_line
from bot.discord.heartbeat import Heartbeat, gateway_connected, heartbeat_path
from bot.discord.interactions import words_for
from bot.discord.reporting import DiscordReporter
from bot.discord.translator import CatalogueTranslator
from bot.discord.tree import BotTree
from bot.domain.errors import StartupError, StorageFull, StoreUnavailable
from bot.observability.prometheus import PrometheusMetrics
from bot.observability.server import MetricsListener
from bot.settings import Settings
from bot.store.sqlite.database import Database
from bot.ui.words import Words
from bot.webhooks import WebhookListener
from bot.wiring import Core, ReporterNeeds, build_core

if TYPE_CHECKING:
    import yarl

    from bot.store.postgres.database import PgDatabase

log = logging.getLogger(__name__)

EXTENSIONS: tuple[str, ...] = (
    "cogs.describe",
    "cogs.imagine",
    "cogs.quota",
    "cogs.rules",
    "cogs.privacy",
    "cogs.tasks",
)
_MAINTENANCE_INTERVAL = 3600.0
# Running tasks get this long to reach a safe point at shutdown (SIGTERM must end the process within 10 s).
JOB_GRACE = 5.0
# With PostgreSQL, how often the pool is asked whether it still answers (the heartbeat stops while not).
_DATABASE_PROBE_INTERVAL = 10.0


class ImageBot(commands.AutoShardedBot):
    """The bot, handed its settings, HTTP session and database by `__main__`.

    Always discord.py's sharded client: with SHARD_COUNT and SHARD_IDS it runs the shards it is given
    (other processes run the rest); without them it runs as many shards as Discord recommends for the
    bot (one, until it is in thousands of servers), so one process never outgrows Discord's limit and the
    code that runs in one process is the code that runs in many.
    """

    def __init__(
        self,
        *,
        settings: Settings,
        session: aiohttp.ClientSession,
        db: Database | PgDatabase,
        downloader: SafeDownloader | None = None,
        clock: Callable[[], float] = time.time,
        extensions: Sequence[str] = EXTENSIONS,
        **options: object,
    ) -> None:
        intents = discord.Intents.default()
        # Reading a replied-to message's attachments needs the privileged message content intent.
        intents.message_content = settings.mention_trigger
        # A registry per bot; discord.py's requests are counted through its documented `http_trace` hook.
        self.metrics = PrometheusMetrics()
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=intents,
            tree_cls=BotTree,
            help_command=None,
            chunk_guilds_at_startup=False,
            allowed_mentions=discord.AllowedMentions.none(),
            http_trace=self.metrics.discord_trace(),
            shard_count=settings.shard_count,
            # None: every shard of SHARD_COUNT (discord.py's stubs say list, its code takes None).
            shard_ids=list(settings.shard_ids) or None,  # type: ignore[arg-type]
            **options,  # type: ignore[arg-type]
        )
        self.settings = settings
        self._extensions = tuple(extensions)
        self._background = BackgroundTasks()
        self._clock = clock
        self.reporter: DiscordReporter | None = None
        self.core: Core = build_core(
            settings,
            session,
            db,
            reporter_for=self._make_reporter,
            downloader=downloader,
            clock=clock,
            metrics=self.metrics,
        )
        self.webhooks: WebhookListener | None = None
        self.metrics_listener: MetricsListener | None = None
        self._database_ok = True

    def _make_reporter(self, needs: ReporterNeeds) -> DiscordReporter:
        self.reporter = DiscordReporter(
            self,
            needs.jobs,
            coalesce_seconds=self.settings.edit_coalesce_seconds,
            provider_labels=needs.labels,
            can_imagine=needs.can_imagine,
            default_locale=self.settings.default_locale,
            clock=self._clock,
            metrics=self.metrics,
        )
        return self.reporter

    async def launch_shard(self, gateway: yarl.URL, shard_id: int, *, initial: bool = False) -> None:
        # discord.py retries a shard that failed to connect every 5 s, for ever, even once the bot is
        # closing; a closed bot stops trying.
        if self.is_closed():
            return
        await super().launch_shard(gateway, shard_id, initial=initial)

    def words_for(self, interaction: discord.Interaction) -> Words:
        """Return the words of the member who interacted."""
        return words_for(interaction, self.core.labels)

    async def on_message(self, message: discord.Message, /) -> None:
        # No prefix commands exist: skipping their processing keeps a mention from logging
        # CommandNotFound. Cog listeners (the mention trigger) still receive every message.
        return

    async def setup_hook(self) -> None:
        # Names and descriptions in every language the bot speaks, from the same catalogues as the words.
        await self.tree.set_translator(CatalogueTranslator())
        for extension in self._extensions:
            await self.load_extension(extension)
        try:
            await self.sync_commands_if_changed()
        except TRANSIENT_ERRORS as exc:
            # The bot works without a fresh sync (Discord keeps the last one): keep trying in the background.
            log.warning("could not sync commands (%s); trying again in the background", one_line(exc))
            self._background.spawn(self._sync_when_reachable(), name="command-sync")
        if self.settings.webhooks_enabled:
            await self._start_webhooks()
        if self.settings.metrics_port is not None:
            await self._start_metrics(self.settings.metrics_port)
        resumed = await self.core.runner.resume()
        if resumed:
            log.info("resumed %d unfinished jobs", resumed)
        self._background.spawn(self._maintenance(), name="maintenance")
        if self.settings.uses_postgres:
            self._background.spawn(self._watch_database(), name="database-probe")
        heartbeat = Heartbeat(
            heartbeat_path(self.settings), lambda: gateway_connected(self) and self._database_ok
        )
        self._background.spawn(heartbeat.run(), name="heartbeat")

    async def sync_commands_if_changed(self) -> None:
        """Sync the commands where their definition changed since the last sync (a hash in the database).

        One process syncs: the one that takes the database's lock first; another that finds it taken
        leaves the sync to it (several processes share one database and one application).
        """
        async with self.core.db.exclusive("command-sync") as ours:
            if not ours:
                log.info("another process is syncing the commands; not syncing here")
                return
            await self._sync_changed()

    async def _sync_changed(self) -> None:
        guilds: list[discord.Object | None] = [discord.Object(gid) for gid in self.settings.discord_guild_ids]
        for guild in guilds or [None]:
            if guild is not None:
                self.tree.copy_global_to(guild=guild)
            payload = await self._command_payload(guild)
            digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
            key = f"commands:{self.application_id}:{guild.id if guild else 'global'}"
            if await self.core.db.get_meta(key) == digest:
                log.info("commands unchanged for %s; not syncing", guild.id if guild else "global")
                continue
            await self.tree.sync(guild=guild)
            await self.core.db.set_meta(key, digest)
            log.info("synced %d commands to %s", len(payload), guild.id if guild else "all servers (global)")

    async def _command_payload(self, guild: discord.Object | None) -> list[dict[str, object]]:
        """Return the commands as `tree.sync` sends them, translations included (a new one is a change)."""
        commands = self.tree.get_commands(guild=guild)
        translator = self.tree.translator
        if translator is None:
            return [command.to_dict(self.tree) for command in commands]
        return [await command.get_translated_payload(self.tree, translator) for command in commands]

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
        await self.core.runner.shutdown(grace=JOB_GRACE)
        if self.reporter is not None:
            await self.reporter.close()
        if self.webhooks is not None:
            await self.webhooks.stop()
        if self.metrics_listener is not None:
            await self.metrics_listener.stop()
        await self._background.cancel_all()
        await self.core.close()
        await super().close()

    async def health(self) -> dict[str, bool]:
        return {"database": await self.core.db.is_reachable(), "gateway": gateway_connected(self)}

    async def _start_webhooks(self) -> None:
        assert self.settings.webhook_secret is not None
        listener = WebhookListener(
            secret=self.settings.webhook_secret.get_secret_value(),
            port=self.settings.webhook_port,
            providers=[name for name, provider in self.core.providers.items() if provider.webhooks],
            on_delivery=self.core.runner.deliver,
            health=self.health,
            metrics=self.metrics,
            replays=self.core.replays,
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

    async def _start_metrics(self, port: int) -> None:
        listener = MetricsListener(self.metrics.registry, port=port)
        try:
            await listener.start()
        except OSError as exc:
            raise StartupError(
                f"METRICS_PORT {port} cannot be listened on ({exc.strerror}): "
                "another program uses it, or the port needs privileges; choose another port"
            ) from None
        self.metrics_listener = listener

    async def _watch_database(self) -> None:
        """Ask the pool whether it answers, every few seconds; say once when it stops and when it is back."""
        while True:
            await asyncio.sleep(_DATABASE_PROBE_INTERVAL)
            ok = await self.core.db.is_reachable()
            if ok and not self._database_ok:
                log.info("the database answers again")
            self._database_ok = ok

    async def _maintenance(self) -> None:
        """Settle abandoned reservations and prune old rows, hourly (one process at a time on a shared store)."""
        while True:
            try:
                async with self.core.db.exclusive("maintenance") as ours:
                    if ours:
                        await self._maintain()
            except (StoreUnavailable, StorageFull) as exc:
                log.warning("maintenance skipped: the database cannot be used (%s); trying again later", exc)
            except Exception:
                log.exception("maintenance failed; trying again later")
            await asyncio.sleep(_MAINTENANCE_INTERVAL)

    async def _maintain(self) -> None:
        expired = await self.core.quotas.expire()
        # Jobs first: their usage rows can only go once no job points at them.
        pruned = await self.core.jobs.prune(self.settings.usage_retention_days)
        pruned += await self.core.quotas.prune(self.settings.usage_retention_days)
        if expired or pruned:
            log.info("maintenance: %d reservations expired, %d old rows pruned", expired, pruned)
