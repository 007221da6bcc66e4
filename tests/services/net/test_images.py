"""RemoteImageFetcher against a real loopback HTTP server: SSRF policy, limits, failures."""

from __future__ import annotations

import time

import pytest

from services.errors import PayloadTooLarge
from services.net.images import ImageUrlRefused, ImageUrlUnreachable, RemoteImageFetcher
from services.settings import load_settings
from tests.image_server import running_image_server
from tests.support.images import make_image

LOOPBACK_OK = {"LOUPE_IMAGE_URL_ALLOWED_NETWORKS": "127.0.0.0/8", "LOUPE_IMAGE_URL_ALLOW_HTTP": "1"}


@pytest.fixture
def server():
    yield from running_image_server()


def fetcher(**env: str) -> RemoteImageFetcher:
    return RemoteImageFetcher(load_settings(LOOPBACK_OK | env))


def test_fetch_returns_the_served_bytes(server):
    image = make_image()
    server.routes["/cat.png"] = (200, {"Content-Type": "image/png"}, image)
    assert fetcher().fetch(server.url("/cat.png")) == image
    assert server.hits == ["/cat.png"]


def test_fetch_reads_a_chunked_body(server):
    image = make_image(30, 30)
    server.routes["/c.png"] = (200, {"Transfer-Encoding": "chunked"}, image)
    assert fetcher().fetch(server.url("/c.png")) == image


def test_loopback_is_refused_unless_allowlisted_and_nothing_is_requested(server):
    server.routes["/cat.png"] = (200, {}, make_image())
    plain = RemoteImageFetcher(load_settings({"LOUPE_IMAGE_URL_ALLOW_HTTP": "1"}))
    with pytest.raises(ImageUrlRefused, match="loopback") as refused:
        plain.fetch(server.url("/cat.png"))
    assert refused.value.code == "invalid_image_url" and refused.value.http_status == 422
    assert server.hits == []


@pytest.mark.parametrize(
    "url",
    [
        "https://10.1.2.3/a.png",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/a.png",
        "https://[::ffff:192.168.0.1]/a.png",
        "https://user:pw@93.184.215.14/a.png",
        "ftp://93.184.215.14/a.png",
    ],
)
def test_private_metadata_and_odd_urls_are_refused_without_a_connection(url):
    with pytest.raises(ImageUrlRefused):
        RemoteImageFetcher(load_settings({})).fetch(url)


def test_plain_http_is_refused_unless_allowed(server):
    strict = RemoteImageFetcher(load_settings({"LOUPE_IMAGE_URL_ALLOWED_NETWORKS": "127.0.0.0/8"}))
    with pytest.raises(ImageUrlRefused, match="https://"):
        strict.fetch(server.url("/cat.png"))
    assert server.hits == []


def test_non_200_answers_are_unreachable(server):
    with pytest.raises(ImageUrlUnreachable, match="HTTP 404") as missing:
        fetcher().fetch(server.url("/missing.png"))
    assert missing.value.code == "image_url_unreachable" and missing.value.http_status == 422


def test_redirects_are_not_followed(server):
    server.routes["/moved"] = (302, {"Location": "http://169.254.169.254/"}, b"")
    with pytest.raises(ImageUrlUnreachable, match="redirects are not followed"):
        fetcher().fetch(server.url("/moved"))
    assert server.hits == ["/moved"]


def test_too_large_by_content_length_or_by_reading(server):
    big = make_image(400, 400, "BMP")
    server.routes["/big.bmp"] = (200, {}, big)
    server.routes["/big-chunked.bmp"] = (200, {"Transfer-Encoding": "chunked"}, big)
    small_limit = fetcher(LOUPE_MAX_IMAGE_BYTES=str(len(big) // 2))
    for path in ("/big.bmp", "/big-chunked.bmp"):
        with pytest.raises(PayloadTooLarge) as too_large:
            small_limit.fetch(server.url(path))
        assert too_large.value.code == "image_too_large"


def test_a_closed_port_is_unreachable(server):
    url = server.url("/cat.png")
    server.stop()
    with pytest.raises(ImageUrlUnreachable, match="could not be fetched"):
        fetcher().fetch(url)


def test_a_trickling_server_is_cut_off_at_the_timeout(server):
    # /slow drips a byte every 0.2 s for 20 s: a read that waits for a full chunk would wait it out.
    started = time.monotonic()
    with pytest.raises(ImageUrlUnreachable, match="longer than 1 s"):
        fetcher(LOUPE_IMAGE_FETCH_TIMEOUT_SECONDS="1").fetch(server.url("/slow"))
    assert time.monotonic() - started < 10


def test_a_content_length_that_is_not_ascii_digits_is_ignored(server):
    image = make_image()
    server.routes["/odd.png"] = (200, {"Content-Length": "\u00b2"}, image)
    assert fetcher().fetch(server.url("/odd.png")) == image


def test_site_local_ipv6_is_refused():
    with pytest.raises(ImageUrlRefused, match="site-local"):
        RemoteImageFetcher(load_settings({})).fetch("https://[fec0::1]/a.png")
