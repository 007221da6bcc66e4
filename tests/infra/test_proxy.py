"""The front proxy: the one nginx template, rendered and run as the local stack runs it.

A real nginx (Debian's) in front of a stand-in upstream (``http.server``): its own refusals are
JSON in the API's error shape, body and header limits hold for chunked bodies too, and the
template says what the rest of the house relies on (long-polls fit, gunicorn closes idle
connections after nginx does). The slow-client tests against the real API are in
``tests/e2e/test_proxy_end_to_end.py``.
"""

from __future__ import annotations

import json
import re
import socket
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from infra import gunicorn_conf
from infra.localstack.parts import GUNICORN_CONFIG, Part, api_part, healthz, proxy_part, start_parts
from infra.localstack.proxy import TEMPLATE, ProxyConfig, render_template
from infra.localstack.servers import free_port
from services.settings import Settings
from tests.support.nginx import NO_NGINX, needs_nginx

LIMIT = 64 * 1024
"""The stand-in's body limit: small, so a refused body is cheap to send."""
TEXT = TEMPLATE.read_text()


def _directive(name: str) -> str:
    (value,) = re.findall(rf"^\s*{name}\s+([^;]+);", TEXT, flags=re.MULTILINE)
    return value


def _seconds(value: str) -> int:
    assert value.endswith("s"), value
    return int(value[:-1])


# --------------------------------------------------------------------------- the template


def test_render_fills_loupe_placeholders_and_leaves_nginx_variables() -> None:
    text = "listen ${LOUPE_PROXY_LISTEN}; set $x $host; add ${HOME};"
    rendered = render_template(text, {"LOUPE_PROXY_LISTEN": "8000"})
    assert rendered == "listen 8000; set $x $host; add ${HOME};"
    with pytest.raises(KeyError, match="LOUPE_PROXY_LISTEN"):
        render_template(text, {})


def test_template_placeholders_are_exactly_the_configs_and_always_braced() -> None:
    """envsubst (compose) and render_template (here) agree only on braced names."""
    names = set(re.findall(r"\$\{(\w+)\}", TEXT))
    assert names == set(ProxyConfig("l", "u", 1).values())
    assert not re.search(r"\$LOUPE_", TEXT)


def test_long_polls_fit_in_the_proxys_read_timeout() -> None:
    assert _seconds(_directive("proxy_read_timeout")) > Settings().max_wait_seconds


def test_gunicorn_keeps_idle_connections_open_longer_than_nginx_reuses_them() -> None:
    upstream_keepalive = _seconds(re.findall(r"keepalive_timeout\s+(\w+);", TEXT)[0])
    assert gunicorn_conf.keepalive > upstream_keepalive


def test_the_proxy_buffers_requests_and_bounds_slow_clients() -> None:
    assert _directive("proxy_request_buffering") == "on"
    assert _directive("proxy_http_version") == "1.1"
    assert _seconds(_directive("client_header_timeout")) <= 10
    assert _seconds(_directive("client_body_timeout")) <= 10
    assert _directive("client_max_body_size") == "${LOUPE_MAX_REQUEST_BYTES}"


def test_gunicorn_limits_are_no_tighter_than_what_nginx_lets_through() -> None:
    assert _directive("large_client_header_buffers") == "4 8k"
    assert gunicorn_conf.limit_request_line >= 8190
    assert gunicorn_conf.limit_request_field_size >= 8190
    assert gunicorn_conf.worker_class == "gthread"


def test_every_error_page_is_json_in_the_apis_shape() -> None:
    targets = re.findall(r"error_page (\d+) (?:=(\d+) )?(/\.loupe-errors/\d+);", TEXT)
    assert {code for code, _, _ in targets} >= {"400", "408", "413", "414", "494", "502", "504"}
    for code, answered, uri in targets:
        block = TEXT[TEXT.index(f"location = {uri} {{") :].split("}\n", 1)[0]
        if code == "405":  # answered by the API: see the next test
            continue
        status, body = re.findall(r"return (\d+) '(.*)\\n';", block)[0]
        assert status == (answered or code) == uri.rsplit("/", 1)[1]
        assert "default_type application/json;" in block and "internal;" in block
        assert set(json.loads(body)["error"]) == {"code", "message"}


def test_nginx_hands_its_trace_refusal_to_the_api() -> None:
    """nginx's own 405 (TRACE) had HTML and no Allow; the API answers it with both right."""
    block = TEXT[TEXT.index("location = /.loupe-errors/405 {") :].split("}\n", 1)[0]
    assert "internal;" in block and "proxy_method TRACE;" in block
    assert "proxy_pass http://loupe_api$request_uri;" in block


def test_api_part_takes_gunicorns_settings_from_the_shared_config() -> None:
    argv = api_part({}).argv
    assert argv[argv.index("--config") + 1] == str(GUNICORN_CONFIG)
    assert GUNICORN_CONFIG.is_file()


