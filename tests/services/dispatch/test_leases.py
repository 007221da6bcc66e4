"""The leadership lease on real SQL: one holder, renewals, takeover after a lapse, release."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest

from services.clock import utcnow
from services.db import make_engine, upgrade_to_head
from services.dispatch.leases import SqlLeases

TTL = timedelta(seconds=6)


@pytest.fixture
def leases(database_url: str) -> Iterator[SqlLeases]:
    upgrade_to_head(database_url)
    engine = make_engine(database_url)
    yield SqlLeases(engine)
    engine.dispose()


def test_one_holder_at_a_time_until_its_lease_lapses(leases):
    now = utcnow()
    assert leases.hold("dispatcher", "a", now, TTL)
    assert not leases.hold("dispatcher", "b", now, TTL)
    assert leases.hold("dispatcher", "a", now + timedelta(seconds=5), TTL)  # renewed
    assert not leases.hold("dispatcher", "b", now + timedelta(seconds=10), TTL)
    assert leases.hold("dispatcher", "b", now + timedelta(seconds=12), TTL)  # a lapsed
    assert not leases.hold("dispatcher", "a", now + timedelta(seconds=12), TTL)


def test_a_released_lease_is_free_at_once_and_only_its_holder_releases_it(leases):
    now = utcnow()
    assert leases.hold("dispatcher", "a", now, TTL)
    leases.release("dispatcher", "b")
    assert not leases.hold("dispatcher", "b", now, TTL)
    leases.release("dispatcher", "a")
    assert leases.hold("dispatcher", "b", now, TTL)


def test_leases_of_different_names_are_independent(leases):
    now = utcnow()
    assert leases.hold("dispatcher", "a", now, TTL)
    assert leases.hold("other", "b", now, TTL)
