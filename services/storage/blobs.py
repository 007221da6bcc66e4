"""Object storage: the ``BlobStore`` Protocol and its S3 adapter (boto3, any S3 endpoint)."""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from services.errors import NotFound, Unavailable
from services.settings import Settings

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client


class BlobStore(Protocol):
    def put(self, key: str, data: bytes, content_type: str) -> None: ...
    def get(self, key: str) -> bytes: ...
    def exists(self, key: str) -> bool: ...
    def modified_at(self, key: str) -> datetime | None: ...
    def delete(self, key: str) -> None: ...


_MISSING = {"404", "NoSuchKey", "NotFound"}
_MIN_CONNECTIONS = 10  # botocore's default pool


def client_config(settings: Settings, probe_timeout: float | None = None) -> Config:
    """botocore's configuration for the bucket of ``settings`` (:meth:`S3BlobStore.from_settings`).

    One client serves every thread of a process (the API's gthread threads, a worker's Celery
    threads), so its pool holds a connection for each: a smaller one would make threads wait
    for, or discard, connections."""
    connect, read = settings.s3_connect_timeout_seconds, settings.s3_read_timeout_seconds
    attempts = settings.s3_max_attempts
    if probe_timeout is not None:
        connect, read, attempts = (probe_timeout, probe_timeout, 1)
    connections = max(_MIN_CONNECTIONS, settings.api_threads, settings.worker_concurrency or 0)
    return Config(
        connect_timeout=connect,
        read_timeout=read,
        retries={"total_max_attempts": attempts, "mode": "standard"},
        max_pool_connections=connections,
        s3={"addressing_style": "path"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )


def _unavailable(message: str) -> Unavailable:
    return Unavailable(message, code="storage_unavailable")


class S3BlobStore:
    """Content-addressed objects in one bucket (the same bytes are stored once).

    ``put`` always writes, even when the key exists: that refreshes the object's modification
    time, which retention checks so it never deletes an image a job submitted a moment ago needs.
    """

    def __init__(self, client: S3Client, bucket: str) -> None:
        self._client = client
        self._bucket = bucket

    @classmethod
    def from_settings(
        cls, settings: Settings, *, probe_timeout: float | None = None
    ) -> S3BlobStore:
        """The bucket of ``settings``, each call bounded by its ``s3_*`` timeouts and attempts;
        with ``probe_timeout``, one attempt bounded by it (a readiness probe must answer fast)."""
        client = boto3.session.Session().client(
            "s3",
            endpoint_url=settings.s3_endpoint_url,
            region_name=settings.s3_region,
            aws_access_key_id=settings.s3_access_key_id,
            aws_secret_access_key=settings.s3_secret_access_key,
            config=client_config(settings, probe_timeout),
        )
        return cls(client, settings.s3_bucket)

    def close(self) -> None:
        """Close the client's connection pool."""
        self._client.close()

    def ping(self) -> None:
        """Return when the bucket answers; ``Unavailable`` when it does not."""
        try:
            self._client.head_bucket(Bucket=self._bucket)
        except (ClientError, BotoCoreError) as exc:
            raise _unavailable(f"object store unavailable: {exc}") from exc

    def put(self, key: str, data: bytes, content_type: str) -> None:
        md5 = base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()
        try:
            self._client.put_object(
                Bucket=self._bucket, Key=key, Body=data, ContentType=content_type, ContentMD5=md5
            )
        except (ClientError, BotoCoreError) as exc:
            raise _unavailable(f"object store write failed: {exc}") from exc

    def get(self, key: str) -> bytes:
        try:
            response = self._client.get_object(Bucket=self._bucket, Key=key)
            return response["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _MISSING:
                raise NotFound(f"object {key} is missing", code="image_missing") from exc
            raise _unavailable(f"object store read failed: {exc}") from exc
        except BotoCoreError as exc:
            raise _unavailable(f"object store read failed: {exc}") from exc

    def exists(self, key: str) -> bool:
        try:
            self._client.head_object(Bucket=self._bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _MISSING:
                return False
            raise _unavailable(f"object store unavailable: {exc}") from exc
        except BotoCoreError as exc:
            raise _unavailable(f"object store unavailable: {exc}") from exc
        return True

    def modified_at(self, key: str) -> datetime | None:
        try:
            head = self._client.head_object(Bucket=self._bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _MISSING:
                return None
            raise _unavailable(f"object store unavailable: {exc}") from exc
        except BotoCoreError as exc:
            raise _unavailable(f"object store unavailable: {exc}") from exc
        return head["LastModified"]

    def delete(self, key: str) -> None:
        try:
            self._client.delete_object(Bucket=self._bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            raise _unavailable(f"object store delete failed: {exc}") from exc
