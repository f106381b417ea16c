"""A server's rules applied to a request: may this channel run it, may its prompt pass, is its result hidden."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from bot.domain.blocklist import contains_blocked
from bot.domain.errors import BadInput, Refusal
from bot.domain.ports import RulesRepository
from bot.domain.rules import check_allowed
from bot.domain.tasks import Route, Suggestion, TaskKind


class Moderation:
    """Read the rules at each request (an admin's change applies at once, in every process)."""

    def __init__(self, rules: RulesRepository) -> None:
        self._rules = rules

    async def admit(self, guild_id: int, kind: TaskKind, route: Route) -> bool:
        """Refuse a command the channel switches off; return whether its results go behind a spoiler."""
        if not guild_id or route.channel_id is None:
            return False
        rule = check_allowed(
            await self._rules.channel_rules(guild_id), kind, route.channel_id, route.parent_id
        )
        return rule.spoilered(age_restricted=route.age_restricted)

    async def check_prompt(self, guild_id: int, prompt: str) -> None:
        """Refuse a prompt with a blocked phrase (the refusal does not repeat it)."""
        if await self.hides(guild_id, [prompt]):
            raise BadInput(Refusal.BLOCKED_WORDS)

    async def hides(self, guild_id: int, texts: Iterable[str]) -> bool:
        """Tell whether any of the texts has a phrase the server blocks."""
        if not guild_id:
            return False
        phrases = [key for key, _ in await self._rules.blocklist(guild_id)]
        return any(contains_blocked(text, phrases) for text in texts)

    async def hides_any(self, guild_id: int, suggestions: Sequence[Suggestion]) -> bool:
        """Tell whether a described prompt (or its negative prompt) has a phrase the server blocks."""
        texts = [
            text for suggestion in suggestions for text in (suggestion.prompt, suggestion.negative) if text
        ]
        return await self.hides(guild_id, texts)
