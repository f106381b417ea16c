"""The one door for image bytes a member hands the bot: check, normalise, hash, thumbnail.

Every function here is synchronous and CPU-bound; callers run them with `asyncio.to_thread`.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from bot.domain.errors import BadInput, Refusal
from bot.domain.tasks import ImageBytes, ImageLimits

log = logging.getLogger(__name__)

# Our own pixel cap, checked from the header before anything is decoded. Pillow's global
# MAX_IMAGE_PIXELS is left alone (other code decodes provider results with it), but its guard
# is still honoured: its warning is turned into a refusal locally in `_bomb_guard`.
MAX_PIXELS = 50_000_000

ACCEPTED_FORMATS = frozenset({"PNG", "JPEG", "WEBP", "GIF"})
# Pillow names some JPEGs from cameras "MPO" (several pictures in one file); the first is a JPEG.
_FORMAT_ALIASES = {"MPO": "JPEG"}

_JPEG_QUALITIES = (90, 80, 70, 60, 50)
_MIN_SIDE = 16  # below this a picture is useless to a provider; stop shrinking
_SHRINK_STEP = 0.9  # the least a side shrinks per retry, so the fitting loop always ends

_VIDEO_BRANDS = frozenset({b"isom", b"iso2", b"iso4", b"iso5", b"mp41", b"mp42", b"avc1", b"M4V ", b"qt  "})
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"})
_HTML_STARTS = (b"<!doctype html", b"<html", b"<head", b"<body", b"<script", b"<meta", b"<title", b"<iframe")


@dataclass(frozen=True, slots=True)
class CheckedImage:
    """Bytes proven to be a fully decodable PNG, JPEG, WebP or GIF within the limits."""

    data: bytes
    format: str  # "PNG" | "JPEG" | "WEBP" | "GIF"
    width: int  # as stored, before any EXIF rotation
    height: int


@contextmanager
def _bomb_guard() -> Iterator[None]:
    """Turn Pillow's decompression-bomb warning into an error for the code inside only."""
    # catch_warnings swaps the process-wide filter list; the worst a concurrent thread can do
    # is see this filter too, which only makes its own bomb check stricter.
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        yield


def _sniff_document(data: bytes) -> Refusal | None:
    """Name the common non-image files members send, from their first bytes."""
    head = data[:4096].lstrip(b"\xef\xbb\xbf").lstrip().lower()
    if head.startswith(b"%pdf-"):
        return Refusal.IMAGE_IS_PDF
    if head.startswith(_HTML_STARTS) or (head.startswith((b"<?xml", b"<!--")) and b"<html" in head):
        return Refusal.IMAGE_IS_HTML
    if head.startswith(b"<svg") or (
        head.startswith((b"<?xml", b"<!--", b"<!doctype svg")) and b"<svg" in head
    ):
        return Refusal.IMAGE_IS_SVG
    return None


def _sniff_container(data: bytes) -> Refusal | None:
    """Name HEIC photos and videos, which Pillow cannot open, from their container header."""
    if data[4:8] == b"ftyp":
        brand = data[8:12]
        if brand in _HEIF_BRANDS:
            return Refusal.IMAGE_IS_HEIC
        if brand in _VIDEO_BRANDS:
            return Refusal.IMAGE_IS_VIDEO
    if data.startswith(b"\x1a\x45\xdf\xa3"):  # Matroska / WebM
        return Refusal.IMAGE_IS_VIDEO
    return None


def _refuse(refusal: Refusal, why: str, **params: str | int) -> BadInput:
    """Log a refusal for the operator and build the error the member sees."""
    log.info("refused image: %s", why)
    return BadInput(refusal, **params)


