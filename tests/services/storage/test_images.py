"""validate_image: every hostile file is a 4xx, and validation memory stays bounded."""

from __future__ import annotations

import contextlib
import dataclasses
import random
import struct
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable

import pytest
from PIL import Image, PngImagePlugin

from services.errors import InvalidInput, LoupeError, Unavailable
from services.settings import Settings
from services.storage.images import DecodeBudget, ImageLimits, validate_image
from tests.helpers import peak_rss_growth
from tests.support.images import animated_image, gif_screen_bomb, make_image, png_bomb

DEFAULTS = ImageLimits.from_settings(Settings())
EXIF_ORIENTATION = 0x0112


def _limits(**changes: int) -> ImageLimits:
    return dataclasses.replace(DEFAULTS, **changes)


def _refusal(data: bytes, limits: ImageLimits = DEFAULTS) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        validate_image(data, limits)
    return caught.value


def _with_text_bomb(kind: bytes) -> bytes:
    """A small PNG carrying a zTXt or iTXt chunk that inflates past Pillow's MAX_TEXT_CHUNK."""
    text = zlib.compress(b"a" * (PngImagePlugin.MAX_TEXT_CHUNK + 1024), 9)
    body = b"k\x00\x00" + text if kind == b"zTXt" else b"k\x00\x01\x00\x00\x00" + text
    chunk = struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    png = make_image(8, 8)
    return png[:33] + chunk + png[33:]  # after the 8-byte signature and the 25-byte IHDR


