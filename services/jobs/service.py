"""Submitting and reading jobs: validate everything, store the image, commit, THEN nudge the
dispatcher (SQL is the queue of record; ``services.dispatch`` hands the job to the broker)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from services.catalog.registry import ModelRegistry
from services.catalog.spec import ModelSpec
from services.errors import Conflict, InvalidInput
from services.jobs.backlog import BacklogBoard
from services.jobs.events import JobEvents
from services.jobs.handoff import DispatchNudge
from services.jobs.store import Cursor, JobFilter, JobSubmitStore
from services.jobs.types import Job, NewJob, QueueInfo
from services.net.images import ImageFetcher
from services.net.webhook_urls import check_webhook_url
from services.settings import Settings
from services.storage.blobs import BlobStore
from services.storage.images import DecodeBudget, ImageLimits, ValidatedImage, validate_image
from services.storage.orphans import discard_unless_kept
from services.types import JobStatus, Message, Priority, SamplingParams
from services.usage.estimate import CostEstimator
from services.usage.quotas import QuotaGate


@dataclass(frozen=True)
class RemoteImage:
    """A remote image named by URL: fetched (through the SSRF guard) only once the request has
    passed its cheap checks, and never for an idempotent replay (it is matched by URL)."""

    url: str


@dataclass(frozen=True)
class UploadedImage:
    """An image uploaded earlier (``POST /v1/files``), named by its file id."""

    file_id: str


class FileImages(Protocol):
    def image_for_job(self, owner_id: str, file_id: str) -> bytes: ...
    def keeps_image(self, key: str) -> bool: ...


ImageSource = bytes | RemoteImage | UploadedImage


@dataclass(frozen=True)
class SubmitCommand:
    """A job request after parsing, before validation against the model and limits."""

    owner_id: str
    model: str
    messages: tuple[Message, ...]
    images: tuple[ImageSource, ...]  # bytes, a URL fetched at submit, or an uploaded file
    params: SamplingParams
    timeout_seconds: int | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    priority: Priority = Priority.NORMAL
    webhook: str | None = None
    webhook_events_filter: tuple[str, ...] = ("completed",)
    ttl_seconds: int | None = None
    idempotency_key: str | None = None

    def fingerprint(self) -> str:
        """SHA-256 of what the request asks for (images by digest, remote ones by URL)."""

        def plain(value: Any) -> Any:
            if isinstance(value, bytes):
                return hashlib.sha256(value).hexdigest()
            if isinstance(value, dict):
                return {str(k): plain(v) for k, v in value.items()}
            if isinstance(value, list | tuple):
                return [plain(v) for v in value]
            return value

        fields = {
            name: plain(value)
            for name, value in dataclasses.asdict(self).items()
            if name not in ("owner_id", "idempotency_key")
        }
        canonical = json.dumps(fields, sort_keys=True, default=str, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class Submission:
    job: Job
    replayed: bool  # True: an Idempotency-Key replay returned the job created earlier


# Throughput over this window estimates when a queued job will start.
THROUGHPUT_WINDOW = timedelta(minutes=5)
# A queue position counts at most this many of the job's own key's older jobs (beyond it, the
# position is a lower bound): a poll deep in a huge backlog costs what a shallow one does.
OWN_AHEAD_CAP = 1_000


def new_job_id() -> str:
    return "job_" + secrets.token_hex(12)


def check_context(spec: ModelSpec, prompt_tokens_min: int, max_tokens: int | None) -> None:
    """Refuse (422 ``context_length_exceeded``) a job that cannot run: a prompt of at least
    ``prompt_tokens_min`` tokens that leaves no room in the model's context for the ``max_tokens``
    the request asked for, or for one token when it left them to the model's default (the
    engine cuts that default to fit)."""
    wanted = 1 if max_tokens is None else max_tokens
    if prompt_tokens_min + wanted <= spec.context_length:
        return
    asked = "" if max_tokens is None else f" and max_tokens asks for {max_tokens} more"
    raise InvalidInput(
        f"Model {spec.name} has a context of {spec.context_length} tokens; the prompt is at least "
        f"{prompt_tokens_min} tokens{asked}. Shorten the prompt or lower max_tokens.",
        code="context_length_exceeded",
    )


class JobService:
    def __init__(
        self,
        *,
        settings: Settings,
        store: JobSubmitStore,
        blobs: BlobStore,
        nudge: DispatchNudge,
        board: BacklogBoard,
        registry: ModelRegistry,
        clock: Callable[[], datetime],
        events: JobEvents,
        quotas: QuotaGate,
        estimator: CostEstimator,
        image_fetcher: ImageFetcher,
        files: FileImages,
        decode_budget: DecodeBudget,
    ) -> None:
        self._settings = settings
        self._fetcher = image_fetcher
        self._files = files
        self._quotas = quotas
        self._estimator = estimator
        self._events = events
        self._store = store
        self._blobs = blobs
        self._nudge = nudge
        self._board = board
        self._registry = registry
        self._clock = clock
        self._limits = ImageLimits.from_settings(settings)
        self._decode_budget = decode_budget

    def submit(self, command: SubmitCommand) -> Job:
        return self.submit_or_replay(command).job

    def submit_or_replay(self, command: SubmitCommand) -> Submission:
        """Create a queued job, or return the one an earlier request with the same
        Idempotency-Key created (same body: replay; different body: 409)."""
        fingerprint = command.fingerprint()
        if command.idempotency_key is not None:
            earlier = self._replay(command.owner_id, command.idempotency_key, fingerprint)
            if earlier is not None:
                return Submission(earlier, replayed=True)
        try:
            return Submission(self._create(command, fingerprint), replayed=False)
        except Conflict as exc:
            if exc.code != "idempotency_key_in_use" or command.idempotency_key is None:
                raise
            earlier = self._replay(command.owner_id, command.idempotency_key, fingerprint)
            if earlier is None:
                raise
            return Submission(earlier, replayed=True)

    def _replay(self, owner_id: str, key: str, fingerprint: str) -> Job | None:
        earlier = self._store.find_idempotent(owner_id, key)
        if earlier is None:
            return None
        window = timedelta(seconds=self._settings.idempotency_window_seconds)
        if self._clock() - earlier.created_at > window:
            self._store.forget_idempotency_key(earlier.id)
            return None
        if self._store.request_hash(earlier.id) != fingerprint:
            raise Conflict(
                f"Idempotency-Key {key!r} was already used with a different request body "
                f"(job {earlier.id}).",
                code="idempotency_key_reused",
            )
        return earlier

    def _create(self, command: SubmitCommand, fingerprint: str) -> Job:
        """Nothing is stored or queued unless every check passes."""
        self._quotas.check_rate(command.owner_id)
        spec = self._registry.get(command.model)
        params = self._resolve_params(spec, command.params)
        timeout = self._resolve_timeout(command.timeout_seconds)
        ttl = self._resolve_ttl(command.ttl_seconds)
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
        webhook_url = check_webhook_url(command.webhook, self._settings)
        estimate = self._estimator.estimate(
            spec, command.messages, len(command.images), params.max_tokens or 0
        )
        check_context(spec, estimate.prompt_tokens_min, command.params.max_tokens)
        images = [self._image_bytes(image, command.owner_id) for image in command.images]
        validated = [validate_image(data, self._limits, self._decode_budget) for data in images]
        # Quotas are checked under the key's lock, held until the job row exists.
        with self._quotas.admit(command.owner_id, estimate.cost_max), self._stored(validated):
            now = self._clock()
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
                    priority=command.priority,
                    expires_at=None if ttl is None else now + timedelta(seconds=ttl),
                    idempotency_key=command.idempotency_key,
                    request_hash=fingerprint,
                    estimated_prompt_tokens=estimate.prompt_tokens_max,
                    estimated_cost_max=estimate.cost_max,
                    webhook_url=webhook_url,
                    webhook_events=command.webhook_events_filter,
                ),
                now,
            )
        # Committed: the job is safe and will run. The nudge only makes it run sooner.
        self._nudge.nudge(spec.queue)
        return job

    def _image_bytes(self, image: ImageSource, owner_id: str) -> bytes:
        """The bytes of an image source: inline, fetched from its URL, or read from a file."""
        if isinstance(image, bytes):
            return image
        if isinstance(image, UploadedImage):
            return self._files.image_for_job(owner_id, image.file_id)
        return self._fetcher.fetch(image.url)

    def get(self, job_id: str, owner_id: str) -> Job:
        return self._store.get_for_owner(job_id, owner_id)

    def list_jobs(
        self, owner_id: str, where: JobFilter, limit: int, after: Cursor | None
    ) -> tuple[list[Job], bool]:
        """A page of the owner's jobs, newest first, and whether more follow."""
        found = self._store.list_for_owner(owner_id, where, limit + 1, after)
        return found[:limit], len(found) > limit

    def queue_info(self, job: Job) -> QueueInfo | None:
        """Position and estimated start of a queued job (None once it left the queue)."""
        if job.status is not JobStatus.QUEUED:
            return None
        # With per-model queues, only the jobs of models that share this job's queue count.
        models = None
        if len(self._registry.queues()) > 1:
            models = self._registry.models_on(self._registry.queue_for(job.model)) or (job.model,)
        ahead = self._ahead(job)
        finished = self._store.completed_since(self._clock() - THROUGHPUT_WINDOW, models)
        rate = finished / THROUGHPUT_WINDOW.total_seconds()
        eta = round(ahead / rate, 1) if rate > 0 else (0.0 if ahead == 0 else None)
        return QueueInfo(position=ahead, estimated_start_seconds=eta)

    def _ahead(self, job: Job) -> int:
        """Jobs handed out before ``job``, in the dispatcher's order: from its last backlog
        snapshot and a bounded count of the key's own older jobs. With no snapshot (no
        dispatcher running) a SQL count, by priority then age."""
        queue = self._registry.queue_for(job.model)
        models = self._registry.models_on(queue) or (job.model,)
        backlog = self._board.read(queue)
        if backlog is None:
            return self._store.queued_ahead(job, models)
        own = self._store.own_ahead(job, models, OWN_AHEAD_CAP)
        return backlog.position(job.priority, job.owner_id, own)

    def cancel(self, job_id: str, owner_id: str) -> Job:
        """Cancel a job: a queued job never runs; a running one has its engine request aborted.

        Idempotent for jobs already canceled; a job that already finished is a 409.
        """
        job = self._store.get_for_owner(job_id, owner_id)
        for _ in range(3):  # the job may move between our read and our compare-and-set
            if job.status is JobStatus.QUEUED and self._store.cancel_queued(job_id, self._clock()):
                canceled = self._store.get(job_id)
                self._events.job_changed(canceled)
                return canceled
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

    @contextmanager
    def _stored(self, images: list[ValidatedImage]) -> Iterator[None]:
        """Store ``images`` for the job row inserted inside the block; if the block raises (an
        Idempotency-Key taken meanwhile, a failed insert), take back each one no other job or
        file names (:func:`discard_unless_kept`), so a refused request leaves nothing behind."""
        stored: list[ValidatedImage] = []
        try:
            for image in images:
                self._blobs.put(image.ref.key, image.data, image.ref.content_type)
                stored.append(image)
            yield
        except Exception:
            for image in stored:
                discard_unless_kept(self._blobs, image, self._image_kept)
            raise

    def _image_kept(self, key: str) -> bool:
        return self._store.image_in_use(key, ()) or self._files.keeps_image(key)

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

    def _resolve_ttl(self, requested: int | None) -> int | None:
        ttl = requested if requested is not None else self._settings.default_ttl_seconds
        if ttl is not None and not 1 <= ttl <= self._settings.max_ttl_seconds:
            raise InvalidInput(
                f"ttl_seconds must be between 1 and {self._settings.max_ttl_seconds}.",
                code="invalid_parameter",
            )
        return ttl

    def _resolve_timeout(self, requested: int | None) -> int:
        timeout = requested if requested is not None else self._settings.job_timeout_seconds
        if not 1 <= timeout <= self._settings.max_job_timeout_seconds:
            raise InvalidInput(
                f"timeout_seconds must be between 1 and {self._settings.max_job_timeout_seconds}.",
                code="invalid_parameter",
            )
        return timeout
