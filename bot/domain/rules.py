"""A server's rules: which commands each channel allows, and when results are shown behind a spoiler."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from bot.domain.errors import BadInput, Refusal
from bot.domain.tasks import TaskKind

# The rule a channel without its own follows (set by `/rules channel` without a channel).
SERVER_DEFAULT = 0
# A refusal names at most this many channels that allow the command.
_NAMED_CHANNELS = 3


class SpoilerRule(enum.StrEnum):
    OFF = "off"
    OUTSIDE_AGE_RESTRICTED = "outside-age-restricted"  # Discord expects adult content only in those
    ALWAYS = "always"


@dataclass(frozen=True, slots=True)
class ChannelRule:
    channel_id: int  # SERVER_DEFAULT for the server's own rule
    describe: bool = True
    imagine: bool = True
    spoilers: SpoilerRule = SpoilerRule.OFF

    def allows(self, kind: TaskKind) -> bool:
        return self.describe if kind is TaskKind.DESCRIBE else self.imagine

    def spoilered(self, *, age_restricted: bool) -> bool:
        if self.spoilers is SpoilerRule.ALWAYS:
            return True
        return self.spoilers is SpoilerRule.OUTSIDE_AGE_RESTRICTED and not age_restricted


def rule_for(rules: Mapping[int, ChannelRule], channel_id: int, parent_id: int | None = None) -> ChannelRule:
    """Return the rule a channel follows: its own, else its parent's (a thread's channel), else the server's."""
    for key in (channel_id, parent_id, SERVER_DEFAULT):
        if key is not None and key in rules:
            return rules[key]
    return ChannelRule(SERVER_DEFAULT)


def check_allowed(
    rules: Mapping[int, ChannelRule], kind: TaskKind, channel_id: int, parent_id: int | None = None
) -> ChannelRule:
    """Return the channel's rule, or refuse a command it switches off, naming where it is allowed."""
    rule = rule_for(rules, channel_id, parent_id)
    if rule.allows(kind):
        return rule
    allowing = sorted(
        key for key, other in rules.items() if key not in (SERVER_DEFAULT, channel_id) and other.allows(kind)
    )
    if allowing:
        channels = ", ".join(f"<#{key}>" for key in allowing[:_NAMED_CHANNELS])
        raise BadInput(Refusal.COMMAND_OFF_HERE, kind=kind.value, channels=channels)
    if rule_for(rules, SERVER_DEFAULT).allows(kind):
        raise BadInput(Refusal.COMMAND_OFF_HERE_ONLY, kind=kind.value)
    raise BadInput(Refusal.COMMAND_OFF_EVERYWHERE, kind=kind.value)
