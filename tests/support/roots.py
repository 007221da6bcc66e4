"""The processes' composition roots for tests: the API's root, with handles on its parts.

``build_test_api`` builds the API root as ``services.api.wsgi`` does, but opens the SQL pool, the
bucket's client and the producers itself and hands them to :func:`build_api`, so a test can
arrange and check state through the same pool (``jobs``, ``keys``, ``quotas``...) while it
talks HTTP to the app (``client()``).
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine

from services import wiring
from services.api.app import create_app
from services.api.root import ApiRoot, build_api
from services.auth.keys import SqlKeyStore
from services.catalog.registry import ModelRegistry
from services.dispatch.dispatcher import Dispatcher
from services.dispatch.root import build_dispatcher
from services.files.service import FileService
from services.jobs.events import JobEvents
from services.jobs.handoff import DispatchNudge
from services.jobs.service import JobService
from services.jobs.store import SqlJobStore
from services.jobs.waiting import JobWaiter
from services.settings import Settings
from services.storage.blobs import BlobStore
from services.usage.quotas import SqlQuotaStore
from services.webhooks.queue import WebhookQueue
from services.webhooks.service import WebhookService
from services.webhooks.store import SqlWebhookStore


@dataclass(frozen=True)
class ApiUnderTest:
    """An API root and stores over its database, blobs, producers and job events."""

    root: ApiRoot
    db_engine: Engine
    jobs: SqlJobStore
    keys: SqlKeyStore
    quotas: SqlQuotaStore
    webhook_store: SqlWebhookStore
    blobs: BlobStore
    nudge: DispatchNudge
    events: JobEvents
    resources: ExitStack = field(repr=False, compare=False)
    _dispatchers: list[Dispatcher] = field(default_factory=list, repr=False, compare=False)

    def close(self) -> None:
        """Close the root, then the pool, clients and producers opened for it."""
        self.resources.close()

    @property
    def settings(self) -> Settings:
        return self.root.settings

    @property
    def registry(self) -> ModelRegistry:
        return self.root.registry

    @property
    def job_service(self) -> JobService:
        return self.root.jobs

    @property
    def files(self) -> FileService:
        return self.root.files

    @property
    def webhooks(self) -> WebhookService:
        return self.root.webhooks

    @property
    def waiter(self) -> JobWaiter:
        return self.root.waiter

    def dispatch(self) -> int:
        """One dispatch pass, as the dispatcher process runs it: hands queued jobs to the
        broker (within its window); how many it handed out. Built on first use."""
        return self.dispatcher.dispatch()

    @property
    def dispatcher(self) -> Dispatcher:
        if not self._dispatchers:
            self._dispatchers.append(build_dispatcher(self.settings, self.resources))
        return self._dispatchers[0]

    def client(self) -> Any:
        """A Flask test client of an app over this root."""
        return create_app(self.root).test_client()


def build_test_api(
    settings: Settings, *, webhook_queue: WebhookQueue | None = None
) -> ApiUnderTest:
    """The API root of ``settings``; webhook deliveries go to ``webhook_queue`` when given
    (the caller's to close), else to the broker."""
    with ExitStack() as stack:
        engine = wiring.sql_engine(stack, settings.database_url)
        blobs = wiring.s3_blobs(stack, settings)
        nudge = wiring.dispatch_nudge(stack, settings)
        hooks = webhook_queue or wiring.webhook_producer(stack, settings)
        root = build_api(settings, engine=engine, blobs=blobs, nudge=nudge, webhook_queue=hooks)
        stack.callback(root.close)
        webhook_store = SqlWebhookStore(engine)
        return ApiUnderTest(
            root=root,
            db_engine=engine,
            jobs=wiring.job_store(engine, charge_failed_jobs=settings.charge_failed_jobs),
            keys=SqlKeyStore(engine),
            quotas=SqlQuotaStore(engine),
            webhook_store=webhook_store,
            blobs=blobs,
            nudge=nudge,
            events=wiring.job_events(stack, settings, webhook_store, hooks),
            resources=stack.pop_all(),  # last: everything above registered its release
        )
