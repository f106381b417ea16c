"""What buttons, pickers and modals look like. What they do lives with the commands, in `cogs/`.

Result buttons are persistent: the action and the job id ride in the custom id, so a click works after
any restart; the cog that owns an action registers a DynamicItem for its pattern.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import discord

from bot.domain.tasks import Job, TaskKind
from bot.ui.words import (
    IMAGINE_MODAL_LABEL,
    IMAGINE_MODAL_PLACEHOLDER,
    IMAGINE_MODAL_TITLE,
    N_,
    PICK_PLACEHOLDER,
    Words,
)

# action in the custom id -> (label, emoji)
JOB_ACTIONS: dict[str, tuple[str, str]] = {
    "imagine": (N_("Imagine this"), "🎨"),
    "text": (N_("Show as text"), "📋"),
    "again": (N_("Run again"), "🔁"),
    "edit": (N_("Edit this"), "✏️"),
}
# The buttons under each kind of finished job, in order.
RESULT_ACTIONS = {TaskKind.DESCRIBE: ("imagine", "text"), TaskKind.IMAGINE: ("again", "edit")}
_JOB_ID = r"(?P<job_id>[0-9a-f]{32})"


def job_button_template(*actions: str) -> str:
    """Return the custom id pattern of the given result actions (for a DynamicItem's template)."""
    return rf"job:(?P<action>{'|'.join(actions)}):{_JOB_ID}"


def job_custom_id(action: str, job_id: str) -> str:
    return f"job:{action}:{job_id}"


def job_button(action: str, job_id: str, words: Words | None = None) -> discord.ui.Button[discord.ui.View]:
    """Return a result button as it is shown; clicks reach the DynamicItem of its action's cog."""
    label, emoji = JOB_ACTIONS[action]
    return discord.ui.Button(
        style=discord.ButtonStyle.secondary,
        label=(words or Words()).say(label),
        emoji=emoji,
        custom_id=job_custom_id(action, job_id),
    )


def result_view(job: Job, words: Words) -> discord.ui.View:
    """Return the buttons under a finished job's result."""
    view = discord.ui.View(timeout=None)
    for action in RESULT_ACTIONS[job.kind]:
        view.add_item(job_button(action, job.id, words))
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
