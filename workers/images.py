"""Pillow preprocessing of job images before they reach the engine."""

from __future__ import annotations

import io

from PIL import Image, ImageOps, UnidentifiedImageError

from services.errors import InvalidInput

#: Errors Pillow raises for bytes that are not a (complete, supported) image.
_DECODE_ERRORS = (
    UnidentifiedImageError,
    OSError,
    ValueError,
    SyntaxError,
    Image.DecompressionBombError,
)


def decode_image(data: bytes) -> Image.Image:
    """Decode ``data`` into an upright RGB image, fully loaded in memory.

    The EXIF orientation tag is applied (a phone photo taken in portrait comes out portrait), and
    any mode (palette, greyscale, RGBA, CMYK...) is converted to RGB, transparent areas composited
    onto white. Raises ``InvalidInput`` with
    code ``invalid_image`` for bytes Pillow cannot decode, truncated images, and images over twice
    Pillow's ``MAX_IMAGE_PIXELS`` (its decompression-bomb limit; callers cap upload sizes first).
    Thread-safe: no global state is touched.
    """
    try:
        with Image.open(io.BytesIO(data)) as opened:
            opened.load()
            upright = ImageOps.exif_transpose(opened)
            return _to_rgb(upright)
    except _DECODE_ERRORS as exc:
        raise InvalidInput(f"image cannot be decoded: {exc}", code="invalid_image") from exc


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert to RGB; transparent pixels become white (as vLLM's loader does), not black."""
    has_alpha = image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info
    if not has_alpha:
        return image.convert("RGB")
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")
