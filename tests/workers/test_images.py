"""decode_image: EXIF orientation, RGB conversion, and bad bytes as InvalidInput."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from services.errors import InvalidInput
from workers.images import decode_image

EXIF_ORIENTATION = 0x0112


def _encode(image: Image.Image, fmt: str, **save_args: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **save_args)
    return buffer.getvalue()


def test_exif_orientation_is_applied() -> None:
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6  # "rotate 90 CW to display": a landscape sensor image shown portrait
    data = _encode(Image.new("RGB", (40, 20), (10, 200, 30)), "JPEG", exif=exif)

    decoded = decode_image(data)

    assert decoded.size == (20, 40)
    assert decoded.mode == "RGB"


def test_image_without_exif_keeps_its_size() -> None:
    decoded = decode_image(_encode(Image.new("RGB", (40, 20)), "PNG"))
    assert decoded.size == (40, 20)


@pytest.mark.parametrize("mode", ["L", "P", "CMYK", "I;16", "1", "LA"])
def test_any_mode_becomes_rgb(mode: str) -> None:
    decoded = decode_image(_encode(Image.new(mode, (8, 6)), "TIFF"))
    assert decoded.mode == "RGB"
    assert decoded.size == (8, 6)


def test_transparent_pixels_become_white() -> None:
    image = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    image.putpixel((0, 0), (255, 0, 0, 255))

    decoded = decode_image(_encode(image, "PNG"))

    assert decoded.getpixel((0, 0)) == (255, 0, 0)
    assert decoded.getpixel((3, 3)) == (255, 255, 255)


@pytest.mark.parametrize(
    "data",
    [b"", b"definitely not an image", b"\x89PNG\r\n\x1a\n" + b"\x00" * 32],
    ids=["empty", "garbage", "png-signature-only"],
)
def test_undecodable_bytes_are_invalid_input(data: bytes) -> None:
    with pytest.raises(InvalidInput) as caught:
        decode_image(data)
    assert caught.value.code == "invalid_image"
    assert caught.value.http_status == 422


def test_truncated_image_is_invalid_input() -> None:
    data = _encode(Image.new("RGB", (64, 64), (1, 2, 3)), "JPEG", quality=95)
    with pytest.raises(InvalidInput) as caught:
        decode_image(data[: len(data) // 2])
    assert caught.value.code == "invalid_image"