# --------------------------------------------------------------------------- a real nginx


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: Any) -> Iterator[str]:
    """nginx (the stack's proxy part, body limit :data:`LIMIT`) in front of ``http.server``
    serving a ``healthz`` file; the proxy's URL."""
    if NO_NGINX:
        pytest.skip(NO_NGINX)
    workdir = tmp_path_factory.mktemp("proxy")
    (workdir / "www").mkdir()
    (workdir / "www" / "healthz").write_text("ok")
    port = free_port()
    upstream_argv = (sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory")
    upstream = Part(
        "api", (*upstream_argv, str(workdir / "www"), str(port)),
        lambda _p: healthz(f"http://127.0.0.1:{port}"), f"http://127.0.0.1:{port}",
    )  # fmt: skip
    front = proxy_part({"LOUPE_MAX_REQUEST_BYTES": str(LIMIT)}, upstream, workdir / "nginx")
    processes = start_parts(
        [(upstream, workdir / "upstream.log"), (front, workdir / "nginx.log")], {}, timeout=30
    )
    assert front.url is not None
    yield front.url
    for process in reversed(processes):
        process.stop()


def _raw(url: str, request: bytes, *, timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    """Send ``request`` as is; the answer's status, headers (lower-case names) and body."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines)
    return int(status_line.split()[1]), headers, body


def _assert_json_error(answer: tuple[int, dict[str, str], bytes], status: int, code: str) -> None:
    got, headers, body = answer
    assert got == status, body
    assert headers["content-type"] == "application/json"
    assert headers["x-content-type-options"] == "nosniff"
    assert json.loads(body)["error"]["code"] == code


def _get(target: bytes, *headers: bytes) -> bytes:
    return b"\r\n".join([b"GET " + target + b" HTTP/1.1", b"Host: loupe", *headers, b"", b""])


@needs_nginx
def test_nginx_accepts_the_rendered_template(proxy: str) -> None:
    status, headers, body = _raw(proxy, _get(b"/healthz", b"Connection: close"))
    assert (status, body) == (200, b"ok")
    assert headers["server"] == "nginx", "no version in Server"


@needs_nginx
def test_malformed_http_is_a_json_400(proxy: str) -> None:
    _assert_json_error(_raw(proxy, b"NOT HTTP AT ALL\r\n\r\n"), 400, "bad_request")
    _assert_json_error(_raw(proxy, b"GET / HTTP/1.1\r\n\r\n"), 400, "bad_request")


@needs_nginx
def test_an_overlong_request_line_is_a_json_414(proxy: str) -> None:
    answer = _raw(proxy, _get(b"/v1/jobs?x=" + b"a" * 9000))
    _assert_json_error(answer, 414, "request_uri_too_large")


@needs_nginx
def test_an_overlong_header_is_a_json_431(proxy: str) -> None:
    answer = _raw(proxy, _get(b"/healthz", b"X-Big: " + b"a" * 9000))
    _assert_json_error(answer, 431, "request_header_fields_too_large")


@needs_nginx
def test_a_body_over_the_limit_is_a_json_413(proxy: str) -> None:
    body = b"{" + b" " * LIMIT + b"}"
    head = b"POST /v1/jobs HTTP/1.1\r\nHost: loupe\r\nContent-Type: application/json\r\n"
    answer = _raw(proxy, head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
    _assert_json_error(answer, 413, "payload_too_large")


@needs_nginx
def test_a_chunked_body_over_the_limit_is_a_json_413_not_cut(
    proxy: str,
) -> None:
    chunk = b"a" * 4096
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(LIMIT // 4096 + 2))
    head = b"POST /v1/jobs HTTP/1.1\r\nHost: loupe\r\nContent-Type: application/json\r\n"
    answer = _raw(proxy, head + b"Transfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n")
    _assert_json_error(answer, 413, "payload_too_large")


@needs_nginx
def test_unsupported_transfer_encoding_and_version_are_json(
    proxy: str,
) -> None:
    gzip = b"POST / HTTP/1.1\r\nHost: loupe\r\nTransfer-Encoding: gzip\r\n\r\n"
    _assert_json_error(_raw(proxy, gzip), 501, "not_implemented")
    _assert_json_error(_raw(proxy, b"GET / HTTP/2.0\r\nHost: x\r\n\r\n"), 505, "http_version_not_supported")  # fmt: skip


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


@needs_nginx
def test_an_api_that_is_down_is_a_json_502_with_retry_after(tmp_path: Path) -> None:
    dead = Part("api", ("true",), lambda _process: True, f"http://127.0.0.1:{free_port()}")
    front = proxy_part({}, dead, tmp_path / "nginx")
    assert front.url is not None
    listening = replace(front, ready=lambda _process: _accepts(int(front.url.rsplit(":", 1)[1])))
    (process,) = start_parts([(listening, tmp_path / "nginx.log")], {}, timeout=30)
    try:
        status, headers, body = _raw(front.url, _get(b"/healthz", b"Connection: close"))
    finally:
        process.stop()
    _assert_json_error((status, headers, body), 502, "bad_gateway")
    assert headers["retry-after"] == "5"


def test_proxy_part_refuses_an_api_without_a_url(tmp_path: Path) -> None:
    api = replace(api_part({}), url=None)
    with pytest.raises(ValueError, match="no URL"):
        proxy_part({}, api, tmp_path)
