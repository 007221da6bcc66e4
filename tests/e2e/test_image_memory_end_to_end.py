"""Eight concurrent uploads of decompression bombs, or of the largest images the API accepts,
through gunicorn as production runs it: the API's processes grow by less than 200 MB in all.

Growth is each process's peak resident set (``VmHWM``, reset through ``/proc/<pid>/clear_refs``
just before) minus its resident set then, summed over gunicorn's master and workers. A memory
bound, not a timing: nothing here measures speed.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from services.auth.keys import Role
from services.clock import utcnow
from services.settings import load_settings
from tests.e2e.conftest import make_env, start_api
from tests.support.images import gif_screen_bomb, png_bomb
from tests.support.roots import build_test_api

pytestmark = pytest.mark.e2e

MEMORY_REDIS_DB = 12
UPLOADS = 8
GROWTH_LIMIT = 200 * 2**20


@pytest.fixture(scope="module")
def api(
    redis_server: Any, s3_server: Any, models_dir: Path, tmp_path_factory: Any
) -> Iterator[tuple[int, str, str]]:
    """(gunicorn's process group, its URL, a user key): two processes, as the e2e API runs."""
    workdir = tmp_path_factory.mktemp("memory")
    env = make_env(redis_server, s3_server, models_dir, workdir, MEMORY_REDIS_DB)
    process, url = start_api(env, workdir / "api.log", workers=2)
    root = build_test_api(load_settings(env))
    try:
        key = root.keys.create("memory", Role.USER, utcnow())[1]
    finally:
        root.close()
    yield process.pgid, url, key
    process.stop()


def _group(pgid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getpgid(int(entry)) == pgid:
                    pids.append(int(entry))
            except ProcessLookupError:
                continue
    return pids


def _status(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} for process {pid}")


def peak_growth(pgid: int, work: Callable[[], None]) -> int:
    """Bytes the group's processes grew by at their peaks while ``work`` ran, summed."""
    pids = _group(pgid)
    for pid in pids:
        try:
            with open(f"/proc/{pid}/clear_refs", "w") as clear:
                clear.write("5")  # the peak (VmHWM) starts again from the current RSS
        except OSError as exc:
            pytest.skip(f"cannot reset the peak RSS of process {pid}: {exc}")
    before = {pid: _status(pid, "VmRSS") for pid in pids}
    work()
    return sum(_status(pid, "VmHWM") - before[pid] for pid in pids)


def upload_at_once(url: str, key: str, image: bytes, count: int = UPLOADS) -> list[int]:
    """POST ``image`` as a multipart job ``count`` times at once; the statuses."""
    statuses: list[int] = []
    start = threading.Barrier(count)

    def upload(index: int) -> None:
        start.wait()
        response = requests.post(
            f"{url}/v1/jobs",
            files={"image": ("a.png", image, "image/png")},
            data={"prompt": f"What is this? ({index})", "max_tokens": "4"},
            headers={"Authorization": f"Bearer {key}"},
            timeout=120,
        )
        statuses.append(response.status_code)

    threads = [threading.Thread(target=upload, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses


@pytest.mark.parametrize(
    ("build", "status"),
    [
        pytest.param(lambda: png_bomb(6324), 422, id="png-bomb-6324"),
        pytest.param(gif_screen_bomb, 422, id="gif-screen-bomb-6000"),
        pytest.param(lambda: png_bomb(4096), 202, id="largest-accepted-rgb-png"),
        pytest.param(lambda: png_bomb(4096, alpha=True), 202, id="largest-accepted-rgba-png"),
    ],
)
def test_eight_concurrent_uploads_raise_the_apis_rss_by_less_than_200_mb(
    api: tuple[int, str, str], build: Callable[[], bytes], status: int
) -> None:
    """Before the per-process decode budget: +500 MB for the largest accepted PNGs (the bombs
    were already refused from their headers)."""
    pgid, url, key = api
    image = build()
    assert upload_at_once(url, key, image, count=1) == [status]  # warm up: Pillow's plugins
    statuses: list[int] = []
    growth = peak_growth(pgid, lambda: statuses.extend(upload_at_once(url, key, image)))
    assert statuses == [status] * UPLOADS
    assert growth < GROWTH_LIMIT, f"{growth / 2**20:.0f} MiB"
