"""Sentences shown to a member when an image or a link they sent cannot be used.

Kept in one module so the words can be reviewed and translated in one place; each is one
sentence that says what to do next.
"""

from __future__ import annotations

import math

ACCEPTED_FORMATS = "PNG, JPEG, WebP or GIF"

# --- images (bot.images) ---------------------------------------------------------------

IMAGE_EMPTY = f"That file is empty; send a {ACCEPTED_FORMATS} image."
IMAGE_NOT_AN_IMAGE = f"That file is not an image I can read; send a {ACCEPTED_FORMATS}."
IMAGE_DAMAGED = "That image is damaged or incomplete; send the file again or try another one."
IMAGE_IS_SVG = "That file is an SVG drawing, not a picture; export it as a PNG and send that."
IMAGE_IS_HTML = "That is a web page, not a picture; send the image itself or a direct link to it."
IMAGE_IS_PDF = f"That file is a PDF document, not a picture; send a {ACCEPTED_FORMATS} instead."
IMAGE_IS_HEIC = "That file is a HEIC photo, which I cannot read; send it as a JPEG or PNG instead."
IMAGE_IS_VIDEO = f"That file is a video, not a picture; send a {ACCEPTED_FORMATS} instead."
ATTACHMENT_UNREADABLE = "Discord could not hand me that attachment; upload it again."
IMAGE_CANNOT_SHRINK = "That image cannot be made small enough to pass on; send a smaller one."
IMAGE_METADATA_TOO_LARGE = (
    "That image carries an unusually large block of hidden text (metadata) that I will not unpack; "
    "save it again without metadata, or send a screenshot of it."
)

# Pillow's format names, spelt the way a member knows them, with their article.
_FORMAT_NAMES = {
    "BMP": "a BMP",
    "DIB": "a BMP",
    "TIFF": "a TIFF",
    "ICO": "an ICO icon",
    "ICNS": "an ICNS icon",
    "CUR": "a cursor",
    "PSD": "a Photoshop (PSD)",
    "JPEG2000": "a JPEG 2000",
    "AVIF": "an AVIF",
    "EPS": "an EPS",
    "TGA": "a TGA",
    "PCX": "a PCX",
    "PPM": "a PPM",
    "QOI": "a QOI",
    "DDS": "a DDS",
    "SGI": "an SGI",
    "XBM": "an XBM",
    "XPM": "an XPM",
    "WMF": "a WMF",
    "EMF": "an EMF",
}
# Letters whose spoken name starts with a vowel sound ("an SVG", "an MPO").
_VOWEL_SOUND_LETTERS = frozenset("AEFHILMNORSX")


def _megabytes(n_bytes: int) -> str:
    """Return a byte limit in MB, rounded down so the stated limit is never too generous."""
    if n_bytes < 1_000_000:  # only tests and odd configurations have limits this small
        return f"{n_bytes // 1000} KB" if n_bytes >= 1000 else f"{n_bytes} bytes"
    tenths = math.floor(n_bytes / 100_000)
    return f"{tenths // 10} MB" if tenths % 10 == 0 else f"{tenths / 10:.1f} MB"


def image_wrong_format(pillow_format: str) -> str:
    """Say which image format was sent and which ones to send instead."""
    name = _FORMAT_NAMES.get(pillow_format)
    if name is None:
        article = "an" if pillow_format[:1].upper() in _VOWEL_SOUND_LETTERS else "a"
        name = f"{article} {pillow_format}"
    return f"That file is {name} image; send a {ACCEPTED_FORMATS}."


def image_too_large(max_bytes: int) -> str:
    """Say the file-size limit for images."""
    return f"That image is larger than {_megabytes(max_bytes)}; send a smaller one."


def image_too_many_pixels(max_pixels: int) -> str:
    """Say the pixel-count limit for images."""
    return f"That image is larger than {max_pixels // 1_000_000} megapixels; send a smaller one."


# --- links (bot.safe_download) -------------------------------------------------------------

LINK_INVALID = "That link is not a valid web address; send one that starts with http:// or https://."
LINK_NOT_WEB = "That link is not a web link; send one that starts with http:// or https://."
LINK_HAS_CREDENTIALS = "That link contains a user name or password; send a link without them."
LINK_NOT_PUBLIC = "That link points to a private or local network address; send a link to a public website."
LINK_HOST_NOT_FOUND = "That link's website could not be found; check the address and try again."
LINK_UNREACHABLE = "That link could not be reached; check it or send the image as an attachment."
LINK_TOO_SLOW = "That link took too long to answer; try again later or send the image as an attachment."
LINK_TOO_MANY_REDIRECTS = "That link redirects too many times; send the direct link to the image instead."
LINK_BAD_REDIRECT = (
    "That link redirects to something that is not a web page; send the direct link to the image."
)


def link_http_status(status: int) -> str:
    """Say which HTTP status the link answered with."""
    return (
        f"That link answered with status {status} instead of an image; "
        "check the link or send the image as an attachment."
    )


def link_too_large(max_bytes: int) -> str:
    """Say the download size limit."""
    return f"That link's file is larger than {_megabytes(max_bytes)}; send a smaller image."
