"""Wiring: build the real adapters for a ``Settings`` once, in one place."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from redis import Redis
from sqlalchemy import Engine

from services.admin.monitor import Monitor, build_monitor
from services.auth.keys import KeyStore, SqlKeyStore
from services.catalog.registry import ModelRegistry, build_registry
from services.clock import utcnow
from services.db import make_engine
from services.files.service import FileService
from services.files.store import SqlFileStore
from services.jobs.events import FanOutJobEvents, JobEvents
from services.jobs.notify import RedisJobNotifier
from services.jobs.queue import CeleryTaskQueue, TaskQueue
from services.jobs.service import JobService
from services.jobs.store import JobStore, SqlJobStore
from services.jobs.waiting import JobWaiter
from services.net.images import RemoteImageFetcher
from services.settings import Settings
from services.storage.blobs import BlobStore, S3BlobStore
from services.storage.images import ImageLimits
from services.usage.estimate import CostEstimator, TokenizerFileCounter
from services.usage.ledger import LedgerBilling, SqlUsageLedger
from services.usage.quotas import QuotaEnforcer, SqlQuotaStore
from services.webhooks.events import WebhookEvents
from services.webhooks.queue import CeleryWebhookQueue, WebhookQueue
from services.webhooks.service import WebhookService
from services.webhooks.store import SqlWebhookStore, WebhookStore


@dataclass
class Container:
    settings: Settings
    registry: ModelRegistry
    jobs: JobStore
    keys: KeyStore
    blobs: BlobStore
    queue: TaskQueue
    job_service: JobService
    events: JobEvents
    db_engine: Engine | None = None
    quotas: SqlQuotaStore | None = None
    quota_enforcer: QuotaEnforcer | None = None
    files: FileService | None = None
    usage: SqlUsageLedger | None = None
    redis: Redis | None = None
    webhook_store: WebhookStore | None = None
    webhook_queue: WebhookQueue | None = None
    webhooks: WebhookService | None = None
    monitor: Monitor | None = None
    notifier: RedisJobNotifier | None = None
    waiter: JobWaiter | None = None  # long-poll; its subscriber thread starts on first wait

    def close(self) -> None:
        if self.waiter is not None:
            self.waiter.close()
        if self.notifier is not None:
            self.notifier.close()
        if self.monitor is not None:
            self.monitor.close()
        if self.db_engine is not None:
            self.db_engine.dispose()
        if self.redis is not None:
            self.redis.close()
        close = getattr(self.queue, "close", None)
        if close is not None:
            close()
        close_webhooks = getattr(self.webhook_queue, "close", None)
        if close_webhooks is not None:
            close_webhooks()


def build_container(
    settings: Settings,
    *,
    blobs: BlobStore | None = None,
    queue: TaskQueue | None = None,
    webhook_queue: WebhookQueue | None = None,
) -> Container:
    """Real adapters chosen by settings; tests may pass their own ``blobs``/``queue``/
    ``webhook_queue``."""
    engine = make_engine(settings.database_url)
    registry = build_registry(settings)
    jobs = SqlJobStore(
        engine, billing=LedgerBilling(charge_failed_jobs=settings.charge_failed_jobs)
    )
    redis_client = Redis.from_url(settings.redis_url, socket_timeout=5)
    blob_store = blobs if blobs is not None else S3BlobStore.from_settings(settings)
    task_queue = queue if queue is not None else CeleryTaskQueue(settings)
    webhook_store = SqlWebhookStore(engine)
    webhook_producer = webhook_queue if webhook_queue is not None else CeleryWebhookQueue(settings)
    notifier = RedisJobNotifier(settings.redis_url)
    events = FanOutJobEvents(
        [
            notifier,
            WebhookEvents(
                settings=settings, store=webhook_store, queue=webhook_producer, clock=utcnow
            ),
        ]
    )
    file_service = FileService(
        store=SqlFileStore(engine),
        blobs=blob_store,
        limits=ImageLimits.from_settings(settings),
        clock=utcnow,
        retention=timedelta(seconds=settings.retention_seconds)
        if settings.retention_seconds
        else None,
        job_keeps_image=lambda key: jobs.image_in_use(key, ()),
    )
    enforcer = QuotaEnforcer(engine=engine, redis_client=redis_client, clock=utcnow)
    service = JobService(
        settings=settings,
        store=jobs,
        blobs=blob_store,
        queue=task_queue,
        registry=registry,
        clock=utcnow,
        events=events,
        quotas=enforcer,
        estimator=CostEstimator(TokenizerFileCounter()),
        image_fetcher=RemoteImageFetcher(settings),
        files=file_service,
    )
    return Container(
        settings=settings,
        registry=registry,
        jobs=jobs,
        keys=SqlKeyStore(engine),
        blobs=blob_store,
        queue=task_queue,
        job_service=service,
        events=events,
        db_engine=engine,
        quotas=SqlQuotaStore(engine),
        quota_enforcer=enforcer,
        files=file_service,
        usage=SqlUsageLedger(engine),
        redis=redis_client,
        webhook_store=webhook_store,
        webhook_queue=webhook_producer,
        webhooks=WebhookService(
            settings=settings, store=webhook_store, jobs=jobs, queue=webhook_producer, clock=utcnow
        ),
        monitor=build_monitor(
            settings,
            engine,
            utcnow,
            registry=registry,
            webhook_outcomes=webhook_store.attempt_outcomes,
        ),
        notifier=notifier,
        waiter=JobWaiter(settings.redis_url, settings.max_waiters_per_process),
    )
