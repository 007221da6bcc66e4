"""Slow clients against the production path: nginx (the one template) in front of gunicorn.

Before the proxy, 100 slow connections to gunicorn made ``/healthz`` fail for a whole minute and
a body shorter than its ``Content-Length`` held a thread for 40 s (``infra.bench.slowloris``
measures both paths side by side). Here: through nginx, ``/healthz`` stays fast beside 100 slow
clients and a real submit succeeds; bodies that never complete never reach gunicorn.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from infra.bench.slowloris import SHORT_BODY, Slowloris, healthz_latencies, summary
from tests.conftest import auth
from tests.e2e.conftest import start_fronted_api
from tests.support.images import make_image
from tests.support.nginx import needs_nginx

pytestmark = [pytest.mark.e2e, needs_nginx]

SLOW_CONNECTIONS = 100
"""More than the API's threads (2 processes x 32): enough to stop gunicorn facing them alone."""
P99_LIMIT_S = 0.100


@pytest.fixture(scope="module")
def fronted(e2e_env: dict[str, str], tmp_path_factory: Any) -> Iterator[tuple[str, str]]:
    """(nginx's URL, gunicorn's URL) of the API as ``make up`` runs it."""
    processes, proxy_url, api_url = start_fronted_api(e2e_env, tmp_path_factory.mktemp("front"))
    yield proxy_url, api_url
    for process in reversed(processes):
        process.stop()


def _address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def _submit(url: str, key: str) -> requests.Response:
    files = {"image": ("cat.png", make_image(), "image/png")}
    data = {"prompt": "What is in this picture?", "max_tokens": "4"}
    return requests.post(url + "/v1/jobs", files=files, data=data, headers=auth(key), timeout=30)


def test_e2e_slowloris_through_nginx_leaves_healthz_fast_and_submits_working(
    fronted: tuple[str, str], e2e_key: str
) -> None:
    proxy_url, _ = fronted
    with Slowloris(_address(proxy_url), SLOW_CONNECTIONS, interval=3.0) as slow:
        latencies = healthz_latencies(proxy_url, duration=20.0, interval=0.1)
        submitted = _submit(proxy_url, e2e_key)
        polled = requests.get(
            proxy_url + submitted.headers["Location"] + "?wait=1", headers=auth(e2e_key), timeout=30
        )
    result = summary(latencies)
    print(f"healthz through nginx beside {SLOW_CONNECTIONS} slow clients: {result}")
    assert slow.reopened >= SLOW_CONNECTIONS // 2, "nginx ends slow headers (10 s)"
    assert result["requests"] >= 100 and result["failed"] == 0
    assert result["p99_ms"] is not None and result["p99_ms"] < P99_LIMIT_S * 1000
    assert submitted.status_code == 202, submitted.text
    # The long-poll answers through nginx (whether a worker of the shared stack ran it yet).
    assert polled.status_code == 200 and polled.json()["id"] == submitted.json()["id"]


def test_e2e_bodies_shorter_than_their_length_never_hold_a_gunicorn_thread(
    fronted: tuple[str, str],
) -> None:
    """The issue's case: a body that stops short, then silence (no byte within the test)."""
    proxy_url, api_url = fronted
    with Slowloris(_address(proxy_url), SLOW_CONNECTIONS, interval=60.0, openings=[SHORT_BODY]):
        direct = summary(healthz_latencies(api_url, duration=6.0, interval=0.05))
        through = summary(healthz_latencies(proxy_url, duration=2.0, interval=0.05))
    print(f"healthz beside {SLOW_CONNECTIONS} short bodies: gunicorn {direct}, nginx {through}")
    for result in (direct, through):
        assert result["failed"] == 0
        assert result["p99_ms"] is not None and result["p99_ms"] < P99_LIMIT_S * 1000


def test_e2e_the_apis_own_errors_pass_through_nginx_untouched(fronted: tuple[str, str]) -> None:
    proxy_url, api_url = fronted
    through = requests.get(proxy_url + "/v1/jobs/job_missing", timeout=10)
    direct = requests.get(api_url + "/v1/jobs/job_missing", timeout=10)
    assert (through.status_code, through.json()) == (direct.status_code, direct.json())
    assert through.status_code == 401


def test_e2e_the_proxys_error_pages_are_not_reachable_from_outside(
    fronted: tuple[str, str],
) -> None:
    """The error pages are internal: a client asking for one gets a JSON 404."""
    answer = requests.get(fronted[0] + "/.loupe-errors/502", timeout=10)
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "not_found"
