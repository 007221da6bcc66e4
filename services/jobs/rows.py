"""The ``jobs`` table mapped to ``NewJob`` and ``Job``, once.

A ``Job``/``NewJob`` field and its column share a name; :data:`CODECS` lists only the fields whose
stored form differs (JSON, enum values, defaults), so a new plain column needs a table column and
a dataclass field, and nothing here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy.engine import RowMapping

from services.jobs.types import Job, NewJob
from services.types import ImageRef, JobStatus, Message, PriceCard, Priority, SamplingParams


@dataclass(frozen=True)
class Codec:
    """How one field is written to its column (``store``) and read back (``load``)."""

    store: Callable[[Any], Any]
    load: Callable[[Any], Any]


CODECS: dict[str, Codec] = {
    "status": Codec(lambda s: s.value, JobStatus),
    "retried_from_status": Codec(lambda s: s and s.value, lambda raw: raw and JobStatus(raw)),
    "priority": Codec(lambda p: p.value, Priority),
    "messages": Codec(
        lambda ms: [m.to_json() for m in ms], lambda raw: tuple(map(Message.from_json, raw))
    ),
    "images": Codec(
        lambda refs: [r.to_json() for r in refs], lambda raw: tuple(map(ImageRef.from_json, raw))
    ),
    "params": Codec(SamplingParams.to_json, SamplingParams.from_json),
    "price": Codec(PriceCard.to_json, PriceCard.from_json),
    "metadata": Codec(dict, dict),
    # Rows written before webhooks existed hold NULL: they asked for the default.
    "webhook_events": Codec(list, lambda raw: tuple(raw or ("completed",))),
}
_PLAIN = Codec(lambda value: value, lambda value: value)


def _codec(name: str) -> Codec:
    return CODECS.get(name, _PLAIN)


def insert_values(job: NewJob, now: datetime) -> dict[str, Any]:
    """The columns of ``job``'s new row: queued at ``now``, never attempted, and the ttl its
    deadline was set with (kept for a retry to set a new one)."""
    values = {f.name: _codec(f.name).store(getattr(job, f.name)) for f in fields(NewJob)}
    ttl = None if job.expires_at is None else round((job.expires_at - now).total_seconds())
    return values | {
        "status": JobStatus.QUEUED.value,
        "attempts": 0,
        "created_at": now,
        "ttl_seconds": ttl,
    }


def row_to_job(row: RowMapping) -> Job:
    """A stored row as a ``Job`` (columns with no ``Job`` field, like the lease, are left out)."""
    return Job(**{f.name: _codec(f.name).load(row[f.name]) for f in fields(Job)})
