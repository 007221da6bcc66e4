"""Usage reports as JSON and CSV, from ledger groups. CSV rows hold the same Decimal strings
as the JSON groups, so their column sums equal the JSON totals exactly."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from services.clock import parse_rfc3339
from services.errors import InvalidInput
from services.usage.ledger import GroupBy, UsageGroup, UsageTotals
from services.usage.pricing import money_str

_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")

CURRENCY = "USD"
MAX_RANGE_DAYS = 366


@dataclass(frozen=True)
class ReportQuery:
    start: date
    end: date  # inclusive
    group_by: GroupBy
    format: str  # "json" | "csv"


def parse_query(args: dict[str, str], today: date) -> ReportQuery:
    """``from``/``to`` are ISO dates (UTC days, both inclusive; an ISO datetime is cut to its
    date); the default range is the current month up to today. 422 for anything else."""
    start = _date(args, "from") or today.replace(day=1)
    end = _date(args, "to") or today
    if end < start:
        raise InvalidInput("'to' must not be before 'from'.", code="invalid_parameter")
    if (end - start) > timedelta(days=MAX_RANGE_DAYS):
        raise InvalidInput(
            f"The range may span at most {MAX_RANGE_DAYS} days.", code="invalid_parameter"
        )
    group_by = args.get("group_by", "day")  # given, it must be one of them: "" is not
    if group_by not in ("day", "model"):
        raise InvalidInput("group_by must be 'day' or 'model'.", code="invalid_parameter")
    fmt = args.get("format", "json")
    if fmt not in ("json", "csv"):
        raise InvalidInput("format must be 'json' or 'csv'.", code="invalid_parameter")
    return ReportQuery(start, end, "day" if group_by == "day" else "model", fmt)


def _date(args: dict[str, str], name: str) -> date | None:
    """An ISO date (``2026-11-01``) or an RFC 3339 date-time cut to its date; absent is None,
    anything else (an empty value too) a 422."""
    raw = args.get(name)
    if raw is None:
        return None
    try:
        if _DAY.fullmatch(raw):
            return date.fromisoformat(raw)
        return parse_rfc3339(raw).date()
    except ValueError:
        raise InvalidInput(
            f"'{name}' must be an ISO date like 2026-11-01, got {raw!r}.", code="invalid_parameter"
        ) from None


def report_to_public(
    query: ReportQuery, groups: Sequence[UsageGroup], *, per_key: bool
) -> dict[str, Any]:
    totals = sum((g.totals for g in groups), UsageTotals())
    data = []
    for g in groups:
        row: dict[str, Any] = {query.group_by if query.group_by == "model" else "date": g.group}
        if per_key:
            row = {"key_id": g.key_id, "key_name": g.key_name, **row}
        data.append(row | g.totals.to_public(CURRENCY))
    return {
        "object": "usage",
        "from": query.start.isoformat(),
        "to": query.end.isoformat(),
        "group_by": query.group_by,
        "totals": totals.to_public(CURRENCY),
        "data": data,
    }


def to_csv(query: ReportQuery, groups: Sequence[UsageGroup], *, per_key: bool) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    head = ["date" if query.group_by == "day" else "model", "jobs", "images", "prompt_tokens",
            "completion_tokens", "cost_input", "cost_output", "cost_images", "cost_total",
            "currency"]  # fmt: skip
    writer.writerow((["key_id", "key_name"] if per_key else []) + head)
    for g in groups:
        t = g.totals
        row = [g.group, t.jobs, t.images, t.prompt_tokens, t.completion_tokens,
               money_str(t.cost_input), money_str(t.cost_output), money_str(t.cost_images),
               money_str(t.cost_total), CURRENCY]  # fmt: skip
        writer.writerow(([g.key_id, g.key_name] if per_key else []) + row)
    return out.getvalue()
