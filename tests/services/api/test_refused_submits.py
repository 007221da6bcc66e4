"""A submit refused after its image was stored leaves nothing behind, and never takes an image
that another job or file names: real SQLite, SeaweedFS and Redis, requests racing on threads."""

from __future__ import annotations

import io
import threading
import time
from datetime import datetime
from typing import Any

from services.errors import Unavailable
from services.storage.blobs import BlobStore
from services.storage.images import ImageLimits, validate_image
from tests.conftest import auth
from tests.helpers import chat_body, count_jobs, object_keys
from tests.support.images import make_image

LIMITS = ImageLimits(max_bytes=10**6, max_pixels=10**6, allowed_formats=("PNG",))
LATE_SECONDS = 0.3


class MeetingBlobs:
    """The real bucket, but the first ``parties`` puts wait for each other, so that concurrent
    submits have all passed their Idempotency-Key check and stored their images before any of
    them inserts its job; the put of ``late_key`` then lingers, so its request loses the race."""

    def __init__(self, blobs: BlobStore, parties: int, late_key: str) -> None:
        self._blobs = blobs
        self._parties = parties
        self._arrived = 0
        self._lock = threading.Lock()
        self._all_here = threading.Event()
        self._late_key = late_key

    def put(self, key: str, data: bytes, content_type: str) -> None:
        self._blobs.put(key, data, content_type)
        with self._lock:
            self._arrived += 1
            meeting = self._arrived <= self._parties  # a later put (a put back) does not wait
            if self._arrived == self._parties:
                self._all_here.set()
        if meeting:
            assert self._all_here.wait(timeout=10), "the other submits never stored their images"
        if key == self._late_key:
            time.sleep(LATE_SECONDS)

    def get(self, key: str) -> bytes:
        return self._blobs.get(key)

    def exists(self, key: str) -> bool:
        return self._blobs.exists(key)

    def modified_at(self, key: str) -> datetime | None:
        return self._blobs.modified_at(key)

    def delete(self, key: str) -> None:
        self._blobs.delete(key)


def _race(api: Any, key: str, bodies: list[dict[str, Any]]) -> list[Any]:
    """POST every body at once with the same Idempotency-Key; the answers in body order."""
    answers: list[Any] = [None] * len(bodies)

    def submit(index: int) -> None:
        headers = auth(key) | {"Idempotency-Key": "order-7"}
        answers[index] = api.client().post("/v1/jobs", json=bodies[index], headers=headers)

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


def _key_of(image: bytes) -> str:
    return validate_image(image, LIMITS).ref.key


def _race_two_images(api: Any, key: str, winner: bytes, loser: bytes) -> tuple[Any, Any]:
    """Race a submit of ``winner`` against one of ``loser`` under one Idempotency-Key."""
    api.job_service._blobs = MeetingBlobs(api.blobs, 2, late_key=_key_of(loser))
    won, lost = _race(api, key, [chat_body(winner), chat_body(loser)])
    assert won.status_code == 202, won.json
    assert lost.status_code == 409 and lost.json["error"]["code"] == "idempotency_key_reused"
    return won, lost


def test_the_loser_of_a_same_key_race_leaves_no_image(api, settings, s3_server, user_key):
    """Before: the loser's image stayed in the bucket, named by nothing."""
    winner, loser = make_image(64, 48), make_image(65, 48)
    won, _ = _race_two_images(api, user_key, winner, loser)
    assert object_keys(s3_server, settings.s3_bucket) == {_key_of(winner)}
    assert [ref.key for ref in api.jobs.get(won.json["id"]).images] == [_key_of(winner)]
    assert count_jobs(api.db_engine) == 1


def test_the_losers_image_stays_when_another_job_names_it(
    client, api, settings, s3_server, user_key, other_key
):
    shared, winner = make_image(70, 40), make_image(71, 40)
    earlier = client.post("/v1/jobs", json=chat_body(shared), headers=auth(other_key))
    assert earlier.status_code == 202
    _race_two_images(api, user_key, winner, shared)
    assert object_keys(s3_server, settings.s3_bucket) == {_key_of(shared), _key_of(winner)}


def test_the_losers_image_stays_when_an_uploaded_file_names_it(
    client, api, settings, s3_server, user_key
):
    shared, winner = make_image(72, 40), make_image(73, 40)
    upload = client.post(
        "/v1/files",
        data={"file": (io.BytesIO(shared), "a.png")},
        headers=auth(user_key),
        content_type="multipart/form-data",
    )
    assert upload.status_code == 201
    _race_two_images(api, user_key, winner, shared)
    assert object_keys(s3_server, settings.s3_bucket) == {_key_of(shared), _key_of(winner)}


class FailingInserts:
    """The real files table, except that writing a row fails as a lost database would."""

    def __init__(self, store: Any) -> None:
        self._store = store

    def insert(self, file: Any) -> None:
        raise Unavailable("database unavailable: connection lost")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def test_an_upload_whose_row_cannot_be_written_leaves_no_image(
    client, api, settings, s3_server, user_key
):
    """Before: the image stayed in the bucket, named by no file."""
    api.files._store = FailingInserts(api.files._store)
    response = client.post(
        "/v1/files",
        data={"file": (io.BytesIO(make_image(74, 40)), "a.png")},
        headers=auth(user_key),
        content_type="multipart/form-data",
    )
    assert response.status_code == 503, response.json
    assert object_keys(s3_server, settings.s3_bucket) == set()
