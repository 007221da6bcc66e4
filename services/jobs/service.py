"""Submitting and reading jobs: validate everything, store the image, commit, THEN enqueue."""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from services.errors import Conflict, InvalidInput, Unavailable
from services.jobs.models import Job, JobStatus, Message, NewJob, SamplingParams
from services.jobs.queue import TaskQueue
from services.jobs.store import JobStore
from services.models_registry import ModelRegistry, ModelSpec
from services.settings import Settings
from services.storage.blobs import BlobStore
from services.storage.images import ImageLimits, ValidatedImage, validate_image


@dataclass(frozen=True)
class SubmitCommand:
    """A job request after parsing, before validation against the model and limits."""

    owner_id: str
    model: str
    messages: tuple[Message, ...]
    images: tuple[bytes, ...]
    params: SamplingParams
    timeout_seconds: int | None = None
    metadata: dict[str, str] = field(default_factory=dict)


def new_job_id() -> str:
    return "job_" + secrets.token_hex(12)


class JobService:
    def __init__(
        self,
        *,
        settings: Settings,
        store: JobStore,
        blobs: BlobStore,
        queue: TaskQueue,
        registry: ModelRegistry,
        clock: Callable[[], datetime],
    ) -> None:
        self._settings = settings
        self._store = store
        self._blobs = blobs
        self._queue = queue
        self._registry = registry
        self._clock = clock
        self._limits = ImageLimits(
            max_bytes=settings.max_image_bytes,
            max_pixels=settings.max_image_pixels,
            allowed_formats=settings.allowed_image_formats,
        )

    def submit(self, command: SubmitCommand) -> Job:
        """Create a queued job. Nothing is stored or queued unless every check passes."""
        spec = self._registry.get(command.model)
        params = self._resolve_params(spec, command.params)
        timeout = self._resolve_timeout(command.timeout_seconds)
        if len(command.images) > spec.max_images:
            raise InvalidInput(
                f"Model {spec.name} reads at most {spec.max_images} image(s) per job; "
                f"got {len(command.images)}.",
                code="too_many_images",
            )
        if (
            command.images
            and not spec.system_prompt_with_images
            and any(m.role == "system" for m in command.messages)
        ):
            raise InvalidInput(
                f"Model {spec.name} does not accept a system message together with an image; "
                "put the instructions in the user message.",
                code="system_message_with_image",
            )
        validated = [validate_image(data, self._limits) for data in command.images]
        self._store_images(validated)
        job = self._store.insert(
            NewJob(
                id=new_job_id(),
                owner_id=command.owner_id,
                model=spec.name,
                messages=command.messages,
                images=tuple(v.ref for v in validated),
                params=params,
                price=spec.price,
                timeout_seconds=timeout,
                metadata=command.metadata,
            ),
            self._clock(),
        )
        try:
            self._queue.enqueue_inference(job.id)
        except Unavailable:
            # Enqueue after commit failed: take the job back so the client never sees a job
            # that will not run. The content-addressed image may stay; it is shared and harmless.
            self._store.delete_queued(job.id)
            raise
        return job

    def get(self, job_id: str, owner_id: str) -> Job:
        return self._store.get_for_owner(job_id, owner_id)

    def cancel(self, job_id: str, owner_id: str) -> Job:
        """Cancel a job: a queued job never runs; a running one has its engine request aborted.

        Idempotent for jobs already canceled; a job that already finished is a 409.
        """
        job = self._store.get_for_owner(job_id, owner_id)
        for _ in range(3):  # the job may move between our read and our compare-and-set
            if job.status is JobStatus.QUEUED and self._store.cancel_queued(job_id, self._clock()):
                return self._store.get(job_id)
            if job.status is JobStatus.RUNNING:
                self._store.request_cancel(job_id, self._clock())
                return self._store.get(job_id)
            if job.status is JobStatus.CANCELED:
                return job
            if job.status.terminal:
                raise Conflict(
                    f"Job {job_id} already {job.status.value}; only queued or running jobs can be "
                    "canceled.",
                    code="job_finished",
                )
            job = self._store.get(job_id)
        raise Conflict(f"Job {job_id} changed state while canceling; retry.", code="job_busy")

    def _store_images(self, images: list[ValidatedImage]) -> None:
        for image in images:
            self._blobs.put(image.ref.key, image.data, image.ref.content_type)

    def _resolve_params(self, spec: ModelSpec, params: SamplingParams) -> SamplingParams:
        unsupported = params.features() - spec.features
        if unsupported:
            raise InvalidInput(
                f"Model {spec.name} ({spec.engine} engine) does not support "
                f"{', '.join(sorted(unsupported))}.",
                code="unsupported_parameter",
            )
        max_tokens = params.max_tokens if params.max_tokens is not None else spec.default_max_tokens
        if max_tokens > spec.max_output_tokens:
            raise InvalidInput(
                f"max_tokens {max_tokens} exceeds the limit of {spec.max_output_tokens} "
                f"for model {spec.name}.",
                code="invalid_parameter",
            )
        return dataclasses.replace(params, max_tokens=max_tokens)

    def _resolve_timeout(self, requested: int | None) -> int:
        timeout = requested if requested is not None else self._settings.job_timeout_seconds
        if not 1 <= timeout <= self._settings.max_job_timeout_seconds:
            raise InvalidInput(
                f"timeout_seconds must be between 1 and {self._settings.max_job_timeout_seconds}.",
                code="invalid_parameter",
            )
        return timeout
