"""What buttons, pickers and modals look like. What they do lives with the commands, in `cogs/`.

Result buttons are persistent: the action and the job id ride in the custom id, so a click works after
any restart; the cog that owns an action registers a DynamicItem for its pattern.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Self

import discord

from bot.domain.tasks import Job, TaskKind
from bot.ui.words import (
    CANCEL_ANYWAY_LABEL,
    CANCEL_LABEL,
    FORGET_LABEL,
    IMAGINE_MODAL_LABEL,
    IMAGINE_MODAL_PLACEHOLDER,
    IMAGINE_MODAL_TITLE,
    N_,
    PICK_PLACEHOLDER,
    Words,
)

# action in the custom id -> (label, emoji); "imagine2".."imagine4" imagine the 2nd..4th suggestion.
JOB_ACTIONS: dict[str, tuple[str, str]] = {
    "imagine": (N_("Imagine this"), "🎨"),
    "text": (N_("Show as text"), "📋"),
    "again": (N_("Run again"), "🔁"),
    "edit": (N_("Edit this"), "✏️"),
    "cancel": (CANCEL_LABEL, "✖️"),
    "cancelsure": (CANCEL_ANYWAY_LABEL, "✖️"),
}
# Buttons that stop something, shown in red.
_DANGER_ACTIONS = frozenset({"cancelsure"})
IMAGINE_NUMBER = N_("Imagine {number}")
IMAGINE_ACTIONS = ("imagine", "imagine2", "imagine3", "imagine4")


def suggestion_index(action: str) -> int:
    """Return which suggestion an imagine action is for (0 for "imagine")."""
    return IMAGINE_ACTIONS.index(action)


_JOB_ID = r"(?P<job_id>[0-9a-f]{32})"


def job_button_template(*actions: str) -> str:
    """Return the custom id pattern of the given result actions (for a DynamicItem's template)."""
    return rf"job:(?P<action>{'|'.join(actions)}):{_JOB_ID}"


class JobButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=job_button_template(*JOB_ACTIONS, *IMAGINE_ACTIONS),
):
    """A result button found again by its custom id after any restart: its action and its job.

    Each cog subclasses it with the template of its own actions and says in `callback` what a click does.
    """

    def __init__(self, action: str, job_id: str) -> None:
        super().__init__(job_button(action, job_id))
        self.action = action
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> Self:
        return cls(match["action"], match["job_id"])


def job_custom_id(action: str, job_id: str) -> str:
    return f"job:{action}:{job_id}"


def job_button(
    action: str, job_id: str, words: Words | None = None, *, numbered: bool = False
) -> discord.ui.Button[discord.ui.View]:
    """Return a result button as it is shown; clicks reach the DynamicItem of its action's cog."""
    words = words or Words()
    if action in IMAGINE_ACTIONS and (numbered or action != "imagine"):
        label, emoji = (
            words.say(IMAGINE_NUMBER, number=suggestion_index(action) + 1),
            JOB_ACTIONS["imagine"][1],
        )
    else:
        label, emoji = words.say(JOB_ACTIONS[action][0]), JOB_ACTIONS[action][1]
    style = discord.ButtonStyle.danger if action in _DANGER_ACTIONS else discord.ButtonStyle.secondary
    return discord.ui.Button(style=style, label=label, emoji=emoji, custom_id=job_custom_id(action, job_id))


def result_actions(job: Job, *, can_imagine: bool) -> tuple[str, ...]:
    """Return the buttons under a finished job, in order; no Imagine button where nothing can generate."""
    if job.kind is TaskKind.IMAGINE:
        return ("again", "edit")
    imagine = IMAGINE_ACTIONS[: max(1, len(job.suggestions))] if can_imagine else ()
    return (*imagine, "text")


def result_view(job: Job, words: Words, *, can_imagine: bool) -> discord.ui.View:
    """Return the buttons under a finished job's result."""
    numbered = len(job.suggestions) > 1
    return _sent_only(
        job_button(action, job.id, words, numbered=numbered)
        for action in result_actions(job, can_imagine=can_imagine)
    )


def cancel_view(job: Job, words: Words) -> discord.ui.View:
    """Return the Cancel button under a queued or running job."""
    return _sent_only([job_button("cancel", job.id, words)])


def cancel_anyway_view(job_id: str, words: Words) -> discord.ui.View:
    """Return the button that cancels a task its provider already has (and that therefore counts)."""
    return _sent_only([job_button("cancelsure", job_id, words)])


FORGET_CUSTOM_ID = "forget-me:confirm"


def forget_view(words: Words) -> discord.ui.View:
    """Return the button that confirms /forget-me."""
    return _sent_only(
        [
            discord.ui.Button(
                style=discord.ButtonStyle.danger,
                label=words.say(FORGET_LABEL),
                emoji="🗑️",
                custom_id=FORGET_CUSTOM_ID,
            )
        ]
    )


def _sent_only(buttons: Iterable[discord.ui.Button[discord.ui.View]]) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    for button in buttons:
        view.add_item(button)
    # Stopped: discord.py then only sends it, rather than keeping a copy per message in memory; the
    # clicks are handled by the DynamicItems the cogs register.
    view.stop()
    return view


PromptHandler = Callable[[discord.Interaction, str], Awaitable[None]]


class PromptModal(discord.ui.Modal):
    """Ask for a prompt, then hand it on."""

    def __init__(self, words: Words, on_prompt: PromptHandler) -> None:
        super().__init__(title=words.say(IMAGINE_MODAL_TITLE), timeout=600)
        self.prompt: discord.ui.TextInput[PromptModal] = discord.ui.TextInput(
            label=words.say(IMAGINE_MODAL_LABEL),
            style=discord.TextStyle.paragraph,
            placeholder=words.say(IMAGINE_MODAL_PLACEHOLDER),
            min_length=1,
            max_length=2000,
        )
        self.add_item(self.prompt)
        self._on_prompt = on_prompt

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await self._on_prompt(interaction, self.prompt.value)


PickHandler = Callable[[discord.Interaction, int], Awaitable[None]]
Refuse = Callable[[discord.Interaction], Awaitable[None]]


class ImagePicker(discord.ui.View):
    """A select menu of a message's images that only the member who asked may use."""

    def __init__(
        self, words: Words, invoker_id: int, labels: Sequence[str], on_pick: PickHandler, refuse: Refuse
    ) -> None:
        super().__init__(timeout=300)
        self._invoker_id = invoker_id
        self._on_pick = on_pick
        self._refuse = refuse
        select: discord.ui.Select[ImagePicker] = discord.ui.Select(
            placeholder=words.say(PICK_PLACEHOLDER),
            options=[
                discord.SelectOption(label=label[:100], value=str(i)) for i, label in enumerate(labels[:25])
            ],
        )
        select.callback = self._picked  # type: ignore[method-assign]
        self._select = select
        self.add_item(select)

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        if interaction.user.id != self._invoker_id:
            await self._refuse(interaction)
            return False
        return True

    async def _picked(self, interaction: discord.Interaction) -> None:
        self.stop()
        await self._on_pick(interaction, int(self._select.values[0]))
