"""/v1/files and jobs that name an uploaded file: real SQLite, S3 and Redis."""

from __future__ import annotations

import hashlib
import io
from datetime import timedelta

from sqlalchemy import func, select

from services.clock import utcnow
from services.db.schema import files
from services.jobs.maintenance import remove_old_data
from tests.conftest import auth
from tests.helpers import chat_body, count_jobs, count_objects, queue_length
from tests.support.images import make_image


def upload(client, key, data: bytes, name: str = "cat.png"):
    return client.post(
        "/v1/files",
        data={"file": (io.BytesIO(data), name)},
        headers=auth(key),
        content_type="multipart/form-data",
    )


def file_job(file_id: str, **extra):
    body = chat_body(None, **extra)
    body["messages"][0]["content"].insert(
        0, {"type": "image_file", "image_file": {"file_id": file_id}}
    )
    return body


def count_files(api) -> int:
    with api.db_engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(files)).scalar_one())


def test_upload_answers_201_with_the_file_and_stores_the_image(client, api, user_key):
    image = make_image(80, 60)
    response = upload(client, user_key, image)
    assert response.status_code == 201, response.json
    body = response.json
    assert (
        body["id"].startswith("file_") and response.headers["Location"] == f"/v1/files/{body['id']}"
    )
    assert body["object"] == "file" and body["filename"] == "cat.png"
    assert (body["bytes"], body["width"], body["height"]) == (len(image), 80, 60)
    assert body["content_type"] == "image/png"
    assert body["sha256"] == hashlib.sha256(image).hexdigest()
    assert body["expires_at"] is not None  # the retention period (30 days by default)
    key = f"images/{body['sha256'][:2]}/{body['sha256']}"
    assert api.blobs.get(key) == image
    assert client.get(f"/v1/files/{body['id']}", headers=auth(user_key)).json == body


def test_bad_uploads_are_4xx_and_create_nothing(client, api, settings, s3_server, user_key):
    cases = [
        (upload(client, user_key, b"not an image", "x.txt"), 415, "unsupported_image_format"),
        (upload(client, user_key, make_image(300, 300, "BMP")), 413, "image_too_large"),  # < 500 KB: werkzeug's test client spools bigger bodies to a file it never closes
        (client.post("/v1/files", data={"purpose": "vision"}, headers=auth(user_key),
                     content_type="multipart/form-data"), 422, "invalid_parameter"),
        (client.post("/v1/files", json={"file": "x"}, headers=auth(user_key)),
         415, "unsupported_media_type"),
        # Found by schemathesis: any purpose was taken (and ignored), "{}" and "batch" too.
        (client.post("/v1/files", data={"file": (io.BytesIO(make_image()), "a.png"),
                                        "purpose": "batch"},
                     headers=auth(user_key), content_type="multipart/form-data"),
         422, "invalid_parameter"),
        (client.post("/v1/files", data={"file": (io.BytesIO(make_image()), "a.png"), "x": "1"},
                     headers=auth(user_key), content_type="multipart/form-data"),
         422, "invalid_parameter"),
        (client.post("/v1/files", data={"file": (io.BytesIO(make_image()), "a.png")}),
         401, "missing_api_key"),
    ]  # fmt: skip
    for response, status, code in cases:
        assert (response.status_code, response.json["error"]["code"]) == (status, code)
    assert count_files(api) == 0
    assert count_objects(s3_server, settings.s3_bucket) == 0


def test_files_are_private_to_their_key_and_listed_newest_first(client, user_key, other_key):
    ids = [upload(client, user_key, make_image(20 + n, 20)).json["id"] for n in range(3)]
    theirs = upload(client, other_key, make_image(50, 50)).json["id"]
    assert client.get(f"/v1/files/{theirs}", headers=auth(user_key)).status_code == 404
    assert client.delete(f"/v1/files/{theirs}", headers=auth(user_key)).status_code == 404
    first = client.get("/v1/files?limit=2", headers=auth(user_key)).json
    assert [f["id"] for f in first["data"]] == ids[::-1][:2] and first["has_more"] is True
    rest = client.get(f"/v1/files?limit=2&after={first['last_id']}", headers=auth(user_key)).json
    assert [f["id"] for f in rest["data"]] == [ids[0]] and rest["has_more"] is False
    assert client.get("/v1/files?limit=0", headers=auth(user_key)).status_code == 422
    assert client.get("/v1/files?sort=asc", headers=auth(user_key)).status_code == 422


def test_a_job_names_an_uploaded_file(client, api, user_key):
    image = make_image(70, 40)
    file_id = upload(client, user_key, image).json["id"]
    response = client.post("/v1/jobs", json=file_job(file_id), headers=auth(user_key))
    assert response.status_code == 202, response.json
    job = api.jobs.get(response.json["id"])
    assert [ref.sha256 for ref in job.images] == [hashlib.sha256(image).hexdigest()]
    assert api.blobs.get(job.images[0].key) == image


def test_a_job_naming_a_missing_or_foreign_file_is_422_and_creates_nothing(
    client, api, settings, user_key, other_key
):
    theirs = upload(client, other_key, make_image()).json["id"]
    for file_id in (theirs, "file_doesnotexist"):
        response = client.post("/v1/jobs", json=file_job(file_id), headers=auth(user_key))
        assert response.status_code == 422
        assert response.json["error"]["code"] == "file_not_found"
    assert count_jobs(api.db_engine) == 0 and queue_length(settings.broker_url) == 0


