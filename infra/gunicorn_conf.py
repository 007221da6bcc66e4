"""gunicorn's settings for the Loupe API, in one place (a gunicorn config file).

Every way the API runs passes ``--config infra/gunicorn_conf.py`` (the local stack's api part,
the API image's CMD, docker-compose.yml); what differs per deployment stays on their command
lines: ``--bind``, ``--threads`` (``LOUPE_API_THREADS``) and the process count
(``--workers`` / ``WEB_CONCURRENCY``).

gunicorn is never the front door. Its gthread worker gives a connection a whole thread as soon
as its first bytes arrive, so no setting here can stop slow clients from holding every thread
(a slowloris of 100 connections stopped the API). nginx in front
(``infra/nginx/loupe.conf.template``) reads each request completely before passing it on; these
settings bound what still reaches gunicorn.
"""

from __future__ import annotations

import ctypes
from typing import Any

worker_class = "gthread"
"""A long-poll (``?wait``, ``Prefer: wait``, ``/v1/chat/completions``) holds a thread, not a
process; the app caps its waiters below ``--threads``."""

timeout = 30
"""A worker process whose main loop is silent this long (wedged) is killed and restarted. In
gthread it does not cut a slow request: the proxy's timeouts do."""

graceful_timeout = 30
"""On a restart or stop, requests in flight get this long to finish; a long-poll cut by it ends
early and its client polls again (the job lives in SQL)."""

keepalive = 5
"""Seconds an idle kept-alive connection (waiting in the poller, holding no thread) stays open:
longer than nginx's upstream ``keepalive_timeout`` (4 s), so nginx always closes first and never
sends a request on a connection gunicorn is closing."""

limit_request_line = 8190
"""gunicorn's maximum; nginx already refuses request lines over 8 KB (414)."""

limit_request_fields = 100
limit_request_field_size = 8190
"""As nginx's ``large_client_header_buffers`` (8 KB; over it nginx answers 431)."""

accesslog = "-"
"""One access-log line per request on stdout (the process log)."""

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
MMAP_THRESHOLD = 1 << 20
"""Bytes from which each worker's allocations are mapped on their own (see :func:`post_fork`)."""


def post_fork(server: Any, worker: Any) -> None:
    """In each worker, before the app loads: allocations of 1 MiB or more (decoded images,
    request bodies) get pages of their own, given back to the system when freed.

    glibc's default raises that threshold as large blocks are freed, after which every thread
    keeps the images it decoded in its own arena: eight concurrent 4096x4096 PNGs took the two
    processes to +210-290 MB with one image decoded at a time in each
    (``LOUPE_DECODE_BUDGET_PIXELS``); with a fixed threshold, +130 MB, the budget itself.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return  # not glibc: its allocator keeps its own policy
    mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
