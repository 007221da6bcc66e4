"""The API process's composition root: what its routes use, built once, closed in one place."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack, closing
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TypeVar

from redis import Redis
from sqlalchemy import Engine

from services import wiring
from services.admin.monitor import Monitor, build_monitor
from services.admin.readiness import Check, Readiness, RedisProbe, sql_probe
from services.auth.keys import KeyStore, SqlKeyStore
from services.catalog.registry import ModelRegistry, build_registry
from services.clock import utcnow
from services.files.service import FileService
from services.jobs.events import JobEvents
from services.jobs.handoff import DispatchNudge
from services.jobs.retry import JobRetrier
from services.jobs.service import JobService
from services.jobs.store import JobStore
from services.jobs.waiting import JobWaiter
from services.net.images import RemoteImageFetcher
from services.settings import Settings
from services.storage.blobs import BlobStore, S3BlobStore
from services.storage.images import DecodeBudget
from services.usage.estimate import CostEstimator, TokenizerFileCounter
from services.usage.ledger import SqlUsageLedger
from services.usage.quotas import QuotaEnforcer, SqlQuotaStore
from services.webhooks.queue import WebhookQueue
from services.webhooks.service import WebhookService
from services.webhooks.store import SqlWebhookStore

PROBE_TIMEOUT_S = 1.0
"""How long one readiness probe may wait on its system (connect, then answer)."""
READY_TIMEOUT_S = 1.5
"""How long ``/readyz`` waits for all its probes together."""

T = TypeVar("T")


@dataclass(frozen=True)
class ApiRoot:
    """Every object the API's routes use. ``resources`` holds what :func:`build_api` opened."""

    settings: Settings
    keys: KeyStore
    jobs: JobService
    retries: JobRetrier
    files: FileService
    usage: SqlUsageLedger
    quotas: QuotaEnforcer
    key_quotas: SqlQuotaStore
    webhooks: WebhookService
    monitor: Monitor
    waiter: JobWaiter
    registry: ModelRegistry
    readiness: Readiness
    resources: ExitStack = field(repr=False, compare=False)

    def close(self) -> None:
        """Release what :func:`build_api` opened, last opened first (never what was passed in)."""
        self.resources.close()


@dataclass(frozen=True)
class _Parts:
    """What the API's services share: the outside systems and the stores over them."""

    engine: Engine
    blobs: BlobStore
    nudge: DispatchNudge
    webhook_queue: WebhookQueue
    registry: ModelRegistry
    jobs: JobStore
    webhook_store: SqlWebhookStore


def build_api(
    settings: Settings,
    *,
    engine: Engine | None = None,
    blobs: BlobStore | None = None,
    nudge: DispatchNudge | None = None,
    webhook_queue: WebhookQueue | None = None,
) -> ApiRoot:
    """The real adapters ``settings`` names; a caller (a test, a benchmark) may pass its own
    ``engine``, ``blobs``, ``nudge`` or ``webhook_queue``, which stay the caller's to close.
    Whatever fails while building, what was opened so far is closed."""
    with ExitStack() as stack:
        engine = _given(engine, lambda: wiring.sql_engine(stack, settings.database_url))
        parts = _Parts(
            engine=engine,
            blobs=_given(blobs, lambda: wiring.s3_blobs(stack, settings)),
            nudge=_given(nudge, lambda: wiring.dispatch_nudge(stack, settings)),
            webhook_queue=_given(webhook_queue, lambda: wiring.webhook_producer(stack, settings)),
            registry=build_registry(settings),
            jobs=wiring.job_store(engine, charge_failed_jobs=settings.charge_failed_jobs),
            webhook_store=SqlWebhookStore(engine),
        )
        return _assemble(settings, parts, stack)


def _given(given: T | None, build: Callable[[], T]) -> T:
    return given if given is not None else build()


