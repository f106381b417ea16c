"""Buttons, pickers and modals. Result buttons are persistent: the job id rides in the custom id."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

import discord

from bot.errors import BadInput, BotError
from bot.interactions import ReportTarget, member_of, reply
from bot.providers.base import TaskKind
from bot.store.jobs import Job
from bot.ui import text

if TYPE_CHECKING:
    from bot.client import ImageBot

log = logging.getLogger(__name__)

# Discord allows 2000 characters in a message; longer prompts go as a text file.
_MESSAGE_LIMIT = 2000


def _bot(interaction: discord.Interaction) -> ImageBot:
    return cast("ImageBot", interaction.client)


async def _answering_errors(interaction: discord.Interaction, action: Awaitable[object]) -> None:
    """Run a component's action; a BotError becomes its one sentence, anything else is logged."""
    try:
        await action
    except BotError as exc:
        await reply(interaction, text.error_sentence(exc))
    except Exception as exc:
        log.exception("component %s failed", interaction.data.get("custom_id") if interaction.data else "?")
        await reply(interaction, text.error_sentence(exc))


JobAction = Callable[[discord.Interaction, str], Awaitable[None]]


async def _finished_job(interaction: discord.Interaction, job_id: str, kind: TaskKind) -> Job:
    """Read the job a button names; a button of another kind of job is as good as gone."""
    job = await _bot(interaction).service.job(job_id)
    if job.kind is not kind:
        # Only a hand-made custom id gets here: the bot puts each action under its own kind of result.
        raise BadInput(text.JOB_GONE)
    return job


# Every action answers Discord before it reads the database: the 3-second window allows nothing slow first.


async def _imagine_this(interaction: discord.Interaction, job_id: str) -> None:
    """Run /imagine with a describe result's prompt."""
    await interaction.response.defer(thinking=True)
    job = await _finished_job(interaction, job_id, TaskKind.DESCRIBE)
    await _bot(interaction).service.imagine(
        member_of(interaction), job.result_text or "", [], ReportTarget.from_interaction(interaction)
    )


async def _show_as_text(interaction: discord.Interaction, job_id: str) -> None:
    """Send the prompt as plain text, which phones copy more easily than a code block."""
    await interaction.response.defer(ephemeral=True, thinking=True)
    job = await _finished_job(interaction, job_id, TaskKind.DESCRIBE)
    prompt = job.result_text or ""
    if len(prompt) <= _MESSAGE_LIMIT:
        await interaction.followup.send(prompt, ephemeral=True)
    else:
        await interaction.followup.send(
            file=discord.File(io.BytesIO(prompt.encode()), filename="prompt.txt"), ephemeral=True
        )


async def _run_again(interaction: discord.Interaction, job_id: str) -> None:
    """Run an imagine again with the same prompt and references."""
    await interaction.response.defer(thinking=True)
    job = await _finished_job(interaction, job_id, TaskKind.IMAGINE)
    await _bot(interaction).service.rerun(
        job, member_of(interaction), ReportTarget.from_interaction(interaction)
    )


async def _edit_this(interaction: discord.Interaction, job_id: str) -> None:
    """Ask for a new prompt, then imagine with the generated image as the reference."""
    service = _bot(interaction).service

    async def run(modal_interaction: discord.Interaction, prompt: str) -> None:
        prompt = service.clean_prompt(prompt)
        await modal_interaction.response.defer(thinking=True)
        job = await _finished_job(modal_interaction, job_id, TaskKind.IMAGINE)
        await service.edit_result(
            job, member_of(modal_interaction), prompt, ReportTarget.from_interaction(modal_interaction)
        )

    # The modal is the answer, so it goes first; the job is read once the prompt comes back.
    await interaction.response.send_modal(PromptModal(run))


# action in the custom id -> (label, emoji, what a click does)
_ACTIONS: dict[str, tuple[str, str, JobAction]] = {
    "imagine": ("Imagine this", "🎨", _imagine_this),
    "text": ("Show as text", "📋", _show_as_text),
    "again": ("Run again", "🔁", _run_again),
    "edit": ("Edit this", "✏️", _edit_this),
}


class JobButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=r"job:(?P<action>imagine|text|again|edit):(?P<job_id>[0-9a-f]{32})",
):
    """A button under a finished job's result, found again by its custom id after any restart."""

    def __init__(self, action: str, job_id: str) -> None:
        label, emoji, _ = _ACTIONS[action]
        super().__init__(
            discord.ui.Button(
                style=discord.ButtonStyle.secondary,
                label=label,
                emoji=emoji,
                custom_id=f"job:{action}:{job_id}",
            )
        )
        self.action = action
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> JobButton:
        return cls(match["action"], match["job_id"])

    async def callback(self, interaction: discord.Interaction) -> None:
        # Everything a button needs is read from the job row, so a click works after any restart.
        await _answering_errors(interaction, _ACTIONS[self.action][2](interaction, self.job_id))


PERSISTENT_BUTTONS: tuple[type[JobButton], ...] = (JobButton,)


def result_view(job: Job) -> discord.ui.View:
    """Return the buttons under a finished job's result."""
    view = discord.ui.View(timeout=None)
    actions = ("imagine", "text") if job.kind is TaskKind.DESCRIBE else ("again", "edit")
    for action in actions:
        view.add_item(JobButton(action, job.id))
    return view


PromptHandler = Callable[[discord.Interaction, str], Awaitable[None]]


class PromptModal(discord.ui.Modal, title=text.IMAGINE_MODAL_TITLE):
    """Ask for a prompt, then hand it on."""

    prompt: discord.ui.TextInput[PromptModal] = discord.ui.TextInput(
        label=text.IMAGINE_MODAL_LABEL,
        style=discord.TextStyle.paragraph,
        placeholder=text.IMAGINE_MODAL_PLACEHOLDER,
        min_length=1,
        max_length=2000,
    )

    def __init__(self, on_prompt: PromptHandler) -> None:
        super().__init__(timeout=600)
        self._on_prompt = on_prompt

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await _answering_errors(interaction, self._on_prompt(interaction, self.prompt.value))


PickHandler = Callable[[discord.Interaction, int], Awaitable[None]]


class ImagePicker(discord.ui.View):
    """A select menu of a message's images that only the member who asked may use."""

    def __init__(self, invoker_id: int, labels: Sequence[str], on_pick: PickHandler) -> None:
        super().__init__(timeout=300)
        self._invoker_id = invoker_id
        self._on_pick = on_pick
        select: discord.ui.Select[ImagePicker] = discord.ui.Select(
            placeholder=text.PICK_PLACEHOLDER,
            options=[
                discord.SelectOption(label=label[:100], value=str(i)) for i, label in enumerate(labels[:25])
            ],
        )
        select.callback = self._picked  # type: ignore[method-assign]
        self._select = select
        self.add_item(select)

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        if interaction.user.id != self._invoker_id:
            await reply(interaction, text.ONLY_INVOKER)
            return False
        return True

    async def _picked(self, interaction: discord.Interaction) -> None:
        self.stop()
        await _answering_errors(interaction, self._on_pick(interaction, int(self._select.values[0])))
