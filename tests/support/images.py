"""Image builders: real PNG (or other format) bytes of a size, and stored-image references."""

from __future__ import annotations

import base64
import io
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
