"""Time: the one clock every composition root hands out, and the one timestamp format of the API."""

from __future__ import annotations

import re
from datetime import UTC, datetime

# RFC 3339's date-time (JSON Schema's "date-time" format): a T, seconds and a zone, always.
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,9})?(?:[Zz]|[+-][0-9]{2}:[0-9]{2})"
)


def utcnow() -> datetime:
    return datetime.now(UTC)


def timestamp(value: datetime | None) -> str | None:
    """ISO 8601 in UTC with a ``Z``, as every public JSON body writes times."""
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def parse_rfc3339(text: str) -> datetime:
    """``text`` as an aware datetime when it is an RFC 3339 date-time (``2026-11-24T00:00:00Z``),
    else ValueError: Python alone reads more (a number of seconds, a space for the T, no zone),
    which the API's documented ``date-time`` does not allow."""
    if not _RFC3339.fullmatch(text):
        raise ValueError("not an RFC 3339 date-time such as 2026-11-24T00:00:00Z")
    return datetime.fromisoformat(text.upper())
