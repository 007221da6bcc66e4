"""Builders the composition roots share (the API's, the inference worker's, the light worker's).

Each builder that opens a resource registers its release on the ``ExitStack`` it is given, so
a root closes everything it opened by closing one stack. Nothing here is kept between calls:
a root asks for what it uses and nothing else is built.
"""

from __future__ import annotations

from contextlib import ExitStack, closing
from datetime import timedelta

from sqlalchemy import Engine

from services.clock import utcnow
from services.db import make_engine
from services.files.service import FileService
from services.files.store import SqlFileStore
from services.jobs.backlog import RedisBacklogBoard
from services.jobs.events import FanOutJobEvents, JobEvents
from services.jobs.handoff import RedisDispatchNudge
from services.jobs.notify import RedisJobNotifier
from services.jobs.queue import CeleryTaskQueue
from services.jobs.store import JobStore, SqlJobStore
from services.settings import Settings
from services.storage.blobs import BlobStore, S3BlobStore
from services.storage.images import DecodeBudget, ImageLimits
from services.usage.ledger import LedgerBilling
from services.webhooks.events import WebhookEvents
from services.webhooks.queue import CeleryWebhookQueue, WebhookQueue
from services.webhooks.store import WebhookStore


def sql_engine(stack: ExitStack, database_url: str) -> Engine:
    """A connection pool on ``database_url``, disposed when ``stack`` closes."""
    engine = make_engine(database_url)
    stack.callback(engine.dispose)
    return engine


def job_store(engine: Engine, *, charge_failed_jobs: bool) -> SqlJobStore:
    """The job store, billing through the usage ledger in the same transaction as a finish."""
    return SqlJobStore(engine, billing=LedgerBilling(charge_failed_jobs=charge_failed_jobs))


def s3_blobs(stack: ExitStack, settings: Settings) -> S3BlobStore:
    """The object store of ``settings``; its client is closed when ``stack`` closes."""
    return stack.enter_context(closing(S3BlobStore.from_settings(settings)))


def task_producer(stack: ExitStack, settings: Settings) -> CeleryTaskQueue:
    """Publishes inference messages; its broker connections close with ``stack``."""
    return stack.enter_context(closing(CeleryTaskQueue(settings)))


def dispatch_nudge(stack: ExitStack, settings: Settings) -> RedisDispatchNudge:
    """Wakes the dispatcher after a commit; its Redis connection closes with ``stack``."""
    return stack.enter_context(closing(RedisDispatchNudge.from_url(settings.broker_url)))


def backlog_board(stack: ExitStack, settings: Settings) -> RedisBacklogBoard:
    """The dispatcher's backlog snapshots (queue positions); closes with ``stack``."""
    return stack.enter_context(closing(RedisBacklogBoard.from_url(settings.broker_url)))


def webhook_producer(stack: ExitStack, settings: Settings) -> CeleryWebhookQueue:
    """Publishes webhook deliveries; its broker connections close with ``stack``."""
    return stack.enter_context(closing(CeleryWebhookQueue(settings)))


def job_events(
    stack: ExitStack, settings: Settings, store: WebhookStore, queue: WebhookQueue
) -> JobEvents:
    """Where a job's changes go: Redis pub/sub (waiters, streams) and the key's webhooks."""
    notifier = stack.enter_context(closing(RedisJobNotifier(settings.redis_url)))
    webhooks = WebhookEvents(settings=settings, store=store, queue=queue, clock=utcnow)
    return FanOutJobEvents([notifier, webhooks])


def file_service(
    engine: Engine, blobs: BlobStore, jobs: JobStore, settings: Settings, budget: DecodeBudget
) -> FileService:
    """Uploaded files; an image a job still names is kept when its file expires. Uploads
    decode within ``budget`` (the process's, shared with job submits)."""
    retention = settings.retention_seconds
    return FileService(
        store=SqlFileStore(engine),
        blobs=blobs,
        limits=ImageLimits.from_settings(settings),
        decode_budget=budget,
        clock=utcnow,
        retention=timedelta(seconds=retention) if retention else None,
        job_keeps_image=lambda key: jobs.image_in_use(key, ()),
    )
