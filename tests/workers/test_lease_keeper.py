"""LeaseKeeper over a real SQLite job store: renews held leases, reports taken-over jobs once,
and rides out a database outage."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from services.db import make_engine
from services.db.schema import jobs
from services.errors import Unavailable
from services.types import JobStatus
from tests.support.jobs import insert_job
from tests.support.keys import new_key
from tests.support.stores import sql_job_store
from tests.workers.test_pipeline import NOW
from workers.lease_keeper import LeaseKeeper

LEASE = timedelta(seconds=30)


@pytest.fixture
def store(sqlite_url):
    engine = make_engine(sqlite_url)
    yield sql_job_store(engine)
    engine.dispose()


class DownStore:
    """The real store with its ``renew`` failing: the database is down."""

    def __init__(self, store: Any) -> None:
        self._store = store

    def renew(self, *args: Any) -> set[str]:
        raise Unavailable("database down")


def _running(store) -> tuple[str, int]:
    owner = new_key(store._engine, "o", at=NOW).id
    job_id = insert_job(store, owner, NOW, job_id="job_l").id
    job = store.claim(job_id, NOW, LEASE)
    return job.id, job.attempts


def test_a_held_lease_is_renewed_and_never_lapses(store):
    job_id, attempt = _running(store)
    at = {"now": NOW}
    keeper = LeaseKeeper(store, LEASE, 3600, clock=lambda: at["now"])
    lost: list[str] = []
    with keeper.hold(job_id, attempt, lambda: lost.append(job_id)):
        for minutes in range(1, 4):  # three renewals, 20 s apart, over a minute
            at["now"] = NOW + timedelta(seconds=20 * minutes)
            keeper.renew_once()
        assert store.reclaim_lapsed(job_id, at["now"] + LEASE - timedelta(seconds=1), 3) is None
    assert lost == []
    keeper.close()


def test_a_lease_taken_over_is_reported_once_and_no_longer_renewed(store):
    job_id, attempt = _running(store)
    later = NOW + LEASE + timedelta(seconds=1)
    keeper = LeaseKeeper(store, LEASE, 3600, clock=lambda: later)
    lost: list[str] = []
    with keeper.hold(job_id, attempt, lambda: lost.append(job_id)):
        assert store.reclaim_lapsed(job_id, later, 3) is JobStatus.QUEUED  # the sweep took it
        keeper.renew_once()
        keeper.renew_once()
    assert lost == [job_id]
    assert store.get(job_id).status is JobStatus.QUEUED  # the renewal did not revive it
    keeper.close()


def test_a_failed_renewal_is_not_taken_for_a_lost_lease(store):
    job_id, attempt = _running(store)
    keeper = LeaseKeeper(DownStore(store), LEASE, 3600, clock=lambda: NOW)
    lost: list[str] = []
    with keeper.hold(job_id, attempt, lambda: lost.append(job_id)):
        keeper.renew_once()
    assert lost == []
    keeper.close()


def test_the_keeper_renews_on_its_own_thread_while_a_job_is_held(store):
    job_id, attempt = _running(store)
    renewed_at = NOW + timedelta(seconds=25)
    keeper = LeaseKeeper(store, LEASE, 0.01, clock=lambda: renewed_at)
    with keeper.hold(job_id, attempt, lambda: None):
        for _ in range(500):
            if _lease_of(store, job_id) == renewed_at + LEASE:
                break
            time.sleep(0.01)
    keeper.close()
    assert _lease_of(store, job_id) == renewed_at + LEASE


def _lease_of(store, job_id: str) -> datetime:
    with store._engine.connect() as conn:
        query = select(jobs.c.lease_expires_at).where(jobs.c.id == job_id)
        return conn.execute(query).scalar_one()
