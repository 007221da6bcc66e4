"""Per-key quotas, enforced at submit before anything is stored.

- requests per minute → 429 ``rate_limited`` with ``Retry-After`` (seconds left in the minute).
  Counted in Redis, atomically, so every API process shares the count (see ``RedisRateLimiter``).
  A key without its own limit has the deployment's (``LOUPE_DEFAULT_REQUESTS_PER_MINUTE``;
  0 there leaves such keys unlimited).
- max queued jobs → 429 ``too_many_queued_jobs``.
- max running jobs and max concurrency never refuse a submit: the dispatcher
  (``services.dispatch``) holds the key's queued jobs back while it has that many handed out
  (``Quota.in_flight_limit``), so they wait their turn in SQL, not in a GPU slot's place.
- monthly spend cap (USD) → 402 ``spend_limit_reached``. The check counts the ledger's cost
  billed this UTC month, plus the estimated maximum of the key's queued and running jobs, plus
  this job's maximum, so a burst of submissions cannot overshoot the cap.

The count-then-insert of the last two runs under a per-key Redis lock held until the job row
is inserted, so concurrent submissions of one key (on any API process) cannot race past a limit.
Keys without those limits take no lock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from dataclasses import dataclass, fields, replace
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Protocol

import redis
from sqlalchemy import Engine, delete, func, insert, select, update

from services.db.schema import api_keys, jobs, key_quotas
from services.db.session import reading, writing
from services.errors import NotFound, PaymentRequired, QuotaExceeded, Unavailable
from services.types import JobStatus
from services.usage.ledger import SqlUsageLedger
from services.usage.pricing import money_str

BUSY_RETRY_AFTER = 10  # seconds: a guess at how soon a queued or running job frees a slot
LOCK_TIMEOUT = 30  # seconds a crashed API process can hold a key's lock at worst


@dataclass(frozen=True)
class Quota:
    """A key's limits; None means unlimited."""

    monthly_spend_usd: Decimal | None = None
    max_queued: int | None = None
    max_running: int | None = None
    requests_per_minute: int | None = None
    max_concurrency: int | None = None

    @property
    def counts_jobs(self) -> bool:
        """Whether a submit must count the key's jobs (``max_running`` and ``max_concurrency``
        hold jobs back at dispatch instead: they never refuse a submit)."""
        return self.monthly_spend_usd is not None or self.max_queued is not None

    @property
    def in_flight_limit(self) -> int | None:
        """Most of the key's jobs handed out at once (in the broker or running), or None.

        A job handed to the broker runs as soon as a worker takes it, so the dispatcher counts
        it against ``max_running`` too: the key never has more running than either limit."""
        limits = [n for n in (self.max_running, self.max_concurrency) if n is not None]
        return min(limits) if limits else None

    def to_public(self) -> dict[str, Any]:
        spend = self.monthly_spend_usd
        return {
            "monthly_spend_usd": None if spend is None else money_str(spend),
            "max_queued": self.max_queued,
            "max_running": self.max_running,
            "max_concurrency": self.max_concurrency,
            "requests_per_minute": self.requests_per_minute,
        }


@dataclass(frozen=True)
class QuotaStanding:
    """A key's limits beside where it stands against each of them right now."""

    quota: Quota
    period_start: date
    spent: Decimal  # billed since period_start (this UTC month)
    reserved: Decimal  # estimated maximum of the key's queued and running jobs
    queued: int
    running: int
    requests_this_minute: int

    def to_public(self) -> dict[str, Any]:
        cap = self.quota.monthly_spend_usd
        left = None if cap is None else max(Decimal(0), cap - self.spent - self.reserved)
        return {
            "object": "quota",
            "limits": self.quota.to_public(),
            "current": {
                "period_start": self.period_start.isoformat(),
                "spent_usd": money_str(self.spent),
                "reserved_usd": money_str(self.reserved),
                "available_usd": None if left is None else money_str(left),
                "queued": self.queued,
                "running": self.running,
                "requests_this_minute": self.requests_this_minute,
            },
        }


