"""Uploading, reading and deleting files; and handing a file's image to a job at submit.

An upload is validated exactly like a job image (size, pixels, format) and stored under its
SHA-256, so a file and a job that carry the same picture share one object. Deleting a file (by
its owner, or by the retention sweep) deletes the object too, unless a job that keeps its data or
another file still uses it.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta

from services.clock import timestamp
from services.errors import InvalidInput, NotFound, Unavailable
from services.files.store import FileStore, StoredFile
from services.storage.blobs import BlobStore
from services.storage.images import DecodeBudget, ImageLimits, validate_image
from services.storage.orphans import discard_unless_kept

MAX_FILENAME = 255
# Between the object store's clock and ours: an object written within this of the upload is the
# upload's own write, not a later submit's.
CLOCK_SKEW = timedelta(seconds=5)
log = logging.getLogger("loupe.files")


def _clean_filename(name: str | None) -> str | None:
    """The client's file name, for display: printable characters only, at most 255."""
    cleaned = "".join(ch for ch in (name or "") if ch.isprintable())[-MAX_FILENAME:]
    return cleaned or None


def new_file_id() -> str:
    return "file_" + secrets.token_hex(12)


class FileService:
    def __init__(
        self,
        *,
        store: FileStore,
        blobs: BlobStore,
        limits: ImageLimits,
        decode_budget: DecodeBudget,
        clock: Callable[[], datetime],
        retention: timedelta | None,
        job_keeps_image: Callable[[str], bool],
    ) -> None:
        self._store = store
        self._blobs = blobs
        self._limits = limits
        self._decode_budget = decode_budget
        self._clock = clock
        self.retention = retention  # None: files are kept until deleted
        self._job_keeps_image = job_keeps_image  # image key -> a kept job still uses it

    def upload(self, owner_id: str, data: bytes, filename: str | None) -> StoredFile:
        """Validate and store an image file. If its row cannot be written, the object just
        stored is taken back unless a job or another file names it (``discard_unless_kept``)."""
        validated = validate_image(data, self._limits, self._decode_budget)
        self._blobs.put(validated.ref.key, validated.data, validated.ref.content_type)
        file = StoredFile(
            id=new_file_id(),
            owner_id=owner_id,
            filename=_clean_filename(filename),
            image=validated.ref,
            created_at=self._clock(),
        )
        try:
            self._store.insert(file)
        except Exception:
            discard_unless_kept(self._blobs, validated, self._kept)
            raise
        return file

    def _kept(self, key: str) -> bool:
        return self.keeps_image(key) or self._job_keeps_image(key)

    def get(self, owner_id: str, file_id: str) -> StoredFile:
        file = self._store.get(file_id)
        if file is None or file.owner_id != owner_id:
            raise NotFound(f"No file {file_id!r}.", code="file_not_found")
        return file

    def list(
        self, owner_id: str, limit: int, after_id: str | None
    ) -> tuple[list[StoredFile], bool]:
        """A page of the owner's files, newest first, and whether more follow."""
        after = None if after_id is None else self.get(owner_id, after_id)
        rows = self._store.list_for_owner(owner_id, limit + 1, after)
        return rows[:limit], len(rows) > limit

    def content(self, owner_id: str, file_id: str) -> tuple[StoredFile, bytes]:
        """The owner's file and its image bytes (404 if either is gone)."""
        file = self.get(owner_id, file_id)
        try:
            return file, self._blobs.get(file.image.key)
        except NotFound:
            raise NotFound(f"No file {file_id!r}.", code="file_not_found") from None

    def delete(self, owner_id: str, file_id: str) -> None:
        file = self.get(owner_id, file_id)
        if self._store.delete(file.id):
            self.drop_image_unless_used(file)

    def image_for_job(self, owner_id: str, file_id: str) -> bytes:
        """The bytes of the owner's file, for a job being submitted. A file named in a job's
        body that is not there is bad input (422), not a missing resource (404)."""
        try:
            return self.content(owner_id, file_id)[1]
        except NotFound:
            raise InvalidInput(
                f"image_file.file_id {file_id!r} is not one of this key's files.",
                code="file_not_found",
            ) from None

    def expires_at(self, file: StoredFile) -> datetime | None:
        return None if self.retention is None else file.created_at + self.retention

    def keeps_image(self, key: str) -> bool:
        """Whether any file keeps the image stored under ``key`` (for the jobs' retention)."""
        return self._store.image_in_use(key.rsplit("/", 1)[-1])

    def drop_image_unless_used(self, file: StoredFile) -> bool:
        """Delete a removed file's object unless a kept job or another file still uses it, or it
        was stored again after the upload (a job being submitted right now may need it)."""
        image = file.image
        if self._store.image_in_use(image.sha256, (file.id,)) or self._job_keeps_image(image.key):
            return False
        try:
            modified = self._blobs.modified_at(image.key)
            if modified is not None and modified > file.created_at + CLOCK_SKEW:
                return False
            self._blobs.delete(image.key)
        except Unavailable as exc:
            # The file is gone either way; its image stays until the object store answers.
            log.warning("file %s: could not delete its image: %s", file.id, exc.message)
            return False
        return True

    def remove_expired(self, now: datetime, limit: int = 200) -> int:
        """Delete files older than the retention period (and their unused images)."""
        if self.retention is None:
            return 0
        removed = 0
        for file in self._store.created_before(now - self.retention, limit):
            if self._store.delete(file.id):
                self.drop_image_unless_used(file)
                removed += 1
        return removed


def file_to_public(file: StoredFile, expires_at: datetime | None) -> dict[str, object]:
    image = file.image
    return {
        "id": file.id,
        "object": "file",
        "filename": file.filename,
        "bytes": image.size_bytes,
        "content_type": image.content_type,
        "width": image.width,
        "height": image.height,
        "sha256": image.sha256,
        "created_at": timestamp(file.created_at),
        "expires_at": timestamp(expires_at),
    }
