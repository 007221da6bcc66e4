"""Image validation with Pillow, run before anything is stored or queued, and the bounded opening
the worker decodes through.

Decode memory is bounded from the header, before any pixel is decoded:

- ``max_pixels`` (``LOUPE_MAX_IMAGE_PIXELS``): the largest image accepted, in any format;
- ``max_decode_pixels`` (``LOUPE_MAX_DECODE_PIXELS``): the most pixels one image is ever decoded
  to. A JPEG over it is decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling, through
  ``Image.draft``); other formats cannot be decoded at a reduced scale, so larger ones are refused.
  For a GIF that is the logical screen, which Pillow allocates whole whatever the frames cover;
- ``max_frames`` (``LOUPE_MAX_IMAGE_FRAMES``): animations with more frames are refused.

Validation then decodes the whole stream, so a truncated or corrupt file is refused at submit:
a JPEG at its smallest scale, other formats at full size (at most ``max_decode_pixels`` pixels).
Given a :class:`DecodeBudget`, concurrent validations in one process hold at most its pixels
decoded at once (about 4 bytes each), whatever the number of requests: eight 4096x4096 PNGs
validated at once took +500 MB in an API process pair before.
Every error Pillow raises on hostile bytes is a 415 (not an image in an accepted format) or a
422; none escapes as a 500, and no message carries Pillow's own text. Dimensions are reported
after EXIF orientation is applied.
"""

from __future__ import annotations

import hashlib
import io
import math
import struct
import threading
import warnings
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from services.errors import InvalidInput, PayloadTooLarge, Unavailable, UnsupportedMediaType
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
#: What Pillow's plugins raise on malformed input (its own ``Image.open`` catches the same kinds
#: while it probes formats): short reads, bad chunk data, unpack failures, bad table indices.
_PILLOW_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error, IndexError, TypeError)
_DRAFT_SCALES = (1, 2, 4, 8)
#: EXIF orientation → the transpose that makes the image upright (as ``ImageOps.exif_transpose``).
UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SWAPS_AXES = frozenset({5, 6, 7, 8})
_ORIENTATION_TAG = 0x0112


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int
    max_pixels: int
    allowed_formats: tuple[str, ...]
    max_decode_pixels: int = Settings.max_decode_pixels
    max_frames: int = Settings.max_image_frames

    @classmethod
    def from_settings(cls, settings: Settings) -> ImageLimits:
        """The deployment's limits: the same for job images, uploaded files and the worker."""
        return cls(
            max_bytes=settings.max_image_bytes,
            max_pixels=settings.max_image_pixels,
            allowed_formats=settings.allowed_image_formats,
            max_decode_pixels=settings.max_decode_pixels,
            max_frames=settings.max_image_frames,
        )


@dataclass(frozen=True)
class ValidatedImage:
    data: bytes
    ref: ImageRef


class DecodeBudget:
    """The pixels one process may hold decoded at once, shared by its threads.

    :meth:`share` takes an image's pixels for the length of a block (an image over the whole
    budget takes all of it). Requests are served in arrival order, so a large image is never
    starved by a stream of small ones; one that waits past ``timeout`` seconds is refused with
    503 ``decode_busy`` (retry). Thread-safe.
    """

    def __init__(self, pixels: int, timeout: float = 30.0) -> None:
        self._capacity = pixels
        self._free = pixels
        self._timeout = timeout
        self._line: deque[object] = deque()
        self._changed = threading.Condition()

    @contextmanager
    def share(self, pixels: int) -> Iterator[None]:
        wanted = min(pixels, self._capacity)
        self._take(wanted)
        try:
            yield
        finally:
            with self._changed:
                self._free += wanted
                self._changed.notify_all()

    def _take(self, wanted: int) -> None:
        ticket = object()
        with self._changed:
            self._line.append(ticket)
            served = self._changed.wait_for(
                lambda: self._line[0] is ticket and self._free >= wanted, self._timeout
            )
            self._line.remove(ticket)
            self._changed.notify_all()  # the next in line may fit now, or be first now
            if not served:
                raise Unavailable(
                    "Too many large images are being checked at once; retry shortly.",
                    code="decode_busy",
                    retry_after=1,
                )
            self._free -= wanted


def validate_image(
    data: bytes, limits: ImageLimits, budget: DecodeBudget | None = None
) -> ValidatedImage:
    """Return the image with its content address, or raise a 4xx-mapped ``LoupeError``. With
    ``budget``, the decode waits for its pixels there (503 ``decode_busy`` past its timeout)."""
    _check_bytes(data, limits)
    with open_image(data, limits) as image:
        fmt, size = (image.format or "").upper(), image.size
        with pillow_errors(limits):
            image.draft(None, (1, 1))  # JPEG: decode at 1/8 scale; a no-op for other formats
            pixels = image.width * image.height  # after the draft: what the decode will hold
            with nullcontext() if budget is None else budget.share(pixels):
                image.load()  # the whole stream, so truncated and corrupt files are caught here
        width, height = upright_size(size, orientation_of(image))
    ref = ImageRef(
        sha256=hashlib.sha256(data).hexdigest(),
        content_type=_CONTENT_TYPES[fmt],
        size_bytes=len(data),
        width=width,
        height=height,
    )
    return ValidatedImage(data=data, ref=ref)


