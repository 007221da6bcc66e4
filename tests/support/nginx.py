"""Whether this machine has nginx (the local stack's front proxy), for tests that need it."""

from __future__ import annotations

import pytest

from infra.localstack.proxy import find_nginx
from infra.localstack.servers import ServerStartError


def _missing() -> str:
    """Why nginx cannot run here ("" when it can)."""
    try:
        find_nginx()
    except ServerStartError as exc:
        return str(exc)
    return ""


NO_NGINX = _missing()
needs_nginx = pytest.mark.skipif(bool(NO_NGINX), reason=NO_NGINX or "nginx is installed")
"""Skips a test, saying why, where nginx is not installed (``make nginx`` installs it)."""
