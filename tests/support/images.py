"""Image builders: real PNG (or other format) bytes of a size, and stored-image references."""

from __future__ import annotations

import base64
import io
import struct
import zlib
from typing import Any

from PIL import Image, ImageDraw

from services.types import ImageRef


def make_image(width: int = 64, height: int = 48, fmt: str = "PNG", **save: Any) -> bytes:
    """A ``width`` x ``height`` picture (an ellipse on a plain ground) encoded as ``fmt``."""
    image = Image.new("RGB", (width, height), (30, 90, 160))
    ImageDraw.Draw(image).ellipse((4, 4, width - 4, height - 4), fill=(240, 200, 40))
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    return buffer.getvalue()


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def image_ref(
    digest: str = "ab", size_bytes: int = 10, width: int = 4, height: int = 3
) -> ImageRef:
    """A PNG's reference, its SHA-256 ``digest`` repeated to 64 hex digits (no object behind it
    unless a test stores one under its ``key``)."""
    return ImageRef(digest * (64 // len(digest)), "image/png", size_bytes, width, height)


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_bomb(side: int, *, rgb: bool = True, alpha: bool = False) -> bytes:
    """A valid, black ``side`` x ``side`` PNG of a few kB to a few hundred kB (8-bit RGB, 8-bit
    RGBA with ``alpha``, or 1-bit grey), written row by row so that building it never holds the
    decoded image."""
    channels = 4 if alpha else 3
    row_bytes = channels * side if rgb or alpha else (side + 7) // 8
    packer = zlib.compressobj(9)
    row = bytes(1 + row_bytes)  # filter type 0, then black pixels
    idat = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    depth, color = (8, 6) if alpha else (8, 2) if rgb else (1, 0)
    header = struct.pack(">IIBBBBB", side, side, depth, color, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + b"".join(
        _png_chunk(kind, body)
        for kind, body in [(b"IHDR", header), (b"IDAT", idat), (b"IEND", b"")]
    )


def gif_screen_bomb(side: int = 6000) -> bytes:
    """A 43-byte GIF: one transparent pixel on a ``side`` x ``side`` logical screen, which Pillow
    decodes to a full-screen image."""
    screen = struct.pack("<HHBBB", side, side, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    transparent = b"\x21\xf9\x04\x01\x00\x00\x00\x00"
    one_pixel = b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x02\x44\x01\x00"
    return b"GIF89a" + screen + transparent + one_pixel + b"\x3b"


def animated_image(frames: int, fmt: str = "GIF", side: int = 16) -> bytes:
    """An animation of ``frames`` distinct frames (GIF, PNG or WEBP)."""
    images = [
        Image.new("RGB", (side, side), (n * 47 % 256, 80, n * 91 % 256)) for n in range(frames)
    ]
    buffer = io.BytesIO()
    images[0].save(buffer, format=fmt, save_all=True, append_images=images[1:])
    return buffer.getvalue()