def _truncations(fmt: str) -> list[bytes]:
    data = make_image(64, 48, fmt)
    return [data[:n] for n in range(1, len(data), max(1, len(data) // 120))]


def _corruptions(fmt: str, count: int = 150) -> list[bytes]:
    rng = random.Random(fmt)  # the same cases on every run
    base = make_image(64, 48, fmt)
    cases = []
    for _ in range(count):
        data = bytearray(base)
        for _ in range(rng.randint(1, 6)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        cases.append(bytes(data))
    return cases


@pytest.mark.parametrize("kind", [b"zTXt", b"iTXt"])
def test_a_png_text_bomb_is_invalid_image(kind: bytes) -> None:
    refusal = _refusal(_with_text_bomb(kind))
    assert (refusal.http_status, refusal.code) == (422, "invalid_image")


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP"])
def test_a_file_cut_inside_its_header_is_invalid_image(fmt: str) -> None:
    refusal = _refusal(make_image(64, 48, fmt)[:40])
    assert (refusal.http_status, refusal.code) == (422, "invalid_image")
    assert "0x" not in refusal.message and "PIL" not in refusal.message


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF"])
def test_every_truncation_and_corruption_is_a_4xx(fmt: str) -> None:
    answers = {_answer(data) for data in _truncations(fmt) + _corruptions(fmt)}
    assert answers <= {200, 413, 415, 422}


def _answer(data: bytes) -> int:
    """The HTTP status ``data`` would get from validation (200: accepted)."""
    try:
        validate_image(data, DEFAULTS)
    except LoupeError as exc:
        return exc.http_status
    return 200


def test_a_20000_square_png_is_too_many_pixels_not_unsupported() -> None:
    refusal = _refusal(png_bomb(20_000, rgb=False))
    assert (refusal.http_status, refusal.code) == (422, "image_too_many_pixels")


@pytest.mark.parametrize(
    "data",
    [pytest.param(png_bomb(6324), id="png-6324"), pytest.param(gif_screen_bomb(), id="gif-6000")],
)
def test_an_image_that_cannot_be_decoded_within_the_decode_limit_is_refused(data: bytes) -> None:
    """114 kB of PNG and 43 bytes of GIF, both under the 40 Mpx image limit, would decode to
    120 MB and 36 MB (the GIF's logical screen): past LOUPE_MAX_DECODE_PIXELS."""
    refusal = _refusal(data)
    assert (refusal.http_status, refusal.code) == (422, "image_too_many_pixels")
    assert str(DEFAULTS.max_decode_pixels) in refusal.message


def test_a_jpeg_past_the_decode_limit_is_validated_at_a_reduced_scale() -> None:
    data = make_image(1200, 900, "JPEG")  # 1.08 Mpx: decodes at 1/2 scale within 300 kpx
    image = validate_image(data, _limits(max_decode_pixels=300_000)).ref
    assert (image.width, image.height) == (1200, 900)
    refusal = _refusal(data, _limits(max_decode_pixels=16_000))  # 1/8 scale: 150x113, too many
    assert refusal.code == "image_too_many_pixels"


def test_a_truncated_jpeg_is_caught_at_a_reduced_scale_too() -> None:
    data = make_image(1200, 900, "JPEG")
    refusal = _refusal(data[: len(data) * 3 // 4], _limits(max_decode_pixels=20_000))
    assert refusal.code == "invalid_image"


@pytest.mark.parametrize("fmt", ["GIF", "PNG", "WEBP"])
def test_an_animation_past_the_frame_limit_is_refused(fmt: str) -> None:
    limits = _limits(max_frames=4)
    assert validate_image(animated_image(4, fmt), limits).ref.width == 16
    refusal = _refusal(animated_image(5, fmt), limits)
    assert (refusal.http_status, refusal.code) == (422, "image_too_many_frames")


def test_dimensions_are_reported_upright() -> None:
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6  # stored landscape, shown portrait
    ref = validate_image(make_image(40, 20, "JPEG", exif=exif), DEFAULTS).ref
    assert (ref.width, ref.height) == (20, 40)


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(lambda: png_bomb(6324), id="png-6324"),
        pytest.param(gif_screen_bomb, id="gif-6000"),
        pytest.param(lambda: make_image(6000, 4000, "JPEG"), id="jpeg-24mpx-accepted"),
    ],
)
def test_eight_concurrent_bomb_validations_raise_rss_by_less_than_200_mb(
    build: Callable[[], bytes],
) -> None:
    """With the default limits. Before the decode bound: +2.2 GB for the PNG, +0.5 GB for the
    GIF; the JPEG is accepted and decoded at 1/8 scale."""
    data = build()
    with contextlib.suppress(InvalidInput):
        validate_image(data, DEFAULTS)  # Pillow loads its plugins once, on first use
    growth = peak_rss_growth(
        lambda: validate_image(data, DEFAULTS), threads=8, expected=InvalidInput
    )
    assert growth < 200 * 2**20


def test_eight_concurrent_validations_within_a_budget_hold_about_one_image() -> None:
    """Eight 4096x4096 PNGs (the largest accepted) at once: +430-500 MB without a budget; with
    the process's budget (one such image), the decodes take turns."""
    data = png_bomb(4096)
    budget = DecodeBudget(DEFAULTS.max_decode_pixels)
    validate_image(png_bomb(64), DEFAULTS, budget)  # Pillow loads its plugins once, on first use
    growth = peak_rss_growth(lambda: validate_image(data, DEFAULTS, budget), threads=8)
    assert growth < 200 * 2**20


class Holder:
    """A thread holding ``pixels`` of ``budget`` until released; records when it got them."""

    def __init__(self, budget: DecodeBudget, pixels: int, log: list[str], name: str) -> None:
        self.release = threading.Event()
        self.error: Exception | None = None
        self._thread = threading.Thread(target=self._run, args=(budget, pixels, log, name))
        self._thread.start()

    def _run(self, budget: DecodeBudget, pixels: int, log: list[str], name: str) -> None:
        try:
            with budget.share(pixels):
                log.append(name)
                self.release.wait(10)
        except Exception as exc:  # noqa: BLE001 - the test reads it
            self.error = exc

    def done(self) -> None:
        self.release.set()
        self._thread.join(10)


def _eventually(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.01)


def _waiting(budget: DecodeBudget, count: int) -> Callable[[], bool]:
    return lambda: len(budget._line) == count  # threads queued for their share


def test_the_budget_serves_in_arrival_order_and_a_large_image_takes_it_all() -> None:
    budget, log = DecodeBudget(100), []
    first = Holder(budget, 60, log, "first")
    _eventually(lambda: log == ["first"])
    large = Holder(budget, 1000, log, "large")  # over the budget: waits for all of it
    _eventually(_waiting(budget, 1))
    small = Holder(budget, 10, log, "small")  # would fit now, but the large one came first
    _eventually(_waiting(budget, 2))
    time.sleep(0.1)  # a chance to jump the line, which it must not take
    assert log == ["first"]
    first.done()
    _eventually(lambda: log == ["first", "large"])
    large.done()
    small.done()
    assert log == ["first", "large", "small"]
    assert first.error is large.error is small.error is None


def test_a_decode_that_waits_past_the_timeout_is_a_503_to_retry() -> None:
    budget, log = DecodeBudget(100, timeout=0.2), []
    holder = Holder(budget, 100, log, "holder")
    _eventually(lambda: log == ["holder"])
    with pytest.raises(Unavailable) as refused, budget.share(1):
        pass
    holder.done()
    assert refused.value.code == "decode_busy" and refused.value.retry_after == 1
    assert budget._line == deque()  # the refused request left the line
    with budget.share(100):  # everything was given back
        pass
