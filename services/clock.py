"""Time: the one clock every composition root hands out, and the one timestamp format of the API."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def timestamp(value: datetime | None) -> str | None:
    """ISO 8601 in UTC with a ``Z``, as every public JSON body writes times."""
    return None if value is None else value.isoformat().replace("+00:00", "Z")