def test_delete_removes_the_file_and_its_image_unless_a_job_keeps_it(
    client, api, settings, s3_server, user_key
):
    alone = upload(client, user_key, make_image(30, 30)).json
    shared = upload(client, user_key, make_image(40, 40)).json
    assert client.post("/v1/jobs", json=file_job(shared["id"]),
                       headers=auth(user_key)).status_code == 202  # fmt: skip
    assert count_objects(s3_server, settings.s3_bucket) == 2
    for file in (alone, shared):
        response = client.delete(f"/v1/files/{file['id']}", headers=auth(user_key))
        assert response.json == {"id": file["id"], "object": "file", "deleted": True}
        assert client.get(f"/v1/files/{file['id']}", headers=auth(user_key)).status_code == 404
    # The queued job still needs the shared image; nothing needs the other one.
    assert count_objects(s3_server, settings.s3_bucket) == 1
    assert api.blobs.exists(f"images/{shared['sha256'][:2]}/{shared['sha256']}")
    assert client.delete(f"/v1/files/{alone['id']}", headers=auth(user_key)).status_code == 404


def test_retention_removes_old_files_and_keeps_images_that_files_keep(
    client, api, settings, s3_server, user_key
):
    old = upload(client, user_key, make_image(30, 30)).json
    job_id = client.post("/v1/jobs", json=chat_body(make_image(44, 44)),
                         headers=auth(user_key)).json["id"]  # fmt: skip
    job = api.jobs.claim(job_id, utcnow(), timedelta(seconds=60))
    assert api.jobs.succeed(
        job_id, job.attempts, utcnow(), text="t", finish_reason="stop",
        prompt_tokens=1, completion_tokens=1,
    )  # fmt: skip
    # A file uploaded later keeps the finished job's image past the job's retention.
    kept = upload(client, user_key, make_image(44, 44)).json
    files_ = api.files
    later = utcnow() + timedelta(days=31)
    report = remove_old_data(api.jobs, api.blobs, later, timedelta(days=30),
                             kept_elsewhere=files_.keeps_image)  # fmt: skip
    assert report.jobs == 1 and report.images_deleted == 0
    assert api.blobs.exists(f"images/{kept['sha256'][:2]}/{kept['sha256']}")
    # The file retention: both files are past it once 31 days have gone by.
    assert files_.remove_expired(utcnow()) == 0
    assert files_.remove_expired(later) == 2
    assert count_files(api) == 0
    assert count_objects(s3_server, settings.s3_bucket) == 0
    assert old["expires_at"] is not None


def test_odd_names_and_ids_are_handled_without_a_500(client, user_key):
    body = upload(client, user_key, make_image(), "evil\x00name\t.png").json
    assert body["filename"] == "evilname.png"
    assert client.get("/v1/files/file_%00x", headers=auth(user_key)).status_code == 404
    assert client.get("/v1/jobs/job_%00x", headers=auth(user_key)).status_code == 404
    assert client.get("/v1/files?limit=\u00b2", headers=auth(user_key)).status_code == 422


def test_deleting_a_file_keeps_an_image_stored_again_since_its_upload(api, user_key):
    # The file was uploaded a minute ago; the same picture was stored again just now (a job
    # being submitted with it, whose row is not written yet): the image must stay.
    from services.files.service import FileService
    from services.storage.images import DecodeBudget, ImageLimits

    owner = api.keys.authenticate(user_key).id
    earlier = FileService(
        store=api.files._store,
        blobs=api.blobs,
        limits=ImageLimits(max_bytes=10**6, max_pixels=10**6, allowed_formats=("PNG",)),
        decode_budget=DecodeBudget(10**6),
        clock=lambda: utcnow() - timedelta(minutes=1),
        retention=None,
        job_keeps_image=lambda key: False,
    )
    image = make_image(33, 33)
    file = earlier.upload(owner, image, "a.png")
    api.blobs.put(file.image.key, image, "image/png")
    earlier.delete(owner, file.id)
    assert api.blobs.exists(file.image.key)


def test_file_content_returns_the_uploaded_bytes_to_their_owner_only(client, user_key, other_key):
    image = make_image(21, 13)
    file_id = upload(client, user_key, image).json["id"]
    response = client.get(f"/v1/files/{file_id}/content", headers=auth(user_key))
    assert response.status_code == 200 and response.data == image
    assert response.mimetype == "image/png"
    assert response.headers["ETag"] == f'"{hashlib.sha256(image).hexdigest()}"'
    assert client.get(f"/v1/files/{file_id}/content", headers=auth(other_key)).status_code == 404


def test_a_multipart_job_names_uploaded_files_with_file_id(client, api, user_key):
    image = make_image(52, 31)
    file_id = upload(client, user_key, image).json["id"]
    response = client.post(
        "/v1/jobs",
        data={"file_id": file_id, "prompt": "What is it?"},
        headers=auth(user_key),
        content_type="multipart/form-data",
    )
    assert response.status_code == 202, response.json
    job = api.jobs.get(response.json["id"])
    assert [ref.sha256 for ref in job.images] == [hashlib.sha256(image).hexdigest()]
    missing = client.post(
        "/v1/jobs",
        data={"file_id": "file_nope", "prompt": "What is it?"},
        headers=auth(user_key),
        content_type="multipart/form-data",
    )
    assert missing.status_code == 422 and missing.json["error"]["code"] == "file_not_found"


def test_an_empty_after_is_422_like_an_empty_jobs_cursor(client, user_key):
    """``?after=`` was looked up as a file id: a 404 for a parameter the client left empty."""
    files = client.get("/v1/files?after=", headers=auth(user_key))
    jobs = client.get("/v1/jobs?cursor=", headers=auth(user_key))
    assert (files.status_code, files.json["error"]["code"]) == (422, "invalid_parameter")
    assert jobs.status_code == 422


def test_a_long_file_name_is_cut_to_its_last_255_characters(client, user_key):
    body = upload(client, user_key, make_image(), "a" * 100_000 + ".png").json
    assert len(body["filename"]) == 255 and body["filename"].endswith("aaa.png")
