"""Readiness: probes run together, each bounded by the timeout; the first failure is named."""

from __future__ import annotations

import threading
import time

import pytest

from services.admin.readiness import Check, Readiness
from services.errors import Unavailable


def _ok() -> None:
    return None


def _down() -> None:
    raise Unavailable("connection refused")


@pytest.fixture
def release():
    event = threading.Event()
    yield event
    event.set()  # let hung probe threads end


def _readiness(*checks: Check, timeout: float = 0.5) -> Readiness:
    return Readiness(checks, timeout)


def test_every_check_answering_is_ready():
    readiness = _readiness(Check("SQL", _ok), Check("Redis", _ok))
    try:
        assert readiness.failing() is None
    finally:
        readiness.close()


def test_the_first_failing_check_in_order_is_named():
    readiness = _readiness(Check("SQL", _ok), Check("Redis", _down), Check("S3", _down))
    try:
        assert readiness.failing() == "Redis"
    finally:
        readiness.close()


def test_a_hung_check_is_named_within_the_timeout(release):
    readiness = _readiness(Check("SQL", _ok), Check("S3", release.wait), timeout=0.3)
    try:
        started = time.monotonic()
        assert readiness.failing() == "S3"
        assert time.monotonic() - started < 1.0
    finally:
        readiness.close()


def test_a_probe_still_hung_from_an_earlier_call_delays_only_its_own_check(release):
    readiness = _readiness(Check("Redis", release.wait), Check("S3", _ok), timeout=0.2)
    try:
        assert readiness.failing() == "Redis"
        started = time.monotonic()
        assert readiness.failing() == "Redis"  # its thread is still busy: not ready, fast
        assert time.monotonic() - started < 1.0
        release.set()
        time.sleep(0.05)
        assert readiness.failing() is None
    finally:
        readiness.close()
