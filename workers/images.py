"""Pillow preprocessing of job images before they reach the engine, in bounded memory."""

from __future__ import annotations

from PIL import Image

from services.errors import InvalidInput
from services.storage.images import (
    UPRIGHT,
    ImageLimits,
    fit_decode,
    open_image,
    orientation_of,
    pillow_errors,
)

_ALPHA_MODES = ("RGBA", "LA", "PA", "La", "RGBa")
_WHITE = (255, 255, 255)


def decode_image(data: bytes, limits: ImageLimits) -> Image.Image:
    """Decode ``data`` into an upright RGB image, fully loaded in memory.

    The EXIF orientation tag is applied (a phone photo taken in portrait comes out portrait), and
    any mode (palette, greyscale, RGBA, CMYK...) is converted to RGB, transparent areas composited
    onto white. Memory is bounded by ``limits`` as at submit (see
    :func:`services.storage.images.open_image`): a JPEG over ``max_decode_pixels`` is decoded at
    1/2, 1/4 or 1/8 scale, and the decode's peak stays near 8 bytes per decoded pixel (source,
    RGBA and RGB copies, never all at once at full width). Raises ``InvalidInput`` with code
    ``invalid_image`` for bytes Pillow cannot decode, truncated images and images over the limits
    (they were checked at submit; the limits may have changed since). Thread-safe: no global
    state is touched.
    """
    try:
        with open_image(data, limits) as opened, pillow_errors(limits):
            fit_decode(opened, limits)
            opened.load()
            orientation = orientation_of(opened)
            rgb = _to_rgb(opened)
        return rgb.transpose(UPRIGHT[orientation]) if orientation in UPRIGHT else rgb
    except InvalidInput as exc:
        raise InvalidInput(f"image cannot be decoded: {exc.message}", code="invalid_image") from exc


def _to_rgb(image: Image.Image) -> Image.Image:
    """``image`` in RGB (itself if it already is); transparent pixels become white (as vLLM's
    loader does), not black. A converted source is closed as soon as it is copied, to free it."""
    has_alpha = image.mode in _ALPHA_MODES or "transparency" in image.info
    if image.mode == "RGB" and not has_alpha:
        return image
    converted = image.convert("RGBA" if has_alpha else "RGB")
    image.close()
    if not has_alpha:
        return converted
    background = Image.new("RGB", converted.size, _WHITE)
    background.paste(converted, mask=converted)  # "over" onto white, without an RGBA copy
    return background
