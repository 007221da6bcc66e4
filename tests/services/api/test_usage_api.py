"""GET /v1/usage and /v1/admin/usage (JSON and CSV) and the 202's estimated_cost."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from services.auth.keys import Role
from services.clock import utcnow
from tests.conftest import auth
from tests.helpers import chat_body
from tests.support.images import make_image
from tests.support.jobs import insert_job, run_to
from tests.support.keys import new_key
from tests.support.models import LLAMA_11B, LLAMA_90B

T0 = datetime(2026, 10, 5, 9, 0, tzinfo=UTC)


@pytest.fixture
def admin_key(api) -> str:
    return new_key(api.keys, "root", Role.ADMIN).token


def _finish(api, owner_key: str, job_id: str, model: str, when: datetime, **kw) -> None:
    owner = api.keys.authenticate(owner_key).id
    card = api.registry.get(model).price
    insert_job(api.jobs, owner, when, job_id=job_id, price=card, model=model)
    run_to(api.jobs, job_id, kw.pop("outcome", "succeeded"), when, **kw)


@pytest.fixture
def history(api, user_key, other_key):
    """Billed jobs for two keys over three days in October 2026, two models."""
    for i in range(9):
        model = LLAMA_90B if i % 3 else LLAMA_11B
        when = T0 + timedelta(days=i % 3, hours=i)
        _finish(api, user_key, f"job_u{i}", model, when, prompt=1000 * (i + 1), completion=37 * i)
    _finish(api, user_key, "job_uf", LLAMA_90B, T0, outcome="failed", prompt=5, completion=1)
    _finish(api, user_key, "job_uq", LLAMA_90B, T0, outcome="canceled_queued")
    _finish(api, other_key, "job_o1", LLAMA_90B, T0, prompt=10**6, completion=10**5)


def _rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def _sum(rows, field) -> Decimal:
    return sum((Decimal(r[field]) for r in rows), Decimal(0))


@pytest.mark.parametrize("group_by", ["day", "model"])
def test_usage_csv_totals_equal_json_totals(client, user_key, history, group_by):
    query = f"/v1/usage?from=2026-10-01&to=2026-10-31&group_by={group_by}"
    body = client.get(query, headers=auth(user_key)).json
    response = client.get(query + "&format=csv", headers=auth(user_key))
    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    assert "attachment" in response.headers["Content-Disposition"]
    rows = _rows(response.get_data(as_text=True))
    totals = body["totals"]
    assert len(rows) == len(body["data"]) == (3 if group_by == "day" else 2)
    assert totals["jobs"] == 10  # 9 succeeded + 1 failed; the queued-canceled job is free
    for field in ("jobs", "images", "prompt_tokens", "completion_tokens"):
        assert _sum(rows, field) == totals[field]
    for part in ("input", "output", "images", "total"):
        assert _sum(rows, f"cost_{part}") == Decimal(totals["cost"][part])
        assert sum(Decimal(d["cost"][part]) for d in body["data"]) == Decimal(totals["cost"][part])


def test_usage_json_matches_the_jobs_own_costs(client, api, user_key, history):
    body = client.get("/v1/usage?from=2026-10-01&to=2026-10-31", headers=auth(user_key)).json
    job_ids = [f"job_u{i}" for i in range(9)] + ["job_uf"]
    costs = [
        Decimal(client.get(f"/v1/jobs/{j}", headers=auth(user_key)).json["usage"]["cost"]["total"])
        for j in job_ids
    ]
    assert Decimal(body["totals"]["cost"]["total"]) == sum(costs)
    assert body["group_by"] == "day"
    assert [d["date"] for d in body["data"]] == ["2026-10-05", "2026-10-06", "2026-10-07"]
    assert body["totals"]["cost"]["currency"] == "USD"


def test_usage_shows_only_the_callers_key(client, other_key, history):
    body = client.get(
        "/v1/usage?from=2026-10-01&to=2026-10-31&group_by=model", headers=auth(other_key)
    ).json
    assert body["data"] == [
        {"model": LLAMA_90B, "jobs": 1, "images": 1, "prompt_tokens": 1000000,
         "completion_tokens": 100000, "total_tokens": 1100000,
         "cost": {"input": "0.35", "output": "0.04", "images": "0.0005058",
                  "total": "0.3905058", "currency": "USD"}},
    ]  # fmt: skip


def test_usage_range_filters_by_utc_day(client, user_key, history):
    body = client.get("/v1/usage?from=2026-10-06&to=2026-10-06", headers=auth(user_key)).json
    assert [d["date"] for d in body["data"]] == ["2026-10-06"]
    assert body["totals"]["jobs"] == 3


def test_usage_default_range_is_the_current_month(client, api, user_key):
    _finish(api, user_key, "job_now", LLAMA_90B, utcnow(), prompt=10, completion=2)
    _finish(api, user_key, "job_old", LLAMA_90B, utcnow() - timedelta(days=40))
    body = client.get("/v1/usage", headers=auth(user_key)).json
    today = utcnow().date()
    assert (body["from"], body["to"]) == (today.replace(day=1).isoformat(), today.isoformat())
    assert body["totals"]["jobs"] == 1 and body["totals"]["prompt_tokens"] == 10


def test_admin_usage_lists_every_key_and_csv_matches(
    client, admin_key, user_key, other_key, history
):
    query = "/v1/admin/usage?from=2026-10-01&to=2026-10-31&group_by=model"
    response = client.get(query, headers=auth(admin_key))
    assert response.status_code == 200
    body = response.json
    assert {d["key_name"] for d in body["data"]} == {"alice", "bob"}
    assert body["totals"]["jobs"] == 11
    rows = _rows(client.get(query + "&format=csv", headers=auth(admin_key)).get_data(as_text=True))
    assert {r["key_name"] for r in rows} == {"alice", "bob"}
    assert _sum(rows, "cost_total") == Decimal(body["totals"]["cost"]["total"])
    assert _sum(rows, "jobs") == 11


def test_admin_usage_refuses_user_keys(client, user_key):
    response = client.get("/v1/admin/usage", headers=auth(user_key))
    assert response.status_code == 403
    assert response.json["error"]["code"] == "admin_required"
    assert client.get("/v1/admin/usage").status_code == 401
    assert client.get("/v1/usage").status_code == 401


@pytest.mark.parametrize(
    "query",
    ["from=2026-13-01", "from=yesterday", "from=2026-10-05&to=2026-10-01", "group_by=key",
     "format=xml", "from=2020-01-01&to=2026-01-01",
     # Found by schemathesis: an empty date meant "the default", a date-time without a zone or
     # with a space was read as well, though the document says date or date-time.
     "to=", "from=", "from=2026-10-01T00:00:00", "from=2026-10-01 00:00:00Z", "from=20261001",
     "group_by=", "format="],
)  # fmt: skip
def test_usage_bad_query_is_422(client, user_key, query):
    response = client.get(f"/v1/usage?{query}", headers=auth(user_key))
    assert response.status_code == 422
    assert response.json["error"]["code"] == "invalid_parameter"


def test_submit_answer_carries_estimated_cost(client, api, user_key):
    response = client.post(
        "/v1/jobs",
        json=chat_body(make_image(), prompt="Describe it.", model=LLAMA_90B, max_tokens=100),
        headers=auth(user_key),
    )
    assert response.status_code == 202, response.json
    estimate = response.json["estimated_cost"]
    # No tokenizer for the 90B weights here: the bound is UTF-8 bytes plus template allowance.
    assert estimate == {"max": estimate["max"], "currency": "USD", "prompt_tokens_max": 64 + 8 + 12 + 1,
                        "max_tokens": 100, "images": 1}  # fmt: skip
    expected = (Decimal("0.35") * 85 + Decimal("0.40") * 100) / 10**6 + Decimal("0.0005058")
    assert Decimal(estimate["max"]) == expected
    # The estimate stays on the job: the polling body shows the same.
    polled = client.get(response.headers["Location"], headers=auth(user_key)).json
    assert polled["estimated_cost"] == estimate


def test_usage_takes_an_rfc3339_date_time_as_its_date(client, user_key):
    body = client.get("/v1/usage?from=2026-10-01T23:00:00Z&to=2026-10-02", headers=auth(user_key))
    assert (body.json["from"], body.json["to"]) == ("2026-10-01", "2026-10-02")