def check_image(data: bytes, *, max_bytes: int) -> CheckedImage:
    """Prove the bytes are one accepted, complete, reasonably sized image, or refuse them."""
    if not data:
        raise _refuse(Refusal.IMAGE_EMPTY, "empty")
    if len(data) > max_bytes:
        raise _refuse(Refusal.IMAGE_TOO_LARGE, f"{len(data)} bytes", max_bytes=max_bytes)
    # Text formats first: they are certain from their opening bytes, and Pillow's weaker
    # sniffers must not get a chance to mistake one for an obscure image format.
    if (refusal := _sniff_document(data)) is not None:
        raise _refuse(refusal, "document")
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        # Someone switched Pillow to accept cut-off files process-wide; it is a global that
        # cannot safely be flipped back for one call from a worker thread, so say so loudly.
        log.warning("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is on; truncated images may slip through")

    try:
        with _bomb_guard():
            img = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _refuse(Refusal.IMAGE_TOO_MANY_PIXELS, "pillow bomb guard", max_pixels=MAX_PIXELS) from None
    except UnidentifiedImageError:
        refusal = _sniff_container(data) or Refusal.IMAGE_NOT_AN_IMAGE
        raise _refuse(refusal, "unidentified") from None
    except Exception as exc:  # a header Pillow recognised but could not parse
        raise _refuse(_refusal_for_decode_error(exc), f"open failed: {exc!r}") from None

    with img:
        fmt = _FORMAT_ALIASES.get(img.format or "", img.format or "")
        if fmt not in ACCEPTED_FORMATS:
            raise _refuse(Refusal.IMAGE_WRONG_FORMAT, f"format {fmt}", format=fmt or "unknown")
        width, height = img.size
        if width * height > MAX_PIXELS:
            raise _refuse(Refusal.IMAGE_TOO_MANY_PIXELS, f"{width}x{height}", max_pixels=MAX_PIXELS)
        try:
            with _bomb_guard():
                img.load()  # decode the (first) frame fully: truncated and corrupt data fail here
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise _refuse(Refusal.IMAGE_TOO_MANY_PIXELS, "pillow bomb guard", max_pixels=MAX_PIXELS) from None
        except Exception as exc:
            raise _refuse(_refusal_for_decode_error(exc), f"decode failed: {exc!r}") from None
    return CheckedImage(data=data, format=fmt, width=width, height=height)


def _refusal_for_decode_error(exc: Exception) -> Refusal:
    """Tell a metadata bomb (Pillow's own guard against inflating text chunks) from a damaged file."""
    # Pillow's PNG reader stops a compressed text, iTXt or ICC chunk that would inflate past its cap.
    message = str(exc)
    if isinstance(exc, ValueError) and ("Decompressed data too large" in message or "text chunks" in message):
        return Refusal.IMAGE_METADATA_TOO_LARGE
    return Refusal.IMAGE_DAMAGED


def _has_alpha(img: Image.Image) -> bool:
    """Tell whether any pixel is less than fully opaque."""
    if img.mode == "RGBA":
        return img.getchannel("A").getextrema() != (255, 255)
    if img.mode in ("LA", "PA", "RGBa", "La") or "transparency" in img.info:
        return img.convert("RGBA").getchannel("A").getextrema() != (255, 255)
    return False


