"""bot.images: what is accepted, what is refused and in which words, and what leaves for a provider."""

from __future__ import annotations

import functools
import io
import random
import re
import struct
import warnings
import zlib

import pytest
from PIL import ExifTags, Image, ImageCms, ImageFile, PngImagePlugin, features

from bot.core import images
from bot.core.images import CheckedImage, check_image, image_hash, prepare_for_provider, thumbnail
from bot.domain.errors import BadInput, Refusal
from bot.domain.tasks import ImageBytes, ImageLimits
from bot.ui.words import Words
from tests.sentences import sentence

MB = 1_000_000
BIG = ImageLimits(max_side=2048, max_bytes=30 * MB)
ACCEPT = "send a PNG, JPEG, WebP or GIF"


def encode(img: Image.Image, fmt: str, **params: object) -> bytes:
    """Return the image encoded in fmt."""
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def noise(size: tuple[int, int], mode: str = "RGB", seed: int = 1) -> Image.Image:
    """Return an image of random pixels, which compresses badly on purpose."""
    n = size[0] * size[1] * len(mode)
    return Image.frombytes(mode, size, random.Random(seed).randbytes(n))


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_declaring(width: int, height: int) -> bytes:
    """Return a tiny 1-bit PNG whose header claims width x height: a decompression bomb's shape."""
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 10_000, 9))
        + png_chunk(b"IEND", b"")
    )


def refusal(data: bytes, *, max_bytes: int = 20 * MB) -> str:
    with pytest.raises(BadInput) as caught:
        check_image(data, max_bytes=max_bytes)
    return Words().error(caught.value)


def opened(image: ImageBytes) -> Image.Image:
    return Image.open(io.BytesIO(image.data))


def rgb_at(img: Image.Image, xy: tuple[int, int]) -> tuple[int, int, int]:
    red, green, blue = img.convert("RGB").getpixel(xy)  # type: ignore[misc]
    return red, green, blue


def close_to(pixel: tuple[int, ...], expected: tuple[int, ...], tolerance: int = 40) -> bool:
    """Tell whether two colours match within what JPEG and resampling blur."""
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, expected, strict=True))


# --- accepted ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "expected"), [("PNG", "PNG"), ("JPEG", "JPEG"), ("WEBP", "WEBP"), ("GIF", "GIF")]
)
def test_accepted_formats(fmt: str, expected: str) -> None:
    data = encode(Image.new("RGB", (64, 48), (10, 200, 30)), fmt)

    checked = check_image(data, max_bytes=MB)

    assert checked == CheckedImage(data=data, format=expected, width=64, height=48)


