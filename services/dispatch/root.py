"""The dispatcher process's composition root: SQL, the broker, heartbeats, nudges, job events."""

from __future__ import annotations

import os
import socket
from contextlib import ExitStack, closing
from dataclasses import dataclass, field

from services import wiring
from services.admin.heartbeats import RedisHeartbeats
from services.catalog.registry import build_registry
from services.clock import utcnow
from services.dispatch.dispatcher import Dispatcher, DispatchPorts
from services.dispatch.leases import SqlLeases
from services.dispatch.loop import Cadence, DispatchLoop
from services.dispatch.nudges import NudgeListener
from services.dispatch.slots import HeartbeatSlots
from services.dispatch.store import SqlDispatchStore
from services.jobs.queue import RedisQueuedMessages
from services.settings import Settings
from services.webhooks.store import SqlWebhookStore


@dataclass(frozen=True)
class DispatcherRoot:
    loop: DispatchLoop
    dispatcher: Dispatcher
    resources: ExitStack = field(repr=False, compare=False)

    def close(self) -> None:
        self.resources.close()


def build_dispatcher_root(settings: Settings, holder: str | None = None) -> DispatcherRoot:
    """Everything one dispatcher instance uses; ``holder`` names it in the leadership lease."""
    with ExitStack() as stack:
        dispatcher = build_dispatcher(settings, stack)
        loop = DispatchLoop(
            dispatcher,
            SqlLeases(wiring.sql_engine(stack, settings.database_url)),
            stack.enter_context(closing(NudgeListener(settings.broker_url))),
            holder=holder or f"{socket.gethostname()}:{os.getpid()}",
            cadence=_cadence(settings),
            clock=utcnow,
        )
        return DispatcherRoot(loop, dispatcher, stack.pop_all())


def build_dispatcher(settings: Settings, stack: ExitStack) -> Dispatcher:
    """A dispatcher over the adapters ``settings`` names; they close with ``stack``."""
    engine = wiring.sql_engine(stack, settings.database_url)
    jobs = wiring.job_store(engine, charge_failed_jobs=settings.charge_failed_jobs)
    webhook_store = SqlWebhookStore(engine)
    webhook_queue = wiring.webhook_producer(stack, settings)
    heartbeats = stack.enter_context(closing(RedisHeartbeats.from_url(settings.broker_url)))
    ports = DispatchPorts(
        store=SqlDispatchStore(engine),
        jobs=jobs,
        queue=wiring.task_producer(stack, settings),
        broker=stack.enter_context(closing(RedisQueuedMessages.from_url(settings.broker_url))),
        workers=HeartbeatSlots(heartbeats),
        routes=build_registry(settings),
        events=wiring.job_events(stack, settings, webhook_store, webhook_queue),
        board=wiring.backlog_board(stack, settings),
    )
    margin, attempts = settings.dispatch_margin, settings.max_attempts
    return Dispatcher(ports, margin=margin, max_attempts=attempts, clock=utcnow)


def _cadence(settings: Settings) -> Cadence:
    return Cadence(
        interval=settings.dispatch_interval_ms / 1000,
        recover_every=float(settings.lost_sweep_seconds),
        lease=float(settings.dispatcher_lease_seconds),
    )