def _check_bytes(data: bytes, limits: ImageLimits) -> None:
    if len(data) == 0:
        raise InvalidInput("The image is empty.", code="invalid_image")
    if len(data) > limits.max_bytes:
        raise PayloadTooLarge(
            f"The image is {len(data)} bytes; the limit is {limits.max_bytes} bytes.",
            code="image_too_large",
        )


@contextmanager
def open_image(data: bytes, limits: ImageLimits) -> Iterator[Image.Image]:
    """``data`` opened (header read, no pixel decoded) with the accepted formats' plugins only,
    its pixel count and frame count checked against ``limits``; yields the image, original size
    (call :func:`fit_decode` before loading it). Raises 415/422 ``InvalidInput``."""
    with pillow_errors(limits), warnings.catch_warnings():
        # Pillow warns (DecompressionBombWarning) before we get to apply our own pixel limit.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        image = Image.open(io.BytesIO(data), formats=_pillow_formats(limits))
    with image:
        _check_format(image, limits)
        _check_pixels(image, limits)
        with pillow_errors(limits):
            frames = getattr(image, "n_frames", 1)
        _check_frames(frames, limits)
        yield image


@contextmanager
def pillow_errors(limits: ImageLimits) -> Iterator[None]:
    """Translate what Pillow raises on hostile bytes into 415/422 ``InvalidInput``."""
    try:
        yield
    except UnidentifiedImageError:
        raise _unsupported(limits) from None
    except Image.DecompressionBombError:  # over twice Pillow's own limit: far over ours
        raise InvalidInput(
            f"The image has more than {limits.max_pixels} pixels, the limit.",
            code="image_too_many_pixels",
        ) from None
    except _PILLOW_ERRORS:
        raise InvalidInput(
            "The image could not be decoded (truncated or corrupt).", code="invalid_image"
        ) from None


def _pillow_formats(limits: ImageLimits) -> tuple[str, ...]:
    return tuple(f for f in limits.allowed_formats if f in _CONTENT_TYPES)


def _unsupported(limits: ImageLimits) -> UnsupportedMediaType:
    return UnsupportedMediaType(
        f"The file is not an image in a supported format ({', '.join(_pillow_formats(limits))}).",
        code="unsupported_image_format",
    )


def _check_format(image: Image.Image, limits: ImageLimits) -> None:
    if (image.format or "").upper() not in _pillow_formats(limits):
        raise _unsupported(limits)


def _check_pixels(image: Image.Image, limits: ImageLimits) -> None:
    width, height = image.size
    pixels = width * height
    if pixels <= limits.max_pixels and decode_scale(image, limits) is not None:
        return
    raise InvalidInput(
        f"The image is {width}x{height} = {pixels} pixels; the limit for {image.format} images "
        f"is {_pixel_limit(image.format, limits)} pixels.",
        code="image_too_many_pixels",
    )


def _pixel_limit(fmt: str | None, limits: ImageLimits) -> int:
    """About the most pixels an image of format ``fmt`` may have (a JPEG decodes at 1/8 scale)."""
    reduction = _DRAFT_SCALES[-1] ** 2 if fmt == "JPEG" else 1
    return min(limits.max_pixels, limits.max_decode_pixels * reduction)


def _check_frames(frames: int, limits: ImageLimits) -> None:
    if frames > limits.max_frames:
        raise InvalidInput(
            f"The image has {frames} frames; the limit is {limits.max_frames}.",
            code="image_too_many_frames",
        )


def decode_scale(image: Image.Image, limits: ImageLimits) -> int | None:
    """The smallest reduction (1, 2, 4 or 8; JPEG only past 1) at which ``image`` decodes to at
    most ``limits.max_decode_pixels`` pixels, or None when none does."""
    width, height = image.size
    scales = _DRAFT_SCALES if image.format == "JPEG" else (1,)
    for scale in scales:
        if math.ceil(width / scale) * math.ceil(height / scale) <= limits.max_decode_pixels:
            return scale
    return None


def fit_decode(image: Image.Image, limits: ImageLimits) -> None:
    """Set an opened JPEG to decode at the reduction :func:`decode_scale` picks, so loading it
    holds at most ``limits.max_decode_pixels`` pixels (other formats already fit: see
    :func:`open_image`)."""
    scale = decode_scale(image, limits) or _DRAFT_SCALES[-1]
    if scale > 1:
        width, height = image.size
        # draft picks the largest scale s with size <= original // s: floor keeps s >= scale.
        image.draft(None, (max(1, width // scale), max(1, height // scale)))


def orientation_of(image: Image.Image) -> int:
    """The loaded image's EXIF (or XMP) orientation, 1 to 8; 1 when it has none or it is
    unreadable: a broken maker note should not refuse a photo, and the API and worker read it
    alike. Call it after ``load()``: Pillow may load a PNG to find its eXIf chunk."""
    try:
        value = image.getexif().get(_ORIENTATION_TAG, 1)
    except _PILLOW_ERRORS:
        return 1
    return value if isinstance(value, int) and value in UPRIGHT else 1


def upright_size(size: tuple[int, int], orientation: int) -> tuple[int, int]:
    """``size`` as the image is shown once its orientation is applied."""
    width, height = size
    return (height, width) if orientation in _SWAPS_AXES else (width, height)
