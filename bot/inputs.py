"""Find and load the images a member points at in Discord: attachments, links, a message's images."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import PurePosixPath

import discord

from bot.errors import BadInput
from bot.images import CheckedImage
from bot.service import TaskService
from bot.ui import input_text

log = logging.getLogger(__name__)

_IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif"})
ATTACHMENT_UNREADABLE = "Discord could not hand me that attachment; upload it again."


@dataclass(frozen=True, slots=True)
class ImageSource:
    """One image a message holds: an attachment, or an embed that Discord made from a pasted link."""

    label: str
    attachment: discord.Attachment | None = None
    url: str | None = None


def looks_like_image(attachment: discord.Attachment) -> bool:
    """Guess from Discord's metadata which attachments are images (the bytes are checked later)."""
    if attachment.content_type:
        return attachment.content_type.startswith("image/")
    return PurePosixPath(attachment.filename).suffix.lower() in _IMAGE_SUFFIXES


def message_images(message: discord.Message) -> list[ImageSource]:
    """Return a message's images in order: attachments first, then previewed image links."""
    sources = [
        ImageSource(label=attachment.filename, attachment=attachment)
        for attachment in message.attachments
        if looks_like_image(attachment)
    ]
    for embed in message.embeds:
        url = embed.image.url or (embed.thumbnail.url if embed.type in ("image", "gifv") else None)
        if url:
            sources.append(ImageSource(label=_label_for_url(url), url=url))
    return sources


async def load_attachment(
    attachment: discord.Attachment, service: TaskService, max_bytes: int
) -> CheckedImage:
    """Read an attachment's bytes through discord.py and check them."""
    # Discord tells the size up front: a file over the limit is refused without downloading it.
    if attachment.size > max_bytes:
        raise BadInput(input_text.image_too_large(max_bytes))
    try:
        data = await attachment.read()
    except (discord.HTTPException, discord.NotFound) as exc:
        log.info("attachment %s could not be read: %s", attachment.id, exc)
        raise BadInput(ATTACHMENT_UNREADABLE) from exc
    return await service.check_bytes(data)


async def load_source(source: ImageSource, service: TaskService, max_bytes: int) -> CheckedImage:
    if source.attachment is not None:
        return await load_attachment(source.attachment, service, max_bytes)
    assert source.url is not None
    return await service.fetch_url(source.url)


def _label_for_url(url: str) -> str:
    name = PurePosixPath(url.split("?", 1)[0]).name
    return name or url[:80]
