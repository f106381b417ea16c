"""Forgetting a member: what is deleted, and the stand-in id that keeps today's use counted without theirs."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

# The user id of usage rows whose member asked to be forgotten, once their day is over.
FORGOTTEN = 0


def pseudonym(secret: bytes, guild_id: int, user_id: int) -> int:
    """Return the stand-in id of a forgotten member's rows of today, in one server.

    Keyed with the bot's own secret (kept in its database), so the member's id cannot be worked back from
    it, while the member's next task today still finds and counts those rows. Negative, so it can never be
    a Discord id.
    """
    digest = hmac.new(secret, f"{guild_id}:{user_id}".encode(), hashlib.sha256).digest()
    return -(int.from_bytes(digest[:7], "big") + 1)


@dataclass(frozen=True, slots=True)
class Forgotten:
    """What /forget-me deleted or made anonymous."""

    tasks: int
    images: int
    prompts: int
    usage: int