class SqlQuotaStore:
    """``key_quotas`` rows; a key without a row is unlimited."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def get(self, key_id: str) -> Quota:
        with reading(self._engine) as conn:
            row = (
                conn.execute(select(key_quotas).where(key_quotas.c.key_id == key_id))
                .mappings()
                .first()
            )
        if row is None:
            return Quota()
        return Quota(**{f.name: row[f.name] for f in fields(Quota)})  # a column per field

    def update(self, key_id: str, now: datetime, **changes: Any) -> Quota:
        """Set the given fields (None = unlimited), keep the others; 404 for an unknown key."""
        with writing(self._engine) as conn:
            if conn.execute(select(api_keys.c.id).where(api_keys.c.id == key_id)).first() is None:
                raise NotFound(f"No API key {key_id!r}.", code="key_not_found")
            exists = conn.execute(
                select(key_quotas.c.key_id).where(key_quotas.c.key_id == key_id)
            ).first()
            if exists is None:
                quota = replace(Quota(), **changes)
                conn.execute(
                    insert(key_quotas).values(key_id=key_id, updated_at=now, **quota.__dict__)
                )
            else:
                conn.execute(
                    update(key_quotas)
                    .where(key_quotas.c.key_id == key_id)
                    .values(updated_at=now, **changes)
                )
        return self.get(key_id)

    def clear(self, key_id: str) -> None:
        with writing(self._engine) as conn:
            conn.execute(delete(key_quotas).where(key_quotas.c.key_id == key_id))


class QuotaGate(Protocol):
    def check_rate(self, owner_id: str) -> None:
        """Count one request against the key's per-minute limit; raise 429 when over."""
        ...

    def admit(self, owner_id: str, cost_max: Decimal) -> AbstractContextManager[None]:
        """Check the job-count and spend limits for a new job that may cost up to ``cost_max``;
        raise 402/429 when over. Store the job inside the context: it holds the key's lock."""
        ...


# Fixed one-minute windows on the Redis server's clock (the same for every API process).
# INCR and EXPIRE run in one script, so no crash can leave a counter without its expiry.
_RATE_SCRIPT = """
local now = redis.call('TIME')
local second = tonumber(now[1])
local key = KEYS[1] .. ':' .. math.floor(second / 60)
local count = redis.call('INCR', key)
if count == 1 then redis.call('EXPIRE', key, 120) end
return {count, 60 - (second % 60)}
"""


# The same window as _RATE_SCRIPT, read without counting: {count so far, seconds to its end}.
_WINDOW_SCRIPT = """
local now = redis.call('TIME')
local second = tonumber(now[1])
local count = redis.call('GET', KEYS[1] .. ':' .. math.floor(second / 60))
return {tonumber(count or '0'), 60 - (second % 60)}
"""


@dataclass(frozen=True)
class RateWindow:
    """Where a key stands in its current one-minute submission window."""

    limit: int
    remaining: int  # submissions left before a 429 (0 once over)
    reset_seconds: int  # until the window ends and ``remaining`` is ``limit`` again


class RedisRateLimiter:
    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._script = client.register_script(_RATE_SCRIPT)
        self._window = client.register_script(_WINDOW_SCRIPT)

    def hit(self, key_id: str, limit: int) -> int | None:
        """Count a request; None if within ``limit`` this minute, else seconds to wait."""
        try:
            count, retry_after = self._script(keys=[f"loupe:rate:{key_id}"])
        except redis.RedisError as exc:
            raise Unavailable(f"rate limiter unavailable: {exc}") from exc
        return None if int(count) <= limit else max(1, int(retry_after))

    def window(self, key_id: str, limit: int) -> RateWindow:
        """The current window of ``key_id`` under ``limit`` (one round trip; counts nothing)."""
        try:
            count, reset = self._window(keys=[f"loupe:rate:{key_id}"])
        except redis.RedisError as exc:
            raise Unavailable(f"rate limiter unavailable: {exc}") from exc
        return RateWindow(limit, max(0, limit - int(count)), int(reset))

    def used(self, key_id: str) -> int:
        """Requests counted in the current minute (same window as :meth:`hit`; counts none)."""
        try:
            second, _micro = self._client.time()
            raw = self._client.get(f"loupe:rate:{key_id}:{int(second) // 60}")
        except redis.RedisError as exc:
            raise Unavailable(f"rate limiter unavailable: {exc}") from exc
        return int(raw or 0)


