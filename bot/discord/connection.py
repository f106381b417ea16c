"""How the bot keeps its connection to Discord: waits that stay short, one line per attempt, no voice.

discord.py reconnects by itself, but its waits grow to 17 minutes and every attempt logs a full
traceback. An admin whose network blips needs neither: the bot retries within a minute and says so
in one WARNING line each time. The bot has no voice, so discord.py's warnings about missing voice
libraries do not apply to it and are switched off here, the one place that knows why.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re

import aiohttp
import discord
import discord.client
import discord.shard
from discord.backoff import ExponentialBackoff
from discord.utils import MISSING

log = logging.getLogger(__name__)

# The longest wait between two attempts to reach Discord.
MAX_RETRY_WAIT = 60.0
_FIRST_RETRY_WAIT = 1.0


class CappedBackoff(ExponentialBackoff[bool]):
    """discord.py's jittered exponential backoff, never waiting longer than MAX_RETRY_WAIT."""

    def delay(self) -> float:
        return min(float(super().delay()), MAX_RETRY_WAIT)


class _OneLineReconnects(logging.Filter):
    """Turn discord.py's reconnect tracebacks into one WARNING line that says what failed and the wait."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(("Attempting a reconnect", "Failed to connect for shard")):
            return True
        error = record.exc_info[1] if record.exc_info else None
        # "Attempting a reconnect in 12.34s", "Attempting a reconnect for shard ID 3 in 12.34s", or
        # "Failed to connect for shard_id: 3. Retrying..." (the sharded client waits 5 s then).
        attempt = record.getMessage()
        shard = _SHARD.search(attempt)
        wait = _WAIT.search(attempt)
        then = f"attempting a reconnect in {wait.group(1)}s" if wait else "attempting a reconnect in 5s"
        where = f" (shard {shard.group(1)})" if shard else ""
        record.msg = f"Discord connection lost ({one_line(error)}); {then}{where}"
        record.args = None
        record.exc_info = None
        record.exc_text = None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


_SHARD = re.compile(r"shard(?: ID|_id:) (\d+)")
_WAIT = re.compile(r" in ([0-9.]+)s")

_installed = False


def install_connection_policy() -> None:
    """Cap discord.py's reconnect waits, make each attempt one line, and silence the voice warnings."""
    global _installed  # noqa: PLW0603 (installed once per process, like logging)
    if _installed:
        return
    _installed = True
    # discord.py builds its backoff from these module names inside connect(); the subclass only caps it.
    discord.client.ExponentialBackoff = CappedBackoff  # type: ignore[attr-defined,assignment]
    discord.shard.ExponentialBackoff = CappedBackoff  # type: ignore[attr-defined,assignment]
    discord.VoiceClient.warn_nacl = False
    discord.VoiceClient.warn_dave = False
    for name in ("discord.client", "discord.shard"):
        logging.getLogger(name).addFilter(_OneLineReconnects())


def one_line(error: BaseException | None) -> str:
    """Return an error as one short line: its type and its first words, without a traceback."""
    if error is None:
        return "no detail"
    if isinstance(error, aiohttp.ClientConnectorError) and error.os_error is not None:
        # asyncio puts the address in strerror; the errno's own words are plainer ("Connection refused").
        reason = os.strerror(error.os_error.errno) if error.os_error.errno else str(error.os_error)
        return f"cannot connect to {error.host}:{error.port}: {reason}"
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


# Faults of reaching Discord, not of the bot: worth waiting out.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    aiohttp.ClientError,
    TimeoutError,
    discord.GatewayNotFound,
    discord.DiscordServerError,
)


async def login_until_reachable(bot: discord.Client, token: str) -> None:
    """Log in, retrying while Discord cannot be reached; a refused token (LoginFailure) is raised at once."""
    backoff = CappedBackoff()
    while True:
        try:
            await bot.login(token)
            return
        except TRANSIENT_ERRORS as exc:
            # The backoff's full jitter keeps many restarted bots from knocking on Discord's door in step.
            wait = max(_FIRST_RETRY_WAIT, backoff.delay())
            log.warning("Discord cannot be reached (%s); trying again in %.0f s", one_line(exc), wait)
            # The failed login left its HTTP session open; the next attempt makes a new one.
            await bot.http.close()
            bot.http.connector = MISSING
            await asyncio.sleep(wait)


# Gateway close codes that no retry can mend: the admin must change a setting.
FATAL_CLOSE_CODES = {
    4004: "Discord refused DISCORD_TOKEN: copy the bot token again from the developer portal",
    4010: "Discord refused the shard settings (SHARD_IDS / SHARD_COUNT): check them",
    4011: "Discord requires this bot to be sharded now: set SHARD_COUNT (see the README)",
    4012: "Discord no longer accepts this gateway version: upgrade the bot",
    4013: "Discord refused the bot's intents: upgrade the bot",
    4014: "MENTION_TRIGGER needs the Message Content intent: switch it on in the developer portal "
    "(Bot > Privileged Gateway Intents)",
}