def _assemble(settings: Settings, parts: _Parts, stack: ExitStack) -> ApiRoot:
    # The quota counters' client; the waiter and the notifier keep their own connections.
    redis = stack.enter_context(closing(Redis.from_url(settings.redis_url, socket_timeout=5)))
    quotas = QuotaEnforcer(
        engine=parts.engine, redis_client=redis, clock=utcnow,
        default_requests_per_minute=settings.default_requests_per_minute or None,
    )  # fmt: skip
    # One per process: every upload and submit of this process decodes within it.
    budget = DecodeBudget(settings.decode_budget_pixels)
    files = wiring.file_service(parts.engine, parts.blobs, parts.jobs, settings, budget)
    events = wiring.job_events(stack, settings, parts.webhook_store, parts.webhook_queue)
    jobs = _job_service(settings, parts, stack, events, files, quotas, budget)
    webhooks = WebhookService(
        settings=settings, store=parts.webhook_store, jobs=parts.jobs,
        queue=parts.webhook_queue, clock=utcnow,
    )  # fmt: skip
    monitor = stack.enter_context(closing(_monitor(settings, parts)))
    # Long polls; its subscriber thread starts on the first wait.
    waiter = JobWaiter(settings.redis_url, settings.max_waiters_per_process)
    stack.callback(waiter.close)
    readiness = _readiness(settings, parts.engine, stack)
    return ApiRoot(
        settings=settings, keys=SqlKeyStore(parts.engine), jobs=jobs,
        retries=_retrier(settings, parts, events, quotas), files=files,
        usage=SqlUsageLedger(parts.engine), quotas=quotas,
        key_quotas=SqlQuotaStore(parts.engine), webhooks=webhooks, monitor=monitor,
        waiter=waiter, registry=parts.registry, readiness=readiness, resources=stack.pop_all(),
    )  # fmt: skip


def _job_service(
    settings: Settings,
    parts: _Parts,
    stack: ExitStack,
    events: JobEvents,
    files: FileService,
    quotas: QuotaEnforcer,
    budget: DecodeBudget,
) -> JobService:
    return JobService(
        settings=settings, store=parts.jobs, blobs=parts.blobs, nudge=parts.nudge,
        board=wiring.backlog_board(stack, settings),
        registry=parts.registry, clock=utcnow, events=events, quotas=quotas,
        estimator=CostEstimator(TokenizerFileCounter()),
        image_fetcher=RemoteImageFetcher(settings), files=files, decode_budget=budget,
    )  # fmt: skip


def _retrier(
    settings: Settings, parts: _Parts, events: JobEvents, quotas: QuotaEnforcer
) -> JobRetrier:
    retention = settings.retention_seconds
    return JobRetrier(
        store=parts.jobs, nudge=parts.nudge, registry=parts.registry, quotas=quotas,
        events=events, clock=utcnow,
        retention=timedelta(seconds=retention) if retention else None,
    )  # fmt: skip


def _monitor(settings: Settings, parts: _Parts) -> Monitor:
    return build_monitor(
        settings, parts.engine, utcnow, registry=parts.registry,
        webhook_outcomes=parts.webhook_store.attempt_outcomes,
    )  # fmt: skip


def _readiness(settings: Settings, engine: Engine, stack: ExitStack) -> Readiness:
    """SQL, the Redis of pub/sub and quotas, the broker when it is another Redis, and S3;
    each probed over a client of its own with a short timeout."""
    redis_urls = dict.fromkeys([settings.redis_url, settings.broker_url])
    probes = [Check("SQL", sql_probe(engine))]
    for url, name in zip(redis_urls, ("Redis", "Redis broker"), strict=False):
        probes.append(Check(name, stack.enter_context(closing(RedisProbe(url, PROBE_TIMEOUT_S)))))
    s3 = stack.enter_context(
        closing(S3BlobStore.from_settings(settings, probe_timeout=PROBE_TIMEOUT_S))
    )
    probes.append(Check("S3", s3.ping))
    return stack.enter_context(closing(Readiness(probes, READY_TIMEOUT_S)))
