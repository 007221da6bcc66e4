"""One job through the running dev stack: ``python -m infra.localstack.demo``.

Reads ``.dev/stack.env`` (written by ``python -m infra.localstack.stack up``), draws a 320x240
PNG, submits it as multipart to ``POST $LOUPE_API_URL/v1/jobs`` with the user key, expects 202,
polls ``GET /v1/jobs/{id}`` every 0.5 s (up to 5 min) until the job is terminal, and prints the
final job JSON.

Exit codes: 0 when the job succeeded with non-empty ``output.text``, ``usage.prompt_tokens > 0``,
``usage.completion_tokens > 0`` and ``usage.images == 1``; 1 otherwise (the reason on stderr);
2 when the stack is not up (no env file).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import requests
from PIL import Image, ImageDraw

from infra.localstack.stack import StackPaths, read_env_file

TERMINAL = frozenset({"succeeded", "failed", "canceled", "expired"})
POLL_INTERVAL_S = 0.5
POLL_TIMEOUT_S = 300.0
PROMPT = "Describe this image."
MODEL = "loupe-tiny-mllama"
MAX_TOKENS = 24


def sample_png(width: int = 320, height: int = 240) -> bytes:
    """A small PNG with a sky, a sun, a house and a tree: something to describe."""
    image = Image.new("RGB", (width, height), (135, 190, 235))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, int(height * 0.7), width, height), fill=(70, 150, 60))
    draw.ellipse((width - 80, 20, width - 30, 70), fill=(250, 210, 40))
    draw.rectangle((60, 110, 160, 180), fill=(190, 70, 50), outline=(60, 30, 20), width=2)
    draw.polygon([(50, 110), (110, 60), (170, 110)], fill=(110, 60, 40))
    draw.rectangle((100, 140, 122, 180), fill=(80, 50, 30))
    draw.rectangle((215, 130, 227, 185), fill=(100, 70, 40))
    draw.ellipse((190, 85, 252, 145), fill=(40, 120, 50))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def job_problems(job: Mapping[str, Any]) -> list[str]:
    """Why ``job`` is not a good result (empty when it is): the demo's success contract."""
    problems = []
    if job.get("status") != "succeeded":
        problems.append(f"status is {job.get('status')!r}, error {job.get('error')!r}")
    output = job.get("output") or {}
    usage = job.get("usage") or {}
    if not (output.get("text") or "").strip():
        problems.append("output.text is empty")
    if not (usage.get("prompt_tokens") or 0) > 0:
        problems.append("usage.prompt_tokens is not > 0")
    if not (usage.get("completion_tokens") or 0) > 0:
        problems.append("usage.completion_tokens is not > 0")
    if usage.get("images") != 1:
        problems.append(f"usage.images is {usage.get('images')!r}, not 1")
    return problems


def submit(session: requests.Session, api_url: str, image: bytes) -> dict[str, Any]:
    """POST the multipart job; the job JSON, or RuntimeError unless the answer is 202."""
    response = session.post(
        f"{api_url}/v1/jobs",
        files={"image": ("sample.png", image, "image/png")},
        data={"prompt": PROMPT, "model": MODEL, "max_tokens": str(MAX_TOKENS)},
        timeout=30,
    )
    with response:
        if response.status_code != 202:
            raise RuntimeError(f"POST /v1/jobs answered {response.status_code}: {response.text}")
        job: dict[str, Any] = response.json()
    return job


def wait_for(
    session: requests.Session, api_url: str, job_id: str, timeout: float = POLL_TIMEOUT_S
) -> dict[str, Any]:
    """Poll ``GET /v1/jobs/{id}`` until terminal; the last job JSON, or TimeoutError."""
    deadline = time.monotonic() + timeout
    last_status = None
    while True:
        with session.get(f"{api_url}/v1/jobs/{job_id}", timeout=30) as response:
            response.raise_for_status()
            job: dict[str, Any] = response.json()
        if job.get("status") != last_status:
            last_status = job.get("status")
            print(f"job {job_id}: {last_status}", file=sys.stderr)
        if last_status in TERMINAL:
            return job
        if time.monotonic() >= deadline:
            raise TimeoutError(f"job {job_id} still {last_status!r} after {timeout:.0f} s")
        time.sleep(POLL_INTERVAL_S)


def run(env: Mapping[str, str]) -> int:
    """Submit one job with ``env``'s URL and user key, print it, judge it; the exit code."""
    api_url = env["LOUPE_API_URL"].rstrip("/")
    with requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {env['LOUPE_API_KEY']}"
        try:
            job = submit(session, api_url, sample_png())
            print(f"submitted job {job['id']} to {api_url}", file=sys.stderr)
            final = wait_for(session, api_url, job["id"])
        except (requests.RequestException, RuntimeError, TimeoutError, KeyError) as exc:
            print(f"demo failed: {exc}", file=sys.stderr)
            return 1
    print(json.dumps(final, indent=2, sort_keys=True))
    problems = job_problems(final)
    for problem in problems:
        print(f"demo failed: {problem}", file=sys.stderr)
    return 1 if problems else 0


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; ``--env-file`` defaults to ``.dev/stack.env``."""
    parser = argparse.ArgumentParser(prog="python -m infra.localstack.demo", description=__doc__)
    parser.add_argument("--env-file", type=Path, default=StackPaths.at().env_file)
    args = parser.parse_args(argv)
    if not args.env_file.exists():
        hint = "start the stack with `python -m infra.localstack.stack up`"
        print(f"{args.env_file} not found: {hint}", file=sys.stderr)
        return 2
    return run(read_env_file(args.env_file))


if __name__ == "__main__":
    sys.exit(main())
