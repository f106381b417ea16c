"""Webhooks across processes: the replay guard all processes share, and the inbox that takes a delivery
to the process that drives its task.

A provider posts to one public URL; behind a load balancer any process may receive the delivery. The
receiving process verifies it as always (signature, timestamp), then asks the shared guard whether any
process saw its id lately (`PgReplayGuard`), and hands a delivery for a task driven elsewhere to the
inbox: a row in `webhook_inbox` and a NOTIFY on the schema's channel, in one transaction. Every process
LISTENs on that channel; the one driving the task takes the row (DELETE ... RETURNING: once) and feeds
the delivery to the task's drive. A delivery that arrives before its task id is saved stays in the
inbox until its driver starts listening for that task and takes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import asyncpg

from bot.domain.errors import StoreUnavailable
from bot.store.postgres.database import PgDatabase

log = logging.getLogger(__name__)

# NOTIFY payloads are short: a task id longer than this is not relayed (polling still finds the end).
_MAX_TASK_ID = 200
_RELISTEN_WAIT = (0.5, 1.0, 2.0, 5.0, 10.0)


class PgReplayGuard:
    """Webhook ids seen within the window, kept in the database so a replay is caught by any process."""

    def __init__(self, db: PgDatabase) -> None:
        self._db = db

    async def seen_before(self, webhook_id: str, now: float, window: float) -> bool:
        """Record the id; return True when some process saw it within the window.

        One statement: the insert wins for exactly one of two processes racing with the same id; an old
        sighting (outside the window) is refreshed and counts as new, as the in-memory guard does.
        """
        inserted = await self._db.fetchval(
            "INSERT INTO webhook_seen (webhook_id, seen_at) VALUES ($1, $2) ON CONFLICT (webhook_id) "
            "DO UPDATE SET seen_at = excluded.seen_at WHERE webhook_seen.seen_at < $3 RETURNING 1",
            webhook_id,
            now,
            now - window,
        )
        return inserted is None

    async def forget(self, webhook_id: str) -> None:
        """Drop the id so the provider's retry of a delivery that failed here is accepted."""
        await self._db.execute("DELETE FROM webhook_seen WHERE webhook_id = $1", webhook_id)


class PgDeliveryRelay:
    """The webhook inbox: post a delivery for whichever process drives its task, take those for ours."""

    def __init__(self, db: PgDatabase, *, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock
        self._channel = db.channel("webhooks")
        self._on_posted: Callable[[str, str], None] | None = None
        self._listening: asyncpg.Connection | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._lost = asyncio.Event()

    async def post(self, provider: str, task_id: str, body: bytes) -> bool:
        """Leave a delivery for the task's driver and wake every process; False when it cannot be relayed."""
        if len(task_id) > _MAX_TASK_ID or "\n" in provider:
            return False
        async with self._db.transaction() as conn:
            await conn.execute(
                "INSERT INTO webhook_inbox (provider, task_id, body, received_at) VALUES ($1, $2, $3, $4)",
                provider,
                task_id,
                body,
                self._clock(),
            )
            # Sent at commit, after the row is visible to the process it wakes.
            await conn.execute("SELECT pg_notify($1, $2)", self._channel, f"{provider}\n{task_id}")
        return True

    async def take(self, provider: str, task_id: str) -> list[bytes]:
        """Take (once, whichever process asks first) the deliveries left for a task, oldest first."""
        rows = await self._db.fetch(
            "DELETE FROM webhook_inbox WHERE provider = $1 AND task_id = $2 RETURNING id, body",
            provider,
            task_id,
        )
        return [bytes(row["body"]) for row in sorted(rows, key=lambda row: int(row["id"]))]

    async def listen(self, on_posted: Callable[[str, str], None]) -> None:
        """Call `on_posted(provider, task_id)` for every delivery any process posts, until `close`.

        The listening connection is kept: when it drops it is opened again (each attempt one WARNING
        line); deliveries posted meanwhile wait in the inbox and the drives' polls carry on.
        """
        self._on_posted = on_posted
        try:
            await self._listen_once()
        except StoreUnavailable:
            self._lost.set()  # the supervisor tries again, one line per attempt
        self._supervisor = asyncio.create_task(self._keep_listening(), name="webhook-relay-listener")

    async def close(self) -> None:
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
            self._supervisor = None
        conn, self._listening = self._listening, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)

    async def _listen_once(self) -> None:
        self._lost.clear()
        self._listening = await self._db.listen(self._channel, self._notified, self._lost.set)

    def _notified(self, payload: str) -> None:
        provider, _, task_id = payload.partition("\n")
        if self._on_posted is not None and task_id:
            self._on_posted(provider, task_id)

    async def _keep_listening(self) -> None:
        while True:
            await self._lost.wait()
            for attempt in range(1_000_000):
                wait = _RELISTEN_WAIT[min(attempt, len(_RELISTEN_WAIT) - 1)]
                log.warning(
                    "the webhook relay lost its connection to DATABASE_URL %s; listening again in %.1f s",
                    self._db.shown,
                    wait,
                )
                await asyncio.sleep(wait)
                try:
                    await self._listen_once()
                    break
                except StoreUnavailable:
                    continue
