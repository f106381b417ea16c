"""Find and load the images a member points at in Discord: attachments, links, a message's images."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import unquote, urlsplit

import aiohttp
import discord
from yarl import URL

from bot.core.images import CheckedImage
from bot.core.service import TaskService
from bot.domain.errors import BadInput, Refusal

log = logging.getLogger(__name__)

_IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif"})
_WEB_SCHEMES = frozenset({"http", "https"})
# Embed types whose thumbnail is the previewed picture itself (a pasted image link, a GIF).
_PICTURE_EMBED_TYPES = frozenset({"image", "gifv"})
# Discord's CDN answers within seconds; this only stops a stalled read from holding the reply forever.
_ATTACHMENT_READ_TIMEOUT = 60.0


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


def _embed_image_url(embed: discord.Embed) -> str | None:
    """Return the picture an embed shows: its image, or the thumbnail of a previewed image link."""
    if embed.image.url:
        return embed.image.url
    if embed.type in _PICTURE_EMBED_TYPES and embed.thumbnail.url:
        return embed.thumbnail.url
    return None


def message_images(message: discord.Message) -> list[ImageSource]:
    """Return a message's images in order: attachments first, then previewed image links."""
    found: list[tuple[str, discord.Attachment | None, str | None]] = [
        (attachment.filename, attachment, None)
        for attachment in message.attachments
        if looks_like_image(attachment)
    ]
    seen_urls: set[str] = set()
    # An embed image can point at the message's own attachment ("attachment://name", which Discord
    # turns into that attachment's CDN URL): the bot's own results are made so. Counted twice, one
    # picture would be offered twice, or take two of imagine's three reference places.
    attached = {urlsplit(a.url).path for a in message.attachments}
    attached |= {urlsplit(a.proxy_url).path for a in message.attachments}
    for embed in message.embeds:
        url = _embed_image_url(embed)
        if url and (url.startswith("attachment://") or urlsplit(url).path in attached):
            continue
        # The same link pasted twice gives two embeds of one picture: offer it once.
        if url and url not in seen_urls:
            seen_urls.add(url)
            found.append((_label_for_url(url), None, url))
    # Numbered, because phones name every pasted picture "image.png" and a picker of equal names
    # would not tell them apart.
    return [
        ImageSource(label=f"{position}. {name}", attachment=attachment, url=url)
        for position, (name, attachment, url) in enumerate(found, start=1)
    ]


def checked_link(url: str) -> str:
    """Refuse, before anything is acknowledged, a link that is not http(s); return it trimmed."""
    link = url.strip()
    try:
        scheme = URL(link.removeprefix("<").removesuffix(">")).scheme.lower()
    except (ValueError, TypeError):
        raise BadInput(Refusal.LINK_INVALID) from None
    if not scheme:
        raise BadInput(Refusal.LINK_INVALID)
    if scheme not in _WEB_SCHEMES:
        raise BadInput(Refusal.LINK_NOT_WEB)
    # Everything else (the address, redirects, size, time) is the guarded downloader's to judge.
    return link


async def load_attachment(attachment: discord.Attachment, service: TaskService) -> CheckedImage:
    """Read an attachment's bytes through discord.py and check them."""
    max_bytes = service.max_image_bytes
    # Discord tells the size up front: a file over the limit is refused without downloading it.
    if attachment.size > max_bytes:
        raise BadInput(Refusal.IMAGE_TOO_LARGE, max_bytes=max_bytes)
    try:
        async with asyncio.timeout(_ATTACHMENT_READ_TIMEOUT):
            data = await attachment.read()
    except (discord.HTTPException, aiohttp.ClientError, TimeoutError) as exc:
        log.info("attachment %s could not be read: %r", attachment.id, exc)
        raise BadInput(Refusal.ATTACHMENT_UNREADABLE) from exc
    return await service.check_bytes(data)


async def load_source(source: ImageSource, service: TaskService) -> CheckedImage:
    """Load one of a message's images: an attachment through Discord, a link through the downloader."""
    if source.attachment is not None:
        return await load_attachment(source.attachment, service)
    assert source.url is not None
    return await service.fetch_url(source.url)


def _label_for_url(url: str) -> str:
    """Name a linked picture by its file name, or by the link itself when the path has none."""
    name = unquote(PurePosixPath(url.split("?", 1)[0].split("#", 1)[0]).name)
    return name or url[:80]
