"""The SSRF guard: which addresses a webhook may target, at submit and at connect time."""

from __future__ import annotations

import ipaddress

import pytest

from services.net.webhook_urls import WebhookUrlRefused, blocked_reason, resolve_target
from services.settings import load_settings

STRICT = load_settings({})
LOCAL = load_settings(
    {"LOUPE_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8,::1/128", "LOUPE_WEBHOOK_ALLOW_HTTP": "true"}
)


def resolver_for(*addresses: str):
    return lambda host, port: list(addresses)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1", "127.8.9.10", "::1", "10.1.2.3", "172.16.0.1", "192.168.1.1",
        "169.254.169.254", "169.254.1.1", "fe80::1", "fd00:ec2::254", "fc00::1", "224.0.0.1",
        "ff02::1", "0.0.0.0", "::", "100.64.0.1", "240.0.0.1", "::ffff:127.0.0.1",
        "::ffff:10.0.0.1", "2002:7f00:1::", "192.0.2.1",
    ],
)  # fmt: skip
def test_blocked_reason_refuses_internal_addresses(address):
    assert blocked_reason(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", ["93.184.215.14", "8.8.8.8", "2606:4700::1111"])
def test_blocked_reason_allows_public_addresses(address):
    assert blocked_reason(ipaddress.ip_address(address)) is None


def test_resolve_target_pins_the_checked_address():
    target = resolve_target(
        "https://hooks.example.com:8443/in?x=1", STRICT, resolver_for("93.184.215.14")
    )
    assert (target.scheme, target.host, target.port) == ("https", "hooks.example.com", 8443)
    assert target.address == "93.184.215.14"
    assert target.path == "/in?x=1"
    assert target.host_header == "hooks.example.com:8443"


@pytest.mark.parametrize(
    "url",
    [
        "http://hooks.example.com/x",  # http needs LOUPE_WEBHOOK_ALLOW_HTTP
        "ftp://hooks.example.com/x",
        "https:///nohost",
        "https://user:pw@hooks.example.com/",
        "not a url",
    ],
)
def test_resolve_target_refuses_bad_urls(url):
    with pytest.raises(WebhookUrlRefused):
        resolve_target(url, STRICT, resolver_for("93.184.215.14"))


def test_resolve_target_refuses_a_host_with_any_internal_address():
    # One public and one private answer: a client could pick either, so refuse.
    with pytest.raises(WebhookUrlRefused, match=r"10\.0\.0\.5"):
        resolve_target("https://mixed.example.com/", STRICT, resolver_for("8.8.8.8", "10.0.0.5"))


def test_resolve_target_refuses_unresolvable_hosts():
    def fail(host, port):
        raise OSError("no such host")

    with pytest.raises(WebhookUrlRefused, match="does not resolve"):
        resolve_target("https://nowhere.invalid/", STRICT, fail)


def test_resolve_target_allowlist_admits_loopback_only_where_listed():
    target = resolve_target("http://127.0.0.1:9/x", LOCAL)
    assert target.address == "127.0.0.1"
    assert resolve_target("http://[::1]:9/x", LOCAL).host_header == "[::1]:9"
    with pytest.raises(WebhookUrlRefused):
        resolve_target("http://10.0.0.1/x", LOCAL)
    with pytest.raises(WebhookUrlRefused, match="loopback"):
        resolve_target("https://127.0.0.1/x", STRICT)
