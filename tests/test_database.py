"""The database layer: a transaction cancelled at any point never leaves the write lock held."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bot.store.sqlite.database import Database


async def test_a_transaction_cancelled_while_beginning_releases_the_write_lock(tmp_path: Path) -> None:
    path = tmp_path / "bot.sqlite3"
    first = await Database.open(path)
    second = await Database.open(path)
    try:
        for _ in range(20):

            async def write() -> None:
                async with first.transaction() as conn:
                    await conn.execute(
                        "INSERT INTO meta (key, value) VALUES ('k', 'v') ON CONFLICT DO NOTHING"
                    )

            task = asyncio.create_task(write())
            await asyncio.sleep(0)  # cancelled while BEGIN is on its way (a shutdown mid-maintenance)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            # Another connection (a restarted bot) can write at once.
            async with asyncio.timeout(2):
                await second.set_meta("other", "value")
    finally:
        await first.close()
        await second.close()
