"""The front-door benchmark's pure helpers (wrk's script and output, the request body, medians,
the result line, the table, the checks) and its bare app. The benchmark itself runs under
``make bench-api``, not here."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from PIL import Image
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from infra.bench import api, bare_app
from infra.bench.dispatch import BenchError
from infra.localstack.parts import api_part
from services.db import make_engine, normalize_url
from tests.support.images import make_image
from tests.support.jobs import insert_job
from tests.support.keys import new_key
from tests.support.stores import sql_job_store

REQUIRED_KEYS = [
    "bench", "db", "submit_rps", "bare_upload_rps", "ratio_submit", "poll_rps", "bare_row_rps",
    "ratio_poll", "submit_p50_ms", "submit_p50_ms_at_100k",
]  # fmt: skip
WRK_OUTPUT = """Running 10s test @ http://127.0.0.1:41234/v1/jobs
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   270.12ms   80.33ms 900.10ms   70.00%
    Req/Sec    30.10     10.20    60.00     65.00%
  601 requests in 10.00s, 500.00KB read
BENCH_WRK {"requests": 601, "duration_us": 10004000, "connect": 0, "read": 1, "write": 0, \
"status": 2, "timeout": 3, "p50_us": 270120, "p90_us": 390000, "p99_us": 700500, \
"max_us": 900100}
Requests/sec:     60.08
Transfer/sec:     49.98KB
"""


def _load(rps: float, p50: float = 10.0, **errors: int) -> api.Load:
    return api.Load(int(rps * 10), 10.0, p50, p50 * 2, p50 * 4, p50 * 8, **errors)


def _results(**changes: object) -> api.Results:
    rounds = {
        "submit": [_load(60, 270), _load(50, 300), _load(70, 250)],
        "upload": [_load(600, 20), _load(500, 25), _load(700, 15)],
        "poll": [_load(300), _load(400), _load(350)],
        "row": [_load(2000, 5), _load(1800, 6), _load(2200, 4)],
    }
    results = api.Results(
        database="sqlite",
        rounds=rounds,
        queued=_load(200, 40),
        deep={"submit": _load(40, 540), "poll_queued": _load(100, 80)},
        backlog=100_000,
        seconds=10,
        connections=16,
        submits=(1800, 1810),
        submit_runs=5,
        round_trips={"submit": api.RoundTrips(sql=8, commits=1, redis=2, s3=1)},
        loadavg=(4.5, 5.0),
    )
    return replace(results, **changes)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- wrk


def test_lua_strings_escape_quotes_backslashes_and_bytes_outside_printable_ascii() -> None:
    assert api.lua_string('Bearer a"b\\c') == '"Bearer a\\034b\\092c"'
    assert api.lua_string("é\n") == '"\\195\\169\\010"'
    assert api.lua_string("multipart/form-data; boundary=x") == (
        '"multipart/form-data; boundary=x"'
    )


def test_wrk_script_sets_method_headers_body_and_prints_its_result_line() -> None:
    target = api.Target(
        "submit", "http://x/v1/jobs", "POST", {"Authorization": "Bearer k"}, Path("/w/form.bin")
    )

    script = api.wrk_script(target)

    assert 'wrk.method = "POST"' in script
    assert 'wrk.headers["Authorization"] = "Bearer k"' in script
    assert "io.open(\"/w/form.bin\", 'rb')" in script
    assert "wrk.body = file:read('*a')" in script
    assert "function done(summary, latency, requests)" in script
    assert "latency:percentile(50)" in script


def test_a_get_script_sends_no_body() -> None:
    script = api.wrk_script(api.Target("row", "http://x/rows/1"))

    assert 'wrk.method = "GET"' in script
    assert "wrk.body" not in script


def test_parse_wrk_reads_the_result_line_in_milliseconds_and_seconds() -> None:
    load = api.parse_wrk(WRK_OUTPUT)

    assert (load.requests, load.seconds) == (601, 10.004)
    assert (load.p50_ms, load.p90_ms, load.p99_ms, load.max_ms) == (270.12, 390.0, 700.5, 900.1)
    assert (load.socket_errors, load.bad_status, load.answered) == (4, 2, 599)
    assert load.rps == pytest.approx(60.076, abs=0.001)


def test_parse_wrk_without_a_result_line_names_the_output() -> None:
    with pytest.raises(BenchError, match=r"(?s)no result line.*Requests/sec"):
        api.parse_wrk("Requests/sec:     60.08\n")


# --------------------------------------------------------------------------- the body


def test_the_noise_png_is_a_valid_image_of_about_200_kb() -> None:
    png = api.noise_png()

    with Image.open(io.BytesIO(png)) as image:
        image.verify()
        assert (image.format, image.size) == ("PNG", (api.IMAGE_SIDE, api.IMAGE_SIDE))
    assert 190_000 < len(png) < 210_000


def test_multipart_form_parses_back_into_its_fields_and_file() -> None:
    body, content_type = api.multipart_form({"prompt": "Describe.", "max_tokens": "16"}, b"PNG!")

    request = Request(
        EnvironBuilder(method="POST", data=body, content_type=content_type).get_environ()
    )
    try:
        image = request.files["image"]
        assert request.form.to_dict() == {"prompt": "Describe.", "max_tokens": "16"}
        assert (image.read(), image.filename, image.mimetype) == (b"PNG!", "bench.png", "image/png")
    finally:
        request.close()


# --------------------------------------------------------------------------- results


def test_summary_starts_with_the_issues_keys_and_reports_medians_of_the_rounds() -> None:
    result = json.loads(json.dumps(api.summary(_results())))

    assert list(result)[: len(REQUIRED_KEYS)] == REQUIRED_KEYS
    assert (result["bench"], result["db"]) == ("api", "sqlite")
    assert (result["submit_rps"], result["bare_upload_rps"], result["ratio_submit"]) == (
        60.0,
        600.0,
        0.1,
    )
    assert (result["poll_rps"], result["bare_row_rps"], result["ratio_poll"]) == (
        350.0,
        2000.0,
        0.175,
    )
    assert (result["submit_p50_ms"], result["submit_p50_ms_at_100k"]) == (270.0, 540.0)
    assert (result["poll_queued_p50_ms"], result["poll_queued_p50_ms_at_100k"]) == (40.0, 80.0)
    assert result["round_trips"] == {"submit": {"sql": 8, "commits": 1, "redis": 2, "s3": 1}}
    assert (result["rounds"], result["backlog"], result["loadavg"]) == (3, 100_000, [4.5, 5.0])


def test_median_of_an_even_number_of_rounds_is_the_mean_of_the_middle_two() -> None:
    loads = [_load(10), _load(40), _load(20), _load(30)]

    assert api.median_of(loads, lambda load: load.rps) == 25.0


def test_targets_say_which_of_the_issues_lines_are_met() -> None:
    result = api.summary(_results())

    met = [ok for _, ok in api.targets(result)]
    assert met == [False, False, False]
    fast = {**result, "ratio_submit": 0.5, "ratio_poll": 0.7, "submit_p50_ms_at_100k": 405.0}
    assert [ok for _, ok in api.targets(fast)] == [True, True, True]


def test_table_has_each_endpoint_its_rounds_the_backlog_and_the_round_trips() -> None:
    table = api.format_table(_results())
    lines = table.splitlines()

    assert lines[0].split()[:2] == ["endpoint", "req/s"]
    submit = next(line for line in lines if line.startswith("POST /v1/jobs"))
    assert "60.0 / 50.0 / 70.0" in submit and submit.split()[-3:] == ["60.0", "270.0", "1080.0"]
    assert "at 100,000 queued jobs of the same key:" in table
    assert "ratio submit/upload 0.1, poll/row 0.175" in table
    assert "target ratio_submit 0.1 >= 0.5: NOT met" in table
    assert "submit       sql 8 (1)  redis 2  s3 1" in table


def test_no_problem_without_errors_and_with_every_answer_a_job() -> None:
    assert api.problems(_results()) == []


def test_problems_name_errors_and_a_mismatch_of_answers_and_jobs() -> None:
    rounds = {**_results().rounds, "row": [_load(2000, bad_status=3), _load(1800), _load(2200)]}
    deep = {**_results().deep, "submit": _load(40, socket_errors=1)}

    found = api.problems(_results(rounds=rounds, deep=deep, submits=(1800, 1900)))

    assert found == [
        "row: 3 answers outside 2xx, 0 socket errors",
        "submit: 0 answers outside 2xx, 1 socket errors",
        "submits: wrk counted 1800 answers but 1900 jobs were created",
    ]
    assert api.problems(_results(submits=(1800, 1799)))  # an answer without its job


def test_unmet_targets_fail_only_when_required() -> None:
    found = api.problems(_results(), require_targets=True)

    assert len(found) == 3
    assert all(problem.startswith("target not met: ") for problem in found)


# --------------------------------------------------------------------------- the stack


def test_the_bare_app_runs_under_the_api_parts_command_line() -> None:
    env = {"LOUPE_API_THREADS": "16"}
    bare, twin = api.bare_part(env, port=41001), api_part(env, port=41001)

    assert bare.name == "bare" and bare.url == twin.url
    assert [a for a in bare.argv if a != api.BARE_APP] == [a for a in twin.argv if a != api.API_APP]
    assert bare.argv[-1] == api.BARE_APP and twin.argv[-1] == api.API_APP


# --------------------------------------------------------------------------- the bare app


@pytest.fixture
def bare(sqlite_url: str) -> Iterator[FlaskClient]:
    app = bare_app.create_app(normalize_url(sqlite_url))
    yield app.test_client()
    app.extensions["bare_engine"].dispose()


def test_bare_upload_verifies_the_image_and_reads_its_size(bare: FlaskClient) -> None:
    image = (io.BytesIO(make_image(64, 48)), "a.png")

    response = bare.post("/upload", data={"image": image, "prompt": "hi"})

    assert response.status_code == 200
    assert (response.json or {})["width"] == 64 and (response.json or {})["height"] == 48


def test_bare_upload_refuses_no_image_and_garbage(bare: FlaskClient) -> None:
    assert bare.post("/upload", data={"prompt": "hi"}).status_code == 400
    garbage = (io.BytesIO(b"not an image"), "a.png")
    assert bare.post("/upload", data={"image": garbage}).status_code == 422


def test_bare_row_reads_one_job_by_its_primary_key(bare: FlaskClient, sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    try:
        job = insert_job(sql_job_store(engine), new_key(engine).id, datetime.now(UTC))
    finally:
        engine.dispose()

    response = bare.get(f"/rows/{job.id}")

    assert response.status_code == 200
    assert ((response.json or {})["id"], (response.json or {})["status"]) == (job.id, "queued")
    assert bare.get("/rows/job_none").status_code == 404
