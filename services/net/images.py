"""Remote images: an ``image_url`` part with an https URL is fetched at submit, then stored like
an uploaded image (content-addressed in S3), so the worker never reaches out to the internet and a
bad URL is a 4xx the moment the job is submitted, never a failed job later.

The fetch goes through the SSRF guard (``services.net.ssrf``): public addresses only (unless
``LOUPE_IMAGE_URL_ALLOWED_NETWORKS``), https only (unless ``LOUPE_IMAGE_URL_ALLOW_HTTP``), no
redirects, at most ``LOUPE_MAX_IMAGE_BYTES`` read, within ``LOUPE_IMAGE_FETCH_TIMEOUT_SECONDS``.
"""

from __future__ import annotations

import time
from typing import Protocol

import urllib3

from services.errors import InvalidInput, PayloadTooLarge
from services.net.ssrf import (
    Resolver,
    UrlPolicy,
    read_body,
    resolve_target,
    send,
    system_resolver,
)
from services.settings import Settings

USER_AGENT = "Loupe-ImageFetch/1"


class ImageUrlRefused(InvalidInput):
    """The image URL is not acceptable (scheme, host, or a non-public address)."""

    code = "invalid_image_url"


class ImageUrlUnreachable(InvalidInput):
    """The image URL was acceptable but did not give us an image (network error, non-200)."""

    code = "image_url_unreachable"


class ImageFetcher(Protocol):
    def fetch(self, url: str) -> bytes: ...


def image_url_policy(settings: Settings) -> UrlPolicy:
    return UrlPolicy(
        label="image_url",
        allow_http=settings.image_url_allow_http,
        allowed_networks=settings.image_url_allowed_networks,
        refused=ImageUrlRefused,
    )


class RemoteImageFetcher:
    """GETs an image URL through the SSRF guard; raises 4xx-mapped errors, never a 500."""

    def __init__(self, settings: Settings, resolver: Resolver = system_resolver) -> None:
        self._policy = image_url_policy(settings)
        self._max_bytes = settings.max_image_bytes
        self._timeout = settings.image_fetch_timeout_seconds
        self._resolver = resolver

    def fetch(self, url: str) -> bytes:
        target = resolve_target(url, self._policy, self._resolver)
        deadline = time.monotonic() + self._timeout
        headers = {"User-Agent": USER_AGENT, "Accept": "image/*"}
        try:
            with send(target, "GET", self._timeout, headers) as response:
                return self._read(url, response, deadline)
        except urllib3.exceptions.HTTPError as exc:
            raise ImageUrlUnreachable(
                f"image_url {url!r} could not be fetched ({type(exc).__name__})."
            ) from None

    def _read(self, url: str, response: urllib3.BaseHTTPResponse, deadline: float) -> bytes:
        if response.status != 200:
            hint = "; redirects are not followed" if 300 <= response.status < 400 else ""
            raise ImageUrlUnreachable(f"image_url {url!r} answered HTTP {response.status}{hint}.")
        declared = response.headers.get("Content-Length", "")
        if declared.isascii() and declared.isdigit() and int(declared) > self._max_bytes:
            raise self._too_large(url)
        body, in_time = read_body(response, self._max_bytes, deadline)
        if not in_time:
            raise ImageUrlUnreachable(
                f"image_url {url!r} took longer than {self._timeout:g} s to download."
            )
        if len(body) > self._max_bytes:
            raise self._too_large(url)
        return body

    def _too_large(self, url: str) -> PayloadTooLarge:
        return PayloadTooLarge(
            f"image_url {url!r} is larger than the limit of {self._max_bytes} bytes.",
            code="image_too_large",
        )
