"""SSRF guard for webhook URLs: only public addresses, checked at submit AND at connect time.

A URL is refused when its scheme is not https (http only with ``LOUPE_WEBHOOK_ALLOW_HTTP``) or
when ANY address its host resolves to is loopback, private, link-local, multicast, reserved,
unspecified, CGNAT, a cloud metadata address or otherwise not globally routable, for IPv4 and IPv6
(an IPv4-mapped, 6to4 or Teredo IPv6 address is judged by the IPv4 address inside it). Addresses
inside ``LOUPE_WEBHOOK_ALLOWED_NETWORKS`` are allowed (local development and tests).

The check at submit time gives the user a 422; the worker calls :func:`resolve_target` again just
before it connects and then connects to exactly the address it checked (see
``workers/webhook_sender.py``), so a DNS answer that changes in between (rebinding) cannot
smuggle a request to an internal address.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from services.errors import InvalidInput
from services.settings import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Sequence[str]]

_METADATA = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)
_CGNAT = ipaddress.ip_network("100.64.0.0/10")


class WebhookUrlRefused(InvalidInput):
    """The webhook URL is not acceptable (scheme, host, or a non-public address)."""

    code = "invalid_webhook_url"


@dataclass(frozen=True)
class Target:
    """A checked webhook target: connect to ``address``, but speak HTTP/TLS as ``host``."""

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
    """Why ``address`` may not be a webhook target, or None if it is a public address."""
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
        (address.is_reserved, "a reserved address"),
        (not address.is_global, "not a public address"),
    )
    return next((reason for hit, reason in checks if hit), None)


def _allowed(address: IPAddress, settings: Settings) -> bool:
    return any(
        address in ipaddress.ip_network(network) for network in settings.webhook_allowed_networks
    )


def resolve_target(url: str, settings: Settings, resolver: Resolver = system_resolver) -> Target:
    """Check ``url`` and pick the address to connect to; :class:`WebhookUrlRefused` if refused.

    Every resolved address must pass (a host that resolves to one public and one private
    address is refused), so whichever address a client would pick is safe.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise WebhookUrlRefused("webhook is not a valid URL.") from None
    schemes = ("https", "http") if settings.webhook_allow_http else ("https",)
    if parts.scheme not in schemes:
        raise WebhookUrlRefused(
            "webhook must be an https:// URL."
            if not settings.webhook_allow_http
            else "webhook must be an http:// or https:// URL."
        )
    host = parts.hostname
    if not host:
        raise WebhookUrlRefused("webhook URL has no host.")
    if parts.username is not None or parts.password is not None:
        raise WebhookUrlRefused("webhook URL must not carry credentials.")
    port = port or (443 if parts.scheme == "https" else 80)
    try:
        addresses = [ipaddress.ip_address(a.split("%", 1)[0]) for a in resolver(host, port)]
    except (OSError, UnicodeError, ValueError):
        raise WebhookUrlRefused(f"webhook host {host!r} does not resolve.") from None
    if not addresses:
        raise WebhookUrlRefused(f"webhook host {host!r} does not resolve.")
    for address in addresses:
        reason = None if _allowed(address, settings) else blocked_reason(address)
        if reason is not None:
            raise WebhookUrlRefused(
                f"webhook host {host!r} resolves to {address}, {reason}; webhooks go to public "
                "addresses only."
            )
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(parts.scheme, host, port, path, str(addresses[0]))


def check_webhook_url(url: str | None, settings: Settings) -> str | None:
    """Submit-time check: ``url`` unchanged when acceptable, :class:`WebhookUrlRefused` if not."""
    if url is None:
        return None
    resolve_target(url, settings)
    return url