def test_animated_gif_is_accepted_and_sent_as_its_first_frame() -> None:
    frames = [Image.new("RGB", (40, 40), colour) for colour in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 3

    checked = check_image(data, max_bytes=MB)
    prepared = prepare_for_provider(checked, BIG)

    assert checked.format == "GIF"
    assert prepared.mime == "image/jpeg"
    with opened(prepared) as out:
        assert getattr(out, "n_frames", 1) == 1
        assert close_to(rgb_at(out, (20, 20)), (255, 0, 0), tolerance=15)


def test_animated_webp_is_accepted() -> None:
    frames = [Image.new("RGB", (32, 32), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    data = encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=100)

    assert check_image(data, max_bytes=MB).format == "WEBP"


# --- refused, by name ----------------------------------------------------------------------


def test_bmp_is_refused_by_name() -> None:
    data = encode(Image.new("RGB", (8, 8)), "BMP")

    assert refusal(data) == "That file is a BMP image; send a PNG, JPEG, WebP or GIF."


def test_tiff_is_refused_by_name() -> None:
    assert refusal(encode(Image.new("RGB", (8, 8)), "TIFF")) == f"That file is a TIFF image; {ACCEPT}."


@pytest.mark.skipif(not features.check("avif"), reason="Pillow built without AVIF")
def test_avif_is_refused_by_name() -> None:
    assert refusal(encode(Image.new("RGB", (8, 8)), "AVIF")) == f"That file is an AVIF image; {ACCEPT}."


def test_text_is_refused_as_not_an_image() -> None:
    reason = refusal(b"hello, this is just some text\n" * 10)

    assert reason == "That file is not an image I can read; send a PNG, JPEG, WebP or GIF."


def test_zero_bytes_are_refused() -> None:
    assert refusal(b"") == "That file is empty; send a PNG, JPEG, WebP or GIF image."


@pytest.mark.parametrize(
    "svg",
    [
        b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>',
        b'\xef\xbb\xbf<?xml version="1.0"?>\n<!-- a drawing -->\n<svg xmlns="http://www.w3.org/2000/svg"/>',
        b'  <!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" "x">\n<svg xmlns="http://www.w3.org/2000/svg"/>',
    ],
)
def test_svg_is_refused_naming_svg(svg: bytes) -> None:
    reason = refusal(svg)

    assert reason == sentence(Refusal.IMAGE_IS_SVG)
    assert reason.startswith("That file is an SVG drawing, not a picture;")


@pytest.mark.parametrize(
    "html",
    [
        b"<!DOCTYPE html>\n<html><head><title>cat</title></head><body><img src=cat.png></body></html>",
        b"\n\n<html lang=en><body>login</body></html>",
        b'<?xml version="1.0"?><html xmlns="http://www.w3.org/1999/xhtml"><svg/></html>',
    ],
)
def test_html_is_refused_as_a_web_page(html: bytes) -> None:
    reason = refusal(html)

    assert reason == "That is a web page, not a picture; send the image itself or a direct link to it."


def test_pdf_is_refused_naming_pdf() -> None:
    reason = refusal(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n")

    assert reason.startswith("That file is a PDF document, not a picture;")


def test_heic_is_refused_naming_heic() -> None:
    reason = refusal(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64)

    assert reason == "That file is a HEIC photo, which I cannot read; send it as a JPEG or PNG instead."


def test_mp4_is_refused_as_a_video() -> None:
    assert refusal(b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00" + b"\x00" * 64) == sentence(
        Refusal.IMAGE_IS_VIDEO
    )


# --- refused: damaged, too big ---------------------------------------------------------------


def test_truncated_png_is_refused() -> None:
    whole = encode(noise((200, 200)), "PNG")
    assert check_image(whole, max_bytes=MB).format == "PNG"

    reason = refusal(whole[: len(whole) // 2])

    assert reason == "That image is damaged or incomplete; send the file again or try another one."


def test_truncated_jpeg_is_refused() -> None:
    whole = encode(noise((200, 200)), "JPEG", quality=90)

    assert refusal(whole[: len(whole) // 2]) == sentence(Refusal.IMAGE_DAMAGED)


def test_corrupt_png_is_refused() -> None:
    whole = bytearray(encode(noise((200, 200)), "PNG"))
    middle = len(whole) // 2
    whole[middle : middle + 64] = b"\x00" * 64

    assert refusal(bytes(whole)) == sentence(Refusal.IMAGE_DAMAGED)


def test_truncated_png_is_refused_even_with_no_iend() -> None:
    whole = encode(Image.new("RGB", (50, 50), "white"), "PNG")

    assert refusal(whole[: whole.rindex(b"IDAT") + 8]) == sentence(Refusal.IMAGE_DAMAGED)


@pytest.mark.parametrize("where", ["before the pixels", "after the pixels"])
def test_a_png_whose_text_chunk_inflates_past_pillows_cap_is_refused_as_such(where: str) -> None:
    """A valid PNG carrying a compressed text chunk of 100 MB (100 KB on the wire): not "damaged"."""
    whole = encode(Image.new("RGB", (50, 50), "white"), "PNG")
    data = b"Comment\x00\x00" + zlib.compress(b" " * 100_000_000, 9)
    chunk = struct.pack(">I", len(data)) + b"zTXt" + data + struct.pack(">I", zlib.crc32(b"zTXt" + data))
    at = whole.index(b"IDAT") - 4 if where == "before the pixels" else whole.index(b"IEND") - 4
    bomb = whole[:at] + chunk + whole[at:]
    assert len(bomb) < 200_000

    assert refusal(bomb) == sentence(Refusal.IMAGE_METADATA_TOO_LARGE)


@pytest.fixture
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if any pixel data is decoded."""

    def refuse_to_load(self: ImageFile.ImageFile) -> None:
        raise AssertionError("a refused image was decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse_to_load)


@pytest.mark.usefixtures("no_decoding")
@pytest.mark.parametrize(
    ("width", "height"),
    [
        (30_000, 30_000),  # past twice Pillow's limit: its DecompressionBombError
        (10_000, 10_000),  # past Pillow's limit: its DecompressionBombWarning, made an error here
        (8_000, 8_000),  # under Pillow's limit, over ours
        (1, 60_000_000),  # thin but long
    ],
)
def test_pixel_bomb_is_refused_without_decoding(width: int, height: int) -> None:
    data = png_declaring(width, height)
    assert len(data) < 1000

    reason = refusal(data)

    assert reason == "That image is larger than 50 megapixels; send a smaller one."


def test_bomb_guard_leaves_no_warning_filter_behind() -> None:
    before = list(warnings.filters)

    refusal(png_declaring(10_000, 10_000))
    check_image(encode(Image.new("RGB", (8, 8)), "PNG"), max_bytes=MB)

    assert warnings.filters == before


def test_over_max_bytes_is_refused_with_the_limit() -> None:
    data = encode(noise((300, 300)), "PNG")
    assert len(data) > 200_000

    assert check_image(data, max_bytes=len(data)).data == data  # exactly at the limit is fine
    assert refusal(data, max_bytes=200_000) == "That image is larger than 200 KB; send a smaller one."
    assert (
        sentence(Refusal.IMAGE_TOO_LARGE, max_bytes=20 * MB)
        == "That image is larger than 20 MB; send a smaller one."
    )


# --- prepared for a provider ------------------------------------------------------------------


@functools.cache
def exif_rotated_photo() -> bytes:
    """Return a 4000x3000 JPEG stored sideways (orientation 6) with GPS tags and a red top-left."""
    img = Image.new("RGB", (4000, 3000), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 400, 300))  # marks the stored top-left corner
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    exif[ExifTags.Base.Make] = "PhoneCo"
    exif[ExifTags.IFD.GPSInfo] = {
        ExifTags.GPS.GPSLatitudeRef: "N",
        ExifTags.GPS.GPSLatitude: (51.0, 30.0, 0.0),
        ExifTags.GPS.GPSLongitudeRef: "W",
        ExifTags.GPS.GPSLongitude: (0.0, 7.0, 0.0),
    }
    return encode(img, "JPEG", quality=85, exif=exif)


def test_exif_photo_is_rotated_downscaled_and_stripped() -> None:
    data = exif_rotated_photo()
    with Image.open(io.BytesIO(data)) as original:
        assert original.getexif().get_ifd(ExifTags.IFD.GPSInfo)  # the fixture really has GPS
    checked = check_image(data, max_bytes=30 * MB)
    assert (checked.width, checked.height) == (4000, 3000)

    prepared = prepare_for_provider(checked, BIG)

    assert prepared.mime == "image/jpeg"
    assert len(prepared.data) <= BIG.max_bytes
    with opened(prepared) as out:
        assert out.format == "JPEG"
        assert out.size == (1536, 2048)  # upright: portrait, longest side at the limit
        assert len(out.getexif()) == 0
        assert "exif" not in out.info
        assert not {"xmp", "XML:com.adobe.xmp", "icc_profile", "comment"} & set(out.info)
        # Orientation 6 turns the picture a quarter clockwise: the stored top-left is now top-right.
        assert close_to(rgb_at(out, (1536 - 40, 40)), (255, 0, 0))
        assert close_to(rgb_at(out, (40, 40)), (0, 0, 255))
        assert close_to(rgb_at(out, (40, 2048 - 40)), (0, 0, 255))
    assert b"PhoneCo" not in prepared.data
    assert b"Exif" not in prepared.data


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])  # re-encoded as JPEG and as PNG
def test_png_metadata_is_dropped(mode: str) -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "secret home address")
    info.add_itxt("XML:com.adobe.xmp", "<x:xmpmeta>secret</x:xmpmeta>")
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    img = Image.new(mode, (300, 200), "white")
    img.putpixel((0, 0), (0, 0, 0, 0) if mode == "RGBA" else (0, 0, 0))
    data = encode(img, "PNG", pnginfo=info, icc_profile=icc, dpi=(300, 300))

    prepared = prepare_for_provider(check_image(data, max_bytes=MB), BIG)

    assert prepared.mime == ("image/png" if mode == "RGBA" else "image/jpeg")
    assert b"secret" not in prepared.data
    with opened(prepared) as out:
        assert not {"icc_profile", "Comment", "dpi", "exif"} & set(out.info)


def test_jpeg_comment_and_icc_are_dropped() -> None:
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    data = encode(Image.new("RGB", (300, 200), "white"), "JPEG", comment=b"secret", icc_profile=icc)
    with Image.open(io.BytesIO(data)) as original:
        assert original.info["comment"] == b"secret"

    prepared = prepare_for_provider(check_image(data, max_bytes=MB), BIG)

    assert b"secret" not in prepared.data
    with opened(prepared) as out:
        assert not {"icc_profile", "comment", "exif"} & set(out.info)


def test_png_with_alpha_stays_png() -> None:
    img = Image.new("RGBA", (3000, 1000), (255, 0, 0, 255))
    img.paste((0, 0, 255, 0), (0, 0, 1500, 1000))  # the left half is fully transparent
    data = encode(img, "PNG")

    prepared = prepare_for_provider(check_image(data, max_bytes=30 * MB), BIG)

    assert prepared.mime == "image/png"
    with opened(prepared) as out:
        assert out.format == "PNG"
        assert out.mode == "RGBA"
        assert out.size == (2048, 683)
        assert out.getpixel((100, 300))[3] == 0  # type: ignore[index]
        assert out.getpixel((2000, 300)) == (255, 0, 0, 255)


def test_opaque_rgba_png_becomes_jpeg() -> None:
    data = encode(Image.new("RGBA", (100, 100), (1, 2, 3, 255)), "PNG")

    prepared = prepare_for_provider(check_image(data, max_bytes=MB), BIG)

    assert prepared.mime == "image/jpeg"


def test_gif_with_transparency_becomes_png() -> None:
    img = Image.new("P", (50, 50), 0)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    img.paste(1, (25, 0, 50, 50))
    data = encode(img, "GIF", transparency=0)

    prepared = prepare_for_provider(check_image(data, max_bytes=MB), BIG)

    assert prepared.mime == "image/png"
    with opened(prepared) as out:
        assert out.getpixel((5, 5))[3] == 0  # type: ignore[index]


def test_small_image_keeps_its_size() -> None:
    data = encode(Image.new("RGB", (640, 480), "green"), "WEBP")

    prepared = prepare_for_provider(check_image(data, max_bytes=MB), BIG)

    with opened(prepared) as out:
        assert out.size == (640, 480)


def test_noisy_image_is_reencoded_to_fit_a_tight_limit() -> None:
    data = encode(noise((2000, 2000)), "JPEG", quality=95)
    assert len(data) > 2 * MB
    limits = ImageLimits(max_side=2048, max_bytes=200_000)

    prepared = prepare_for_provider(check_image(data, max_bytes=30 * MB), limits)

    assert prepared.mime == "image/jpeg"
    assert len(prepared.data) <= 200_000
    with opened(prepared) as out:
        assert out.width == out.height
        assert 200 < out.width < 2000


def test_noisy_png_with_alpha_is_scaled_to_fit_a_tight_limit() -> None:
    data = encode(noise((800, 800), "RGBA"), "PNG", compress_level=1)
    limits = ImageLimits(max_side=2048, max_bytes=200_000)

    prepared = prepare_for_provider(check_image(data, max_bytes=30 * MB), limits)

    assert prepared.mime == "image/png"
    assert len(prepared.data) <= 200_000


def test_impossible_limit_is_refused() -> None:
    data = encode(noise((64, 64)), "PNG")

    with pytest.raises(BadInput) as caught:
        prepare_for_provider(check_image(data, max_bytes=MB), ImageLimits(max_side=2048, max_bytes=50))

    assert Words().error(caught.value) == sentence(Refusal.IMAGE_CANNOT_SHRINK)


def test_preparing_is_deterministic_and_hash_is_sha256_of_the_bytes() -> None:
    checked = check_image(exif_rotated_photo(), max_bytes=30 * MB)
    limits = ImageLimits(max_side=1024, max_bytes=MB)

    first = prepare_for_provider(checked, limits)
    second = prepare_for_provider(checked, limits)

    assert first == second
    assert image_hash(first) == image_hash(second)
    assert re.fullmatch(r"[0-9a-f]{64}", image_hash(first))
    assert image_hash(first) != image_hash(ImageBytes(data=first.data + b"\x00", mime=first.mime))


# --- thumbnail ---------------------------------------------------------------------------------


def test_thumbnail_is_small_and_keeps_alpha_as_png() -> None:
    opaque = prepare_for_provider(check_image(exif_rotated_photo(), max_bytes=30 * MB), BIG)
    clear = ImageBytes(data=encode(Image.new("RGBA", (600, 300), (0, 0, 0, 0)), "PNG"), mime="image/png")

    small = Image.open(io.BytesIO(thumbnail(opaque)))
    small_clear = Image.open(io.BytesIO(thumbnail(clear, size=100)))

    assert small.format == "JPEG"
    assert small.size == (192, 256)
    assert small_clear.format == "PNG"
    assert small_clear.size == (100, 50)


def test_module_leaves_pillow_globals_alone() -> None:
    assert Image.MAX_IMAGE_PIXELS is not None
    assert Image.MAX_IMAGE_PIXELS > images.MAX_PIXELS
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
