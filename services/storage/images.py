"""Image validation with Pillow, run before anything is stored or queued.

Checks, in order of cost: byte size, container format, pixel count (from the header, before any
decoding, so a decompression bomb costs nothing), then a full decode that catches truncated or
corrupt files. Dimensions are reported after EXIF orientation is applied.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from services.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType
from services.settings import Settings
from services.types import ImageRef

_CONTENT_TYPES = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "GIF": "image/gif",
    "BMP": "image/bmp",
    "TIFF": "image/tiff",
}


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int
    max_pixels: int
    allowed_formats: tuple[str, ...]

    @classmethod
    def from_settings(cls, settings: Settings) -> ImageLimits:
        """The deployment's limits: the same for job images and uploaded files."""
        return cls(
            max_bytes=settings.max_image_bytes,
            max_pixels=settings.max_image_pixels,
            allowed_formats=settings.allowed_image_formats,
        )


@dataclass(frozen=True)
class ValidatedImage:
    data: bytes
    ref: ImageRef


def validate_image(data: bytes, limits: ImageLimits) -> ValidatedImage:
    """Return the image with its content address, or raise a 4xx-mapped ``LoupeError``."""
    if len(data) == 0:
        raise InvalidInput("The image is empty.", code="invalid_image")
    if len(data) > limits.max_bytes:
        raise PayloadTooLarge(
            f"The image is {len(data)} bytes; the limit is {limits.max_bytes} bytes.",
            code="image_too_large",
        )
    with warnings.catch_warnings():
        # Pillow warns (DecompressionBombWarning) before we get to apply our own pixel limit.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
        except (UnidentifiedImageError, Image.DecompressionBombError):
            raise UnsupportedMediaType(
                "The file is not an image in a supported format "
                f"({', '.join(limits.allowed_formats)}).",
                code="unsupported_image_format",
            ) from None
        with image:
            return _check_opened(image, data, limits)


def _check_opened(image: Image.Image, data: bytes, limits: ImageLimits) -> ValidatedImage:
    fmt = (image.format or "").upper()
    if fmt not in limits.allowed_formats or fmt not in _CONTENT_TYPES:
        raise UnsupportedMediaType(
            f"Image format {fmt or 'unknown'} is not accepted; "
            f"use one of {', '.join(limits.allowed_formats)}.",
            code="unsupported_image_format",
        )
    width, height = image.size
    if width * height > limits.max_pixels:
        raise InvalidInput(
            f"The image is {width}x{height} = {width * height} pixels; "
            f"the limit is {limits.max_pixels} pixels.",
            code="image_too_many_pixels",
        )
    try:
        image.load()
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidInput(
            f"The image could not be decoded (truncated or corrupt): {exc}", code="invalid_image"
        ) from None
    oriented = ImageOps.exif_transpose(image)
    width, height = oriented.size
    ref = ImageRef(
        sha256=hashlib.sha256(data).hexdigest(),
        content_type=_CONTENT_TYPES[fmt],
        size_bytes=len(data),
        width=width,
        height=height,
    )
    return ValidatedImage(data=data, ref=ref)
