"""decode_image: EXIF orientation, RGB conversion, bad bytes as InvalidInput, bounded memory."""

from __future__ import annotations

import dataclasses
import io

import pytest
from PIL import Image

from services.errors import InvalidInput
from services.settings import Settings
from services.storage.images import ImageLimits
from tests.helpers import peak_rss_growth
from tests.support.images import animated_image, gif_screen_bomb, make_image, png_bomb
from workers.images import decode_image

LIMITS = ImageLimits.from_settings(Settings())
WITH_TIFF = dataclasses.replace(LIMITS, allowed_formats=(*LIMITS.allowed_formats, "TIFF"))

EXIF_ORIENTATION = 0x0112


def _encode(image: Image.Image, fmt: str, **save_args: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **save_args)
    return buffer.getvalue()


def test_exif_orientation_is_applied() -> None:
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6  # "rotate 90 CW to display": a landscape sensor image shown portrait
    data = _encode(Image.new("RGB", (40, 20), (10, 200, 30)), "JPEG", exif=exif)

    decoded = decode_image(data, LIMITS)

    assert decoded.size == (20, 40)
    assert decoded.mode == "RGB"


def test_image_without_exif_keeps_its_size() -> None:
    decoded = decode_image(_encode(Image.new("RGB", (40, 20)), "PNG"), LIMITS)
    assert decoded.size == (40, 20)


@pytest.mark.parametrize("mode", ["L", "P", "CMYK", "I;16", "1", "LA"])
def test_any_mode_becomes_rgb(mode: str) -> None:
    decoded = decode_image(_encode(Image.new(mode, (8, 6)), "TIFF"), WITH_TIFF)
    assert decoded.mode == "RGB"
    assert decoded.size == (8, 6)


def test_transparent_pixels_become_white() -> None:
    image = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    image.putpixel((0, 0), (255, 0, 0, 255))

    decoded = decode_image(_encode(image, "PNG"), LIMITS)

    assert decoded.getpixel((0, 0)) == (255, 0, 0)
    assert decoded.getpixel((3, 3)) == (255, 255, 255)


@pytest.mark.parametrize(
    "data",
    [b"", b"definitely not an image", b"\x89PNG\r\n\x1a\n" + b"\x00" * 32],
    ids=["empty", "garbage", "png-signature-only"],
)
def test_undecodable_bytes_are_invalid_input(data: bytes) -> None:
    with pytest.raises(InvalidInput) as caught:
        decode_image(data, LIMITS)
    assert caught.value.code == "invalid_image"
    assert caught.value.http_status == 422


def test_truncated_image_is_invalid_input() -> None:
    data = _encode(Image.new("RGB", (64, 64), (1, 2, 3)), "JPEG", quality=95)
    with pytest.raises(InvalidInput) as caught:
        decode_image(data[: len(data) // 2], LIMITS)
    assert caught.value.code == "invalid_image"


def _decode_error(data: bytes, limits: ImageLimits = LIMITS) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        decode_image(data, limits)
    assert caught.value.code == "invalid_image"
    return caught.value


def test_a_gif_screen_past_the_decode_limit_is_refused_before_decoding() -> None:
    """43 bytes that decoded to +515 MB: refused from the header."""
    data = gif_screen_bomb(6000)
    assert "pixels" in _decode_error(data).message
    assert peak_rss_growth(lambda: decode_image(data, LIMITS), 1, InvalidInput) < 16 * 2**20


def test_an_animation_past_the_frame_limit_is_refused() -> None:
    _decode_error(animated_image(5), dataclasses.replace(LIMITS, max_frames=4))


def test_a_large_jpeg_is_decoded_at_a_reduced_scale_within_the_limit() -> None:
    limits = dataclasses.replace(LIMITS, max_decode_pixels=300_000)
    decoded = decode_image(make_image(1200, 900, "JPEG"), limits)
    assert decoded.size == (600, 450)
    assert decoded.mode == "RGB"


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(lambda: gif_screen_bomb(4096), id="transparent-gif-4096"),
        pytest.param(lambda: png_bomb(4096), id="rgb-png-4096"),
    ],
)
def test_decoding_an_image_at_the_limit_peaks_under_8_bytes_a_pixel(build) -> None:
    """The README's bound for the worker: 8 bytes per decoded pixel (Pillow keeps RGB in 4 bytes:
    an RGBA and an RGB copy at once), 128 MiB at the default LOUPE_MAX_DECODE_PIXELS, plus the
    file and allocator slack. Before the bound the transparent GIF peaked at 17 bytes a pixel."""
    data = build()
    decode_image(make_image(8, 8, "GIF"), LIMITS)  # Pillow loads its plugins once, on first use
    growth = peak_rss_growth(lambda: decode_image(data, LIMITS), 1)
    assert growth < 8 * LIMITS.max_decode_pixels + 16 * 2**20