def _resized(img: Image.Image, longest: int) -> Image.Image:
    """Scale the image so its longest side is at most `longest`, keeping the aspect ratio."""
    width, height = img.size
    if max(width, height) <= longest:
        return img
    scale = longest / max(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    # reducing_gap lets Pillow shrink by whole factors first: far faster on huge photos, and
    # documented as indistinguishable from a plain LANCZOS pass at this gap.
    return img.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def _normalise(img: Image.Image, max_side: int) -> tuple[Image.Image, bool]:
    """Return the upright first frame, at most max_side long, as metadata-free RGB or RGBA, and
    whether it has alpha."""
    img.seek(0)  # an animated GIF or WebP is sent as its first frame
    if img.format in ("JPEG", "MPO") and max(img.size) > max_side:
        # Let the JPEG decoder skip detail we would throw away; it never goes below the size asked.
        scale = max_side / max(img.size)
        img.draft(None, (math.ceil(img.width * scale), math.ceil(img.height * scale)))
    try:
        ImageOps.exif_transpose(img, in_place=True)
    except Exception as exc:  # a mangled EXIF block should not cost the member their picture
        log.info("ignored unreadable EXIF orientation: %r", exc)
    if img.mode.startswith("I;16") or img.mode in ("I", "F"):
        # 16/32-bit grey would clip to white in a plain convert; scale it to 8 bits first.
        img = img.convert("I").point(lambda v: v * (1 / 256)).convert("L")
    alpha = _has_alpha(img)
    mode = "RGBA" if alpha else "RGB"
    small = _resized(img if img.mode == mode else img.convert(mode), max_side)
    # Rebuild from raw pixels so no EXIF (GPS included), XMP, ICC profile, comment, text chunk
    # or dpi rides along in `info`. The ICC profile is dropped on purpose: it is a free-form
    # blob we would pass on unseen, and wide-gamut photos only shift colour slightly without it.
    return Image.frombytes(mode, small.size, small.tobytes()), alpha


def _encode(img: Image.Image, *, png: bool, quality: int) -> bytes:
    """Encode with fixed settings and no metadata, so equal pixels give equal bytes."""
    buf = io.BytesIO()
    if png:
        img.save(buf, "PNG", compress_level=6)
    else:
        img.save(buf, "JPEG", quality=quality, optimize=True, subsampling=2)
    return buf.getvalue()


def prepare_for_provider(image: CheckedImage, limits: ImageLimits) -> ImageBytes:
    """Make the upright, metadata-free, size-limited bytes a provider is sent."""
    with _bomb_guard(), Image.open(io.BytesIO(image.data)) as img:
        base, png = _normalise(img, limits.max_side)
    qualities = (0,) if png else _JPEG_QUALITIES
    side = max(base.size)  # _normalise already brought it within limits.max_side
    while True:
        candidate = _resized(base, side)
        smallest = b""
        for quality in qualities:
            smallest = _encode(candidate, png=png, quality=quality)
            if len(smallest) <= limits.max_bytes:
                return ImageBytes(data=smallest, mime="image/png" if png else "image/jpeg")
        # Bytes grow roughly with area, so aim straight for the side that should fit; shrink
        # by at least _SHRINK_STEP so the loop always ends.
        guess = side * math.sqrt(limits.max_bytes / len(smallest)) * 0.95
        side = int(min(guess, side * _SHRINK_STEP))
        if side < _MIN_SIDE:
            break
    raise _refuse(Refusal.IMAGE_CANNOT_SHRINK, f"cannot fit {limits.max_bytes} bytes")


def refit(image: ImageBytes, limits: ImageLimits) -> ImageBytes:
    """Fit image bytes the bot already holds (a stored input, a generated result) to other limits."""
    checked = check_image(image.data, max_bytes=len(image.data) + 1)
    fits = (
        len(image.data) <= limits.max_bytes
        and max(checked.width, checked.height) <= limits.max_side
        and checked.format in ("PNG", "JPEG")
    )
    # Bytes that already fit are kept as they are: re-encoding would only lose quality.
    return image if fits else prepare_for_provider(checked, limits)


def image_hash(image: ImageBytes) -> str:
    """Return the sha256 hex digest of the normalised bytes."""
    return hashlib.sha256(image.data).hexdigest()


def thumbnail(image: ImageBytes, *, size: int = 256) -> bytes:
    """Make a small PNG (with alpha) or JPEG to show in a Discord embed."""
    with _bomb_guard(), Image.open(io.BytesIO(image.data)) as img:
        small, png = _normalise(img, size)
    buf = io.BytesIO()
    if png:
        small.save(buf, "PNG", optimize=True)
    else:
        small.save(buf, "JPEG", quality=85, optimize=True)
    return buf.getvalue()
