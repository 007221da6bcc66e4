"""SSRF guard for user-supplied URLs: only public addresses, checked before EVERY connection.

A URL is refused when its scheme is not https (http only where the policy allows it) or when ANY
address its host resolves to is loopback, private, link-local, multicast, reserved, unspecified,
CGNAT, a cloud metadata address or otherwise not globally routable, for IPv4 and IPv6 (an
IPv4-mapped, 6to4 or Teredo IPv6 address is judged by the IPv4 address inside it). Addresses
inside the policy's allowed networks pass (local development and tests).

:func:`resolve_target` returns the address it checked, and :func:`send` connects to exactly
that address while TLS SNI, the certificate check and the ``Host`` header use the URL's host
name, so a DNS answer that changes in between (rebinding) cannot smuggle a request to an internal
address. Redirects are never followed: a redirect could point anywhere.

Used for webhook targets (``services.net.webhook_urls``) and remote images
(``services.net.images``).
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

import urllib3

from services.errors import InvalidInput

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Sequence[str]]

_METADATA = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
READ_CHUNK = 64 * 1024


@dataclass(frozen=True)
class UrlPolicy:
    """What one kind of outbound URL may be: its name in messages, schemes and exceptions."""

    label: str  # "webhook", "image_url": how error messages name the URL
    allow_http: bool
    allowed_networks: tuple[str, ...]
    refused: type[InvalidInput]  # raised (422) with a message saying why


@dataclass(frozen=True)
class Target:
    """A checked URL: connect to ``address``, but speak HTTP/TLS as ``host``."""

    scheme: str
    host: str
    port: int
    path: str  # path and query, at least "/"
    address: str

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        name = f"[{self.host}]" if ":" in self.host else self.host
        return name if self.port == default else f"{name}:{self.port}"


def system_resolver(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (IPv4 and IPv6)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def blocked_reason(address: IPAddress) -> str | None:
    """Why ``address`` may not be reached, or None if it is a public address."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address.teredo is not None:
            embedded = address.teredo[1]
        if embedded is not None:
            return blocked_reason(embedded)
    checks = (
        (address in _METADATA, "a cloud metadata address"),
        (address.is_loopback, "a loopback address"),
        (address.is_unspecified, "an unspecified address"),
        (address.is_link_local, "a link-local address"),
        (address.is_multicast, "a multicast address"),
        (isinstance(address, ipaddress.IPv4Address) and address in _CGNAT, "a CGNAT address"),
        (address.is_private, "a private address"),
        (
            isinstance(address, ipaddress.IPv6Address) and address.is_site_local,
            "a site-local address",
        ),
        (address.is_reserved, "a reserved address"),
        (not address.is_global, "not a public address"),
    )
    return next((reason for hit, reason in checks if hit), None)


def _allowed(address: IPAddress, policy: UrlPolicy) -> bool:
    return any(address in ipaddress.ip_network(network) for network in policy.allowed_networks)


def resolve_target(url: str, policy: UrlPolicy, resolver: Resolver = system_resolver) -> Target:
    """Check ``url`` and pick the address to connect to; ``policy.refused`` if refused.

    Every resolved address must pass (a host that resolves to one public and one private
    address is refused), so whichever address a client would pick is safe.
    """
    label, refused = policy.label, policy.refused
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise refused(f"{label} is not a valid URL.") from None
    schemes = ("https", "http") if policy.allow_http else ("https",)
    if parts.scheme not in schemes:
        raise refused(
            f"{label} must be an http:// or https:// URL."
            if policy.allow_http
            else f"{label} must be an https:// URL."
        )
    host = parts.hostname
    if not host:
        raise refused(f"{label} URL has no host.")
    if parts.username is not None or parts.password is not None:
        raise refused(f"{label} URL must not carry credentials.")
    port = port or (443 if parts.scheme == "https" else 80)
    try:
        addresses = [ipaddress.ip_address(a.split("%", 1)[0]) for a in resolver(host, port)]
    except (OSError, UnicodeError, ValueError):
        raise refused(f"{label} host {host!r} does not resolve.") from None
    if not addresses:
        raise refused(f"{label} host {host!r} does not resolve.")
    for address in addresses:
        reason = None if _allowed(address, policy) else blocked_reason(address)
        if reason is not None:
            raise refused(
                f"{label} host {host!r} resolves to {address}, {reason}; only public addresses "
                "are reachable."
            )
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(parts.scheme, host, port, path, str(addresses[0]))


def _open_pool(target: Target, timeout: float) -> urllib3.HTTPConnectionPool:
    """A one-off connection pool to the checked address, speaking HTTP/TLS as the URL's host."""
    limit = urllib3.Timeout(total=timeout)
    if target.scheme == "https":
        return urllib3.HTTPSConnectionPool(
            target.address,
            target.port,
            timeout=limit,
            retries=False,
            server_hostname=target.host,
            assert_hostname=target.host,
            cert_reqs="CERT_REQUIRED",
        )
    return urllib3.HTTPConnectionPool(target.address, target.port, timeout=limit, retries=False)


@contextmanager
def send(
    target: Target,
    method: str,
    timeout: float,
    headers: Mapping[str, str],
    body: bytes | None = None,
) -> Iterator[urllib3.BaseHTTPResponse]:
    """One request to the checked address, the response yielded unread.

    ``Host`` is the URL's host; redirects are never followed (a redirect could point anywhere,
    including inside our network) and nothing is retried. The response and its one-off
    connection are closed on the way out, never pooled half-read. Network trouble raises
    ``urllib3.exceptions.HTTPError``.
    """
    pool = _open_pool(target, timeout)
    try:
        response = pool.urlopen(
            method,
            target.path,
            body=body,
            headers={**headers, "Host": target.host_header},
            redirect=False,
            retries=False,
            preload_content=False,
            assert_same_host=False,
        )
        try:
            yield response
        finally:
            response.close()
    finally:
        pool.close()


def read_body(
    response: urllib3.BaseHTTPResponse, limit: int, deadline: float
) -> tuple[bytes, bool]:
    """Read at most ``limit`` + 1 bytes (one more than allowed tells a caller it was too long)
    before the ``time.monotonic()`` ``deadline``; returns (bytes, finished in time).

    ``read1`` returns whatever arrived, so a server that drips a byte at a time is cut off at the
    deadline (give or take one socket read), where ``read(n)`` would wait for all ``n`` bytes.
    """
    body = bytearray()
    while len(body) <= limit:
        if time.monotonic() > deadline:
            return bytes(body), False
        chunk = response.read1(min(READ_CHUNK, limit + 1 - len(body)))
        if not chunk:
            break
        body += chunk
    return bytes(body), True
