"""The disk fills up while the bot runs: the task in hand fails cleanly and is refunded; the bot stays up.

`PRAGMA max_page_count` makes SQLite refuse to grow the file with SQLITE_FULL, the very error a full
disk gives, so the real bot (against the fake Discord) meets a full disk mid-run without filling one.
"""

from __future__ import annotations

import io
import logging
import os

import pytest
from PIL import Image

from bot.ui.words import STORAGE_FULL, Words
from tests.conftest import Harness


def noisy_png(side: int = 300) -> bytes:
    """A picture that does not compress: storing it needs many new database pages."""
    buffer = io.BytesIO()
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(buffer, "PNG")
    return buffer.getvalue()


async def test_a_full_disk_fails_the_task_cleanly_refunds_it_and_the_bot_stays_up(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    bot = await harness.start_bot(describe_provider="freepik")
    (pages,) = await bot.core.db.fetchone("PRAGMA page_count") or (0,)
    await bot.core.db.execute(f"PRAGMA max_page_count = {int(pages)}")  # not one page more: the disk is full

    with caplog.at_level(logging.INFO):
        token = await harness.interact(bot, harness.describe_payload(noisy_png()))
    message = harness.discord.original_reply(token)
    assert message["content"] == Words().say(STORAGE_FULL)
    errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert len(errors) == 1, [record.getMessage() for record in errors]
    assert errors[0].name == "bot.store.sqlite.database"
    assert "cannot be written" in errors[0].getMessage()
    assert errors[0].exc_info is None  # one line, no traceback
    assert harness.freepik.count("POST") == 0  # nothing was sent to the provider
    usage = await bot.core.db.fetchall("SELECT state FROM usage")
    assert [row["state"] for row in usage] == ["refunded"]

    # Space again: the same bot, still connected, carries on.
    await bot.core.db.execute("PRAGMA max_page_count = 1073741823")
    token = await harness.interact(bot, harness.describe_payload(noisy_png()))
    done = harness.discord.original_reply(token)
    assert done["embeds"][0]["title"] == "Image to prompt · Done"
