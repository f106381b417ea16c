"""The sentences members read, rendered from codes exactly as the bot renders them, for assertions."""

from __future__ import annotations

from bot.domain.errors import Refusal
from bot.ui.words import Words


def sentence(refusal: Refusal, **params: str | int) -> str:
    """Return the English sentence of a refusal with its parameters."""
    return Words().refusal(refusal, params)
