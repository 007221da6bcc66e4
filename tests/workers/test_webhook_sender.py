"""Retry-After parsing and a receiver that drips its answer (real loopback HTTP server)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from services.settings import load_settings
from tests.image_server import running_image_server
from workers.webhook_sender import parse_retry_after, post_webhook

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("120", 120.0), (" 5 ", 5.0), ("\u00b2", None), ("soon", None), ("", None), (None, None),
     ("Tue, 24 Nov 2026 12:01:00 GMT", 60.0)],
)  # fmt: skip
def test_parse_retry_after(value, seconds):
    assert parse_retry_after(value, NOW) == seconds


def test_a_receiver_that_drips_its_body_is_cut_off_at_the_timeout():
    for server in running_image_server():
        settings = load_settings({
            "LOUPE_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8", "LOUPE_WEBHOOK_ALLOW_HTTP": "1",
            "LOUPE_WEBHOOK_TIMEOUT_SECONDS": "1",
        })  # fmt: skip
        started = time.monotonic()
        result = post_webhook(server.url("/slow"), b"{}", {}, settings)
        assert time.monotonic() - started < 10  # /slow would drip for 20 s
        assert result.http_status == 200 and result.error is None
