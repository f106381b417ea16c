"""A file the running bot touches while its gateway is connected, for container health checks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import discord

from bot.settings import Settings

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL = 30.0
# Three missed beats: a gateway reconnect (seconds) passes, a dead connection (minutes) does not.
DEFAULT_MAX_AGE = 3 * HEARTBEAT_INTERVAL
_LOOK_EVERY = 1.0


def heartbeat_path(settings: Settings) -> Path:
    """Return where the heartbeat lives: next to the database, so it shares its volume.

    A process that runs some of the shards (SHARD_IDS) has its own file, so that two processes on one
    machine (or one volume) never vouch for each other.
    """
    if settings.shard_ids:
        return settings.database_path.parent / f"heartbeat-shards-{'-'.join(map(str, settings.shard_ids))}"
    return settings.database_path.parent / "heartbeat"


def gateway_connected(client: discord.Client) -> bool:
    """Return whether the client is ready and its gateway websockets (every shard's) are open right now."""
    # `is_ready()` stays true across a reconnect; the websockets say whether they are up at this moment.
    if not client.is_ready() or client.is_closed():
        return False
    if isinstance(client, discord.AutoShardedClient):
        shards = client.shards
        return bool(shards) and not any(shard.is_closed() for shard in shards.values())
    ws = client.ws
    return ws is not None and ws.open


class Heartbeat:
    """Write the current unix time to a file every `interval` seconds while `is_alive()` holds.

    Run it as one of the bot's kept background tasks; cancelling it removes the file.
    """

    def __init__(
        self,
        path: Path,
        is_alive: Callable[[], bool],
        *,
        interval: float = HEARTBEAT_INTERVAL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self._is_alive = is_alive
        self._interval = interval
        self._clock = clock

    async def run(self) -> None:
        """Beat until cancelled; the file is removed at the start and the end, so only a live bot has one."""
        await asyncio.to_thread(self._remove)
        last_beat: float | None = None
        try:
            while True:
                now = self._clock()
                if not self._is_alive():
                    if last_beat is not None:
                        # Unhealthy from the moment the connection drops, not minutes later when the
                        # file would have grown old: the health check then says "not connected".
                        await asyncio.to_thread(self._remove)
                    last_beat = None  # beat again as soon as the connection is back
                elif last_beat is None or now - last_beat >= self._interval:
                    try:
                        await asyncio.to_thread(self._write, now)
                        last_beat = now
                    except OSError as exc:
                        # A full or read-only disk must not stop the bot; the health check will say so.
                        log.warning("cannot write the heartbeat %s: %s", self.path, exc.strerror)
                # Looking often costs nothing and makes the first beat follow the connection closely.
                await asyncio.sleep(min(self._interval, _LOOK_EVERY))
        finally:
            with contextlib.suppress(OSError):
                self._remove()

    def _write(self, now: float) -> None:
        # Write and rename, so a reader never sees a half-written file.
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(self.path.name + ".partial")
        partial.write_text(f"{now:.3f}\n", encoding="ascii")
        os.replace(partial, self.path)

    def _remove(self) -> None:
        self.path.unlink(missing_ok=True)


def heartbeat_age(path: Path, *, now: float | None = None) -> float | None:
    """Return how many seconds ago the heartbeat was written, or None when there is none to read."""
    try:
        written = float(path.read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        return None
    return (time.time() if now is None else now) - written
