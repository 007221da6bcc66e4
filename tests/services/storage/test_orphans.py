"""Taking back a refused request's image: only when nothing names it, checked before and after."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from services.errors import Unavailable
from services.settings import Settings
from services.storage.blobs import S3BlobStore
from services.storage.images import ImageLimits, ValidatedImage, validate_image
from services.storage.orphans import discard_unless_kept
from tests.support.images import make_image

LIMITS = ImageLimits.from_settings(Settings())


@pytest.fixture
def blobs(settings) -> Iterator[S3BlobStore]:
    store = S3BlobStore.from_settings(settings)
    yield store
    store.close()


@pytest.fixture
def image(blobs: S3BlobStore) -> ValidatedImage:
    stored = validate_image(make_image(40, 30), LIMITS)
    blobs.put(stored.ref.key, stored.data, stored.ref.content_type)
    return stored


def answers(*values: bool):
    """A ``kept`` that answers ``values`` in turn (and records the keys it was asked about)."""
    asked: list[str] = []
    replies = iter(values)

    def kept(key: str) -> bool:
        asked.append(key)
        return next(replies)

    kept.asked = asked  # type: ignore[attr-defined]
    return kept


def test_an_image_nothing_names_is_deleted(blobs, image):
    kept = answers(False, False)
    assert discard_unless_kept(blobs, image, kept) is True
    assert not blobs.exists(image.ref.key)
    assert kept.asked == [image.ref.key, image.ref.key]


def test_an_image_a_job_or_file_names_stays(blobs, image):
    assert discard_unless_kept(blobs, image, answers(True)) is False
    assert blobs.get(image.ref.key) == image.data


def test_an_image_named_while_it_was_deleted_is_put_back(blobs, image):
    """Another request stored the same bytes and committed its job between our check and our
    delete: the second check sees it and the object comes back, byte for byte."""
    assert discard_unless_kept(blobs, image, answers(False, True)) is False
    assert blobs.get(image.ref.key) == image.data


class FailingDeletes:
    """The real bucket, except that deleting fails as an unreachable store would."""

    def __init__(self, blobs: S3BlobStore) -> None:
        self._blobs = blobs

    def put(self, key: str, data: bytes, content_type: str) -> None:
        self._blobs.put(key, data, content_type)

    def get(self, key: str) -> bytes:
        return self._blobs.get(key)

    def exists(self, key: str) -> bool:
        return self._blobs.exists(key)

    def modified_at(self, key: str):
        return self._blobs.modified_at(key)

    def delete(self, key: str) -> None:
        raise Unavailable("object store delete failed: connection refused")


def test_a_store_or_database_that_fails_leaves_the_image_and_raises_nothing(blobs, image):
    assert discard_unless_kept(FailingDeletes(blobs), image, answers(False)) is False

    def database_down(key: str) -> bool:
        raise Unavailable("database unavailable")

    assert discard_unless_kept(blobs, image, database_down) is False
    assert blobs.exists(image.ref.key)
