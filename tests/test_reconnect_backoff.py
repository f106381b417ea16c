"""Discord unreachable for long: the waits between attempts double, with jitter, and never pass the cap."""

from __future__ import annotations

import discord

from bot.discord.connection import MAX_RETRY_WAIT, CappedBackoff, install_connection_policy


def test_the_waits_double_up_to_the_cap_and_stay_there() -> None:
    backoff = CappedBackoff()
    # The jitter draws between 0 and the current ceiling: draw the ceiling itself, the longest wait possible.
    backoff._randfunc = lambda _low, high: high  # type: ignore[method-assign,assignment]
    waits = [backoff.delay() for _ in range(16)]
    # discord.py's own ceiling goes on to 1,024 s (17 minutes without a word between attempts).
    assert waits == [2, 4, 8, 16, 32] + [MAX_RETRY_WAIT] * 11


def test_discord_py_reconnects_with_the_capped_backoff() -> None:
    install_connection_policy()
    assert discord.client.ExponentialBackoff is CappedBackoff  # type: ignore[attr-defined]
    assert discord.shard.ExponentialBackoff is CappedBackoff  # type: ignore[attr-defined]
