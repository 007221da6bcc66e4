"""Schemathesis against the live API serving ``/v1/openapi.json``: zero failures.

The API runs as production runs it (nginx in front of gunicorn, real Redis, SeaweedFS, SQLite),
so the proxy's own answers (414, 431: JSON too) are held to the document as well; no worker is
needed, since the stateful phase follows the document's links create → get → cancel on queued
jobs. Waits are cut to a second (``Prefer: wait``, ``?wait``, chat completions) so a request that
would wait for a worker does not eat the time budget. ``LOUPE_FUZZ_SECONDS`` sets the budget
(``make fuzz`` runs a long one); a failing run leaves a pytest file reproducing each failure.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from services.auth.keys import Role
from services.clock import utcnow
from services.settings import load_settings
from tests.e2e.conftest import make_env, start_fronted_api
from tests.support.nginx import needs_nginx
from tests.support.roots import build_test_api

pytestmark = [pytest.mark.e2e, needs_nginx]

FUZZ_REDIS_DB = 11
DEFAULT_SECONDS = 60
CONFIG = Path(__file__).with_name("schemathesis.toml")

# Every check schemathesis has, but these, which do not apply to Loupe:
NOT_APPLICABLE = {
    # Positive data is refused on purpose where JSON Schema cannot say why: an image's bytes must
    # decode, a prompt must fit the model's context, metadata has limits on keys and values
    # together; the refusal is a documented 4xx, which the status-code check holds to.
    "positive_data_acceptance",
}


@pytest.fixture(scope="module")
def fuzz_env(
    redis_server: Any, s3_server: Any, models_dir: Path, tmp_path_factory: Any
) -> dict[str, str]:
    env = make_env(
        redis_server, s3_server, models_dir, tmp_path_factory.mktemp("fuzz"), FUZZ_REDIS_DB
    )
    return env | {
        "LOUPE_MAX_WAIT_SECONDS": "1",
        "LOUPE_CHAT_COMPLETIONS_TIMEOUT_SECONDS": "1",
    }


@pytest.fixture(scope="module")
def fuzz_url(fuzz_env: dict[str, str], tmp_path_factory: Any) -> Iterator[str]:
    processes, proxy_url, _ = start_fronted_api(fuzz_env, tmp_path_factory.mktemp("fuzz-logs"))
    yield proxy_url
    for process in reversed(processes):
        process.stop()


def _admin_key(env: dict[str, str]) -> str:
    api = build_test_api(load_settings(env))
    try:
        return api.keys.create("fuzz", Role.ADMIN, utcnow())[1]
    finally:
        api.close()


def schemathesis_command(url: str, key: str, seconds: int, report_dir: Path) -> list[str]:
    return [
        sys.executable, "-m", "schemathesis.cli", "--config-file", str(CONFIG),
        "run", f"{url}/v1/openapi.json",
        "--header", f"Authorization: Bearer {key}",
        "--checks", "all",
        "--exclude-checks", ",".join(sorted(NOT_APPLICABLE)),
        "--mode", "all",  # positive and negative data
        "--phases", "examples,coverage,fuzzing,stateful",
        "--max-time", str(seconds),
        # One worker: CPython 3.11's ast module keeps its recursion depth in state shared by
        # threads (gh-106905), and hypothesis parses filter lambdas' source with it; two
        # threads doing so at once crash schemathesis with "AST constructor recursion depth
        # mismatch".
        "--workers", "1",
        "--seed", os.environ.get("LOUPE_FUZZ_SEED", "1"),
        "--generation-database", "none",
        "--request-timeout", "10",
        "--report", "pytest",
        "--report-dir", str(report_dir),
        "--no-color",
    ]  # fmt: skip


def test_schemathesis_finds_no_failure(
    fuzz_url: str, fuzz_env: dict[str, str], tmp_path: Path
) -> None:
    seconds = int(os.environ.get("LOUPE_FUZZ_SECONDS", DEFAULT_SECONDS))
    command = schemathesis_command(fuzz_url, _admin_key(fuzz_env), seconds, tmp_path)
    run = subprocess.run(  # in tmp_path: schemathesis keeps a cache in its working directory
        command, capture_output=True, text=True, timeout=seconds + 120, cwd=tmp_path
    )
    assert run.returncode == 0, run.stdout[-20000:] + run.stderr[-5000:]


def test_trace_through_the_proxy_is_json_with_allow(fuzz_url: str) -> None:
    """Found by schemathesis (unsupported_method): nginx refused TRACE itself, in HTML and
    without the Allow header RFC 9110 requires."""
    response = requests.request("TRACE", f"{fuzz_url}/v1/jobs", timeout=10)
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"
    assert set(response.headers["Allow"].split(", ")) == {"GET", "HEAD", "OPTIONS", "POST"}
