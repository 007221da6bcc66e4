"""HTTP face of waiting: ``GET /v1/jobs/{id}?wait=N`` and ``Prefer: wait=N`` on submit.

- ``?wait=N``: a number of seconds, ``0 < N <= LOUPE_MAX_WAIT_SECONDS``; anything else is a 422
  (the client asked for something explicit and wrong).
- ``Prefer: wait=N`` (RFC 7240): a *preference*. Per RFC 7240 section 2 a preference the server
  cannot parse is ignored, so a malformed one (``wait=soon``, ``wait=-1``) means no wait and the
  usual 202, never an error. Values above the maximum are capped to it; the applied value is echoed
  in ``Preference-Applied: wait=N`` whenever the request actually waited.
- When this process already holds its maximum of waiters, the job is answered as it stands,
  without waiting (and without ``Preference-Applied``): waiting must never starve plain requests.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from flask import request

from services.api.auth import current_key
from services.errors import InvalidInput
from services.jobs.service import JobService
from services.jobs.types import Job
from services.jobs.waiting import JobWaiter

PREFERENCE_APPLIED = "Preference-Applied"


def parse_prefer_wait(headers: Iterable[str]) -> int | None:
    """The first ``wait`` preference of the ``Prefer`` header values, in whole seconds.

    None when there is none or it is malformed (RFC 7240: ignore what you cannot understand).
    Parameters after ``;`` are allowed and ignored; the value may be quoted.
    """
    for header in headers:
        for preference in header.split(","):
            token, _, rest = preference.split(";", 1)[0].partition("=")
            if token.strip().lower() != "wait":
                continue
            value = rest.strip().strip('"')
            # The first instance of a preference is the one that counts (RFC 7240 section 2).
            return int(value) if value.isascii() and value.isdigit() else None
    return None


@dataclass(frozen=True)
class Waiting:
    """Waits for the request's key's jobs in this process's ``waiter``, ``max_seconds`` at most."""

    waiter: JobWaiter
    jobs: JobService
    max_seconds: int

    def requested_wait(self) -> float | None:
        """The ``wait`` query parameter in seconds; None when absent; InvalidInput when invalid."""
        raw = request.args.get("wait")
        if raw is None:
            return None
        try:
            seconds = float(raw)
        except ValueError:
            seconds = math.nan
        if not (math.isfinite(seconds) and 0 < seconds <= self.max_seconds):
            raise InvalidInput(
                f"wait must be a number of seconds greater than 0 and at most "
                f"{self.max_seconds}; got {raw!r}.",
                code="invalid_wait",
            )
        return seconds

    def wait_for_job(self, job: Job, seconds: float) -> tuple[Job, bool]:
        """``job`` once terminal or after ``seconds``, and whether the wait was honoured.

        Not honoured (returned as is) when this process has no free waiter slot.
        """
        if job.status.terminal:
            return job, True
        slot = self.waiter.acquire()
        if slot is None:
            return job, False
        owner_id = current_key().id
        with slot:
            job = slot.wait(job.id, lambda: self.jobs.get(job.id, owner_id), seconds)
        return job, True

    def apply_prefer_wait(self, job: Job) -> tuple[Job, int, dict[str, str]]:
        """After a submit: (job, status, extra headers) honouring ``Prefer: wait=N``.

        200 with the job when it is terminal within the wait, else 202 (the usual answer).
        """
        preferred = parse_prefer_wait(request.headers.getlist("Prefer"))
        if not preferred:
            return job, 202, {}
        seconds = min(preferred, self.max_seconds)
        job, honoured = self.wait_for_job(job, seconds)
        headers = {PREFERENCE_APPLIED: f"wait={seconds}"} if honoured else {}
        return job, 200 if job.status.terminal else 202, headers
