"""Pure functions from a job to what its Discord message shows; no I/O."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field

import discord

from bot.domain.tasks import DescribeStyle, Fault, ImageBytes, Job, JobState, Suggestion, TaskKind
from bot.ui.words import (
    CANCELLED_RUNNING_NOTE,
    CANCELLED_WAITING_NOTE,
    HIDDEN_NOTE,
    N_,
    NEGATIVE_PROMPT,
    STYLE_NAMES,
    SUGGESTION_NUMBER,
    Words,
    relative_time,
)

# Discord's limit for an embed description; the code fence and a note take a little of it.
_DESCRIPTION_LIMIT = 4096
_PROMPT_ROOM = _DESCRIPTION_LIMIT - 120
_COLOURS = {
    JobState.COMPLETED: discord.Colour.green(),
    JobState.FAILED: discord.Colour.red(),
    JobState.CANCELLED: discord.Colour.light_grey(),
}
THUMBNAIL_NAME = "input.png"
# Discord refuses a whole message whose files weigh more than the server's upload limit (10 MiB without
# boosts); a result over it is left off, so the end is still shown rather than the edit failing.
UPLOAD_LIMIT = 10 * 1024 * 1024
# The prompt is the image's alt text; Discord keeps at most this much of it.
_ALT_TEXT_LIMIT = 1024
RESULT_TOO_LARGE = N_("The generated image is larger than Discord lets me attach here, so it is not shown.")
THUMBNAIL_ALT = N_("the described image")


@dataclass(slots=True)
class Rendered:
    """One message edit: the embed and the files to attach (files only on the final edit)."""

    embed: discord.Embed
    files: list[discord.File] = field(default_factory=list)
    content: str | None = None


def code_block(prompt: str, room: int = _PROMPT_ROOM, *, spoiler: bool = False) -> str:
    """Put a prompt in a copyable code block that its own backticks cannot break (behind a spoiler)."""
    safe = prompt.replace("```", "`\u200b``")
    if spoiler:
        safe = safe.replace("||", "|\u200b|")  # its own bars cannot end the spoiler early
    if len(safe) > room:
        safe = safe[:room] + "…"
    block = f"```\n{safe}\n```"
    return f"||{block}||" if spoiler else block


def described(suggestions: Sequence[Suggestion], words: Words, *, hidden: bool = False) -> str:
    """Show a describe's prompts as copyable blocks: numbered when several, a negative prompt in its own."""
    blocks = sum(2 if s.negative else 1 for s in suggestions) or 1
    # Every block gets an equal share of the description, after its heading and fence.
    room = (_PROMPT_ROOM - 40 * blocks) // blocks
    parts: list[str] = []
    for number, suggestion in enumerate(suggestions, start=1):
        if len(suggestions) > 1:
            parts.append(f"**{words.say(SUGGESTION_NUMBER, number=number)}**")
        parts.append(code_block(suggestion.prompt, room, spoiler=hidden))
        if suggestion.negative:
            parts.append(f"**{words.say(NEGATIVE_PROMPT)}**")
            parts.append(code_block(suggestion.negative, room, spoiler=hidden))
    return "\n".join(parts)


def _result_files(job: Job, outputs: Sequence[ImageBytes]) -> tuple[list[discord.File], int]:
    """Return the generated images as files within Discord's upload limit, and how many were left off."""
    files: list[discord.File] = []
    total = 0
    for position, image in enumerate(outputs):
        if total + len(image.data) > UPLOAD_LIMIT:
            continue
        total += len(image.data)
        extension = image.mime.rsplit("/", 1)[-1].replace("jpeg", "jpg")
        name = f"imagine-{job.id[:8]}-{position + 1}.{extension}"
        # The prompt is the image's alt text, so screen readers say what it shows.
        alt_text = (job.prompt or "")[:_ALT_TEXT_LIMIT]
        files.append(
            discord.File(io.BytesIO(image.data), filename=name, description=alt_text, spoiler=job.spoiler)
        )
    return files, len(outputs) - len(files)


def render_job(
    job: Job,
    words: Words,
    *,
    thumbnail: bytes | None = None,
    outputs: Sequence[ImageBytes] = (),
) -> Rendered:
    """Render a job's current state as its message."""
    colour = _COLOURS.get(job.state, discord.Colour.blurple())
    title = f"{words.kind(job.kind)} · {words.state(job.state, job.place)}"
    embed = discord.Embed(title=title, colour=colour)
    files: list[discord.File] = []
    left_off = 0

    if job.state is JobState.COMPLETED and job.kind is TaskKind.DESCRIBE:
        embed.description = described(job.suggestions, words, hidden=job.hidden)
        if thumbnail:
            file = discord.File(
                io.BytesIO(thumbnail),
                filename=THUMBNAIL_NAME,
                description=words.say(THUMBNAIL_ALT),
                spoiler=job.spoiler,
            )
            files.append(file)
            # An embed's image cannot be spoilered: a spoilered one is shown as the attachment only.
            if not job.spoiler:
                embed.set_thumbnail(url=f"attachment://{file.filename}")
    elif job.state is JobState.COMPLETED and job.kind is TaskKind.IMAGINE:
        embed.description = code_block(job.prompt or "")
        files, left_off = _result_files(job, outputs)
        if files and not job.spoiler:
            embed.set_image(url=f"attachment://{files[0].filename}")
    elif job.state is JobState.FAILED:
        embed.description = words.fault(job.provider, job.fault or Fault.FAILED)
    elif job.state is JobState.CANCELLED:
        if job.dispatched_at is None:
            embed.description = words.say(CANCELLED_WAITING_NOTE)
        else:
            embed.description = words.say(CANCELLED_RUNNING_NOTE, provider=words.provider(job.provider))
    elif job.kind is TaskKind.IMAGINE and job.prompt:
        embed.description = code_block(job.prompt)

    embed.add_field(name=words.say(N_("Provider")), value=words.provider(job.provider))
    if job.style is not None and job.style is not DescribeStyle.DETAILED:
        embed.add_field(name=words.say(N_("Style")), value=words.say(STYLE_NAMES[job.style]))
    embed.add_field(name=words.say(N_("Started")), value=relative_time(job.created_at))
    if job.state is JobState.COMPLETED and job.kind is TaskKind.IMAGINE:
        # updated_at is when the result was saved: from the member's request to the image in hand.
        embed.add_field(name=words.say(N_("Took")), value=words.duration(job.updated_at - job.created_at))
    if job.notice:
        embed.add_field(name=words.say(N_("Note")), value=words.notice(job.notice), inline=False)
    if job.hidden and job.state is JobState.COMPLETED:
        embed.add_field(name=words.say(N_("Note")), value=words.say(HIDDEN_NOTE), inline=False)
    if left_off:
        embed.add_field(name=words.say(N_("Note")), value=words.say(RESULT_TOO_LARGE), inline=False)
    embed.set_footer(text=words.say(N_("job {id}"), id=job.id[:12]))
    return Rendered(embed=embed, files=files)