class QuotaEnforcer:
    """The real ``QuotaGate``: quotas from SQL, rate counts and per-key locks in Redis."""

    def __init__(
        self,
        *,
        engine: Engine,
        redis_client: redis.Redis,
        clock: Callable[[], datetime],
        default_requests_per_minute: int | None = None,
    ) -> None:
        self._engine = engine
        self._redis = redis_client
        self._clock = clock
        self._default_rpm = default_requests_per_minute
        self._quotas = SqlQuotaStore(engine)
        self._ledger = SqlUsageLedger(engine)
        self._limiter = RedisRateLimiter(redis_client)

    def quota(self, owner_id: str) -> Quota:
        """The limits in force for a key: its own, and the deployment's per-minute limit when
        it has none of its own."""
        quota = self._quotas.get(owner_id)
        if quota.requests_per_minute is None and self._default_rpm:
            return replace(quota, requests_per_minute=self._default_rpm)
        return quota

    def check_rate(self, owner_id: str) -> None:
        limit = self.quota(owner_id).requests_per_minute
        if limit is None:
            return
        retry_after = self._limiter.hit(owner_id, limit)
        if retry_after is not None:
            raise QuotaExceeded(
                f"Rate limit of {limit} requests per minute reached; retry in {retry_after} s.",
                code="rate_limited",
                retry_after=retry_after,
            )

    def rate_window(self, owner_id: str) -> RateWindow | None:
        """The key's submission window, or None for a key without a per-minute limit."""
        limit = self.quota(owner_id).requests_per_minute
        return None if limit is None else self._limiter.window(owner_id, limit)

    def standing(self, owner_id: str) -> QuotaStanding:
        """The key's limits in force and its current counts (for ``GET /v1/quota``)."""
        quota = self.quota(owner_id)
        queued, running, reserved = self._active(owner_id)
        start = _month_start(self._clock())
        return QuotaStanding(
            quota=quota,
            period_start=start,
            spent=self._ledger.spent_since(owner_id, start),
            reserved=reserved,
            queued=queued,
            running=running,
            requests_this_minute=self._limiter.used(owner_id),
        )

    def admit(self, owner_id: str, cost_max: Decimal) -> AbstractContextManager[None]:
        quota = self._quotas.get(owner_id)
        if not quota.counts_jobs:
            return nullcontext()
        return self._admit_locked(owner_id, quota, cost_max)

    @contextmanager
    def _admit_locked(self, owner_id: str, quota: Quota, cost_max: Decimal) -> Iterator[None]:
        lock = self._redis.lock(
            f"loupe:quota-lock:{owner_id}", timeout=LOCK_TIMEOUT, blocking_timeout=10
        )
        try:
            acquired = lock.acquire()
        except redis.RedisError as exc:
            raise Unavailable(f"quota lock unavailable: {exc}") from exc
        if not acquired:
            raise QuotaExceeded(
                "Too many concurrent submissions for this key; retry shortly.",
                code="too_many_concurrent_requests",
                retry_after=1,
            )
        try:
            self._check(owner_id, quota, cost_max)
            yield
        finally:
            # Expired or Redis gone: the lock times out by itself.
            with suppress(redis.RedisError):
                lock.release()

    def _check(self, owner_id: str, quota: Quota, cost_max: Decimal) -> None:
        queued, _running, reserved = self._active(owner_id)
        if quota.max_queued is not None and queued >= quota.max_queued:
            raise QuotaExceeded(
                f"This key has {queued} queued jobs, its limit is {quota.max_queued}; "
                "retry when some have started.",
                code="too_many_queued_jobs",
                retry_after=BUSY_RETRY_AFTER,
            )
        cap = quota.monthly_spend_usd
        if cap is None:
            return
        # Ledger read after the jobs read: a job finishing in between is counted twice
        # (as reserved and as billed), never zero times.
        spent = self._ledger.spent_since(owner_id, _month_start(self._clock()))
        if spent + reserved + cost_max > cap:
            raise PaymentRequired(
                f"Monthly spend cap of ${money_str(cap)} reached: ${money_str(spent)} billed "
                f"this month, ${money_str(reserved)} reserved by queued or running jobs, and "
                f"this job may cost up to ${money_str(cost_max)}.",
            )

    def _active(self, owner_id: str) -> tuple[int, int, Decimal]:
        """(queued jobs, running jobs, sum of their estimated maximum costs) of a key."""
        active = (JobStatus.QUEUED.value, JobStatus.RUNNING.value)
        with reading(self._engine) as conn:
            rows = conn.execute(
                select(jobs.c.status, func.count(), func.sum(jobs.c.estimated_cost_max))
                .where(jobs.c.owner_id == owner_id, jobs.c.status.in_(active))
                .group_by(jobs.c.status)
            ).all()
        counts = {row[0]: int(row[1]) for row in rows}
        reserved = sum((row[2] or Decimal(0) for row in rows), Decimal(0))
        return counts.get("queued", 0), counts.get("running", 0), reserved


def _month_start(now: datetime) -> date:
    return now.date().replace(day=1)
