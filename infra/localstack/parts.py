"""The app processes of the local stack, each defined once: its command, environment, readiness.

Every way Loupe runs locally starts its processes from here: ``python -m infra.localstack.stack
up`` (detached: they outlive the command), the batching benchmark and the end-to-end tests
(attached: owned, stopped and reaped by the caller). Redis and SeaweedFS are started by
:func:`infra.localstack.servers.start_redis` / :func:`~infra.localstack.servers.start_seaweed`.

=================  ============================================  ==============================
part               command                                       ready when
=================  ============================================  ==============================
api                gunicorn gthread ``services.api.wsgi:app``    ``GET /healthz`` answers 200
proxy              nginx in front of the api (the production     ``GET /healthz`` answers 200
                   path: slow clients never reach gunicorn)      through it
inference worker   ``celery worker -Q inference`` (threads)      it logs ``<name>@<host> ready.``
light worker       ``celery worker -Q webhooks,maintenance``     it logs ``<name>@<host> ready.``
                   with an embedded beat (no model)
=================  ============================================  ==============================

Sizes the app also reads come from the processes' environment, so the command and the app never
disagree: gunicorn's ``--threads`` is ``LOUPE_API_THREADS`` (the app sizes its long-poll waiters
from it), a worker's ``--concurrency`` is ``LOUPE_WORKER_CONCURRENCY`` /
``LOUPE_WEBHOOK_CONCURRENCY``.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import requests

from infra.localstack.proxy import ProxyConfig, find_nginx, nginx_argv, write_config
from infra.localstack.servers import (
    LOOPBACK,
    ServerProcess,
    ServerStartError,
    free_port,
    read_log_tail,
    spawn,
)
from services.settings import Settings, load_settings

REPO_ROOT = Path(__file__).resolve().parents[2]
"""The parts' default working directory: ``python -m`` puts it first on ``sys.path``."""
GUNICORN_CONFIG = REPO_ROOT / "infra" / "gunicorn_conf.py"
"""gunicorn's settings shared with the API image and compose (worker class, timeouts, limits)."""
CELERY_APP = "workers.celery_app"
READY_TIMEOUT_S = 300.0
_POLL_S = 0.2
_HEALTHZ_TIMEOUT_S = 5.0
"""Generous: on a loaded machine a starting gunicorn can be slow to answer its first request."""
_FAILURE_LOG_LINES = 60
_WORKER_READY = re.compile(r"@\S+ ready\.")
_DEFAULTS = Settings()

QUIET_ENV = {
    "PYTHONUNBUFFERED": "1",
    "OTEL_SDK_DISABLED": "true",
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "TOKENIZERS_PARALLELISM": "false",
}
"""Set on every app process: no network, no telemetry, output unbuffered (the logs are live)."""
ENGINE_DEFAULTS = {"VLLM_CPU_KVCACHE_SPACE": "1"}
"""Set where not set already: vLLM's CPU default KV cache (4 GiB) only slows a tiny model."""


@dataclass(frozen=True)
class Part:
    """One app process: ``argv`` (complete, interpreter first) and when it counts as started.

    ``ready(process)`` is polled while the process runs; ``url`` is where it serves, if it does.
    """

    name: str
    argv: tuple[str, ...]
    ready: Callable[[ServerProcess], bool]
    url: str | None = None


# --------------------------------------------------------------------------- environment


def process_env(loupe: Mapping[str, str], *, inherit_loupe: bool = True) -> dict[str, str]:
    """The environment of an app process: ours, ``loupe`` on top, then :data:`QUIET_ENV`.

    ``inherit_loupe=False`` drops the ``LOUPE_*`` variables of our own environment first, so
    only ``loupe`` configures the process (tests: a developer's shell must not leak in).
    """
    inherited = {
        key: value
        for key, value in os.environ.items()
        if inherit_loupe or not key.startswith("LOUPE_")
    }
    return {**ENGINE_DEFAULTS, **inherited, **loupe, **QUIET_ENV}


def _size(env: Mapping[str, str], name: str, default: int) -> str:
    return env.get(f"LOUPE_{name}", str(default))


# --------------------------------------------------------------------------- readiness


def healthz(url: str) -> bool:
    """Whether ``GET <url>/healthz`` answers 200 right now."""
    try:
        with requests.get(url + "/healthz", timeout=_HEALTHZ_TIMEOUT_S) as response:
            return response.status_code == 200
    except requests.RequestException:
        return False


def worker_ready(process: ServerProcess) -> bool:
    """Whether a Celery worker's log has its ``<name>@<host> ready.`` line (it consumes)."""
    return bool(_WORKER_READY.search(read_log_tail(process.log_path, lines=400)))


def _serves_healthz(url: str) -> Callable[[ServerProcess], bool]:
    return lambda _process: healthz(url)


# --------------------------------------------------------------------------- the parts


def api_part(env: Mapping[str, str], *, port: int | None = None, workers: int = 2) -> Part:
    """gunicorn serving ``services.api.wsgi:app`` on 127.0.0.1:``port`` (free if None).

    Worker class (gthread), timeouts and request limits come from :data:`GUNICORN_CONFIG`, as in
    the API image. ``--threads`` is ``env``'s ``LOUPE_API_THREADS`` (the app's default when
    unset): a long-poll holds a thread, not a process, and the app caps its waiters from the
    same number.
    """
    port = port or free_port()
    threads = _size(env, "API_THREADS", _DEFAULTS.api_threads)
    url = f"http://{LOOPBACK}:{port}"
    argv = (
        sys.executable, "-m", "gunicorn", "--config", str(GUNICORN_CONFIG),
        "--bind", f"{LOOPBACK}:{port}", "--workers", str(workers), "--threads", threads,
        "services.api.wsgi:app",
    )  # fmt: skip
    return Part("api", argv, _serves_healthz(url), url)


def proxy_part(
    env: Mapping[str, str], api: Part, workdir: Path, *, port: int | None = None
) -> Part:
    """nginx from the repository's one template in front of ``api``, on 127.0.0.1:``port``
    (free if None): the production path, where slow clients never hold a gunicorn thread.

    Its body limit is the API's own (``env``'s ``LOUPE_MAX_REQUEST_BYTES``, parsed as the app
    parses it). Writes its configuration into ``workdir`` now (its pid, temp files and nothing
    else go there too). Ready once ``/healthz`` answers 200 through it, so only once ``api``
    serves. Raises :class:`ServerStartError` when nginx is not installed.
    """
    if api.url is None:
        raise ValueError(f"part {api.name!r} serves no URL to proxy")
    port = port or free_port()
    limit = load_settings(env).max_request_bytes  # read as the app reads it
    upstream = api.url.removeprefix("http://")
    config = write_config(workdir, ProxyConfig(f"{LOOPBACK}:{port}", upstream, limit))
    url = f"http://{LOOPBACK}:{port}"
    return Part("proxy", nginx_argv(find_nginx(), workdir, config), _serves_healthz(url), url)


def _celery_worker(app: str, queues: str, node: str, options: Sequence[str]) -> tuple[str, ...]:
    return (
        sys.executable, "-m", "celery", "-A", app, "worker", "-Q", queues, *options,
        "--without-gossip", "--without-mingle", "--loglevel", "INFO", "-n", f"{node}@%h",
    )  # fmt: skip


def inference_worker_part(
    env: Mapping[str, str],
    *,
    node: str = "loupe-local",
    queues: str = "inference",
    app: str = CELERY_APP,
) -> Part:
    """A Celery worker running jobs from ``queues``: threads feeding one shared engine.

    ``--concurrency`` is ``env``'s ``LOUPE_WORKER_CONCURRENCY``; unset, the app takes its
    model's ``max_num_seqs``. ``app`` may name another module exposing the Celery ``app`` (a
    test's fault-injecting one). Ready once it logs ``ready.``, after its model has loaded.
    """
    concurrency = env.get("LOUPE_WORKER_CONCURRENCY")
    sized = () if concurrency is None else ("--concurrency", concurrency)
    options = ("--pool", "threads", *sized, "--prefetch-multiplier", "1")
    return Part("worker", _celery_worker(app, queues, node, options), worker_ready)


def light_worker_part(
    env: Mapping[str, str],
    *,
    node: str = "loupe-webhooks",
    queues: str = "webhooks,maintenance",
    beat_schedule: Path | None = None,
) -> Part:
    """The model-less Celery worker: webhook deliveries and maintenance sweeps.

    With ``beat_schedule`` it embeds ``celery beat`` (state in that file), which schedules the
    sweeps: one per deployment. ``--concurrency`` is ``env``'s ``LOUPE_WEBHOOK_CONCURRENCY``.
    """
    beat = () if beat_schedule is None else ("--beat", "--schedule", str(beat_schedule))
    concurrency = _size(env, "WEBHOOK_CONCURRENCY", _DEFAULTS.webhook_concurrency)
    options = (*beat, "--pool", "threads", "--concurrency", concurrency)
    return Part("webhooks", _celery_worker(CELERY_APP, queues, node, options), worker_ready)


def dispatcher_ready(process: ServerProcess) -> bool:
    """Whether a dispatcher's log has its ``dispatcher ready.`` line (it listens for nudges)."""
    return "dispatcher ready." in read_log_tail(process.log_path, lines=400)


def dispatcher_part(env: Mapping[str, str], *, name: str = "dispatcher") -> Part:
    """``python -m services.dispatch``: hands queued jobs to the broker in fair order. Any
    number may run (one leads through a lease in SQL, the others stand by)."""
    return Part(name, (sys.executable, "-m", "services.dispatch"), dispatcher_ready)


# --------------------------------------------------------------------------- starting


def start_part(
    part: Part,
    env: Mapping[str, str],
    log: Path,
    *,
    timeout: float = READY_TIMEOUT_S,
) -> ServerProcess:
    """Start one part attached (output appended to ``log``) and return it once ready.

    Raises :class:`ServerStartError` with its log tail, after stopping it, if it exits or is
    not ready within ``timeout`` seconds.
    """
    (process,) = start_parts([(part, log)], env, timeout=timeout)
    return process


def start_parts(
    parts: Sequence[tuple[Part, Path]],
    env: Mapping[str, str],
    *,
    cwd: Path = REPO_ROOT,
    detached: bool = False,
    timeout: float = READY_TIMEOUT_S,
    on_spawn: Callable[[Part, ServerProcess], None] | None = None,
) -> list[ServerProcess]:
    """Spawn every ``(part, log)`` in ``cwd``, then wait until all are ready.

    They start side by side (one may load a model while another binds its port). Returns the
    processes in ``parts`` order. ``on_spawn`` sees each one as soon as it runs (to record it).
    If any exits during startup or is late, every process spawned here is stopped, newest
    first, and :class:`ServerStartError` names it with its log tail.
    """
    processes: list[ServerProcess] = []
    try:
        for part, log in parts:
            processes.append(spawn(part.argv, log, env=env, cwd=cwd, detached=detached))
            if on_spawn is not None:
                on_spawn(part, processes[-1])
        await_ready([part for part, _ in parts], processes, timeout)
    except BaseException:
        for process in reversed(processes):
            process.stop()
        raise
    return processes


def await_ready(parts: Sequence[Part], processes: Sequence[ServerProcess], timeout: float) -> None:
    """Poll each part's readiness until all are ready; :class:`ServerStartError` if one exits
    or ``timeout`` seconds pass first."""
    deadline = time.monotonic() + timeout
    waiting = list(zip(parts, processes, strict=True))
    while True:
        waiting = [(part, process) for part, process in waiting if not part.ready(process)]
        if not waiting:
            return
        _raise_if_dead(waiting)
        if time.monotonic() >= deadline:
            raise _late(waiting, timeout)
        time.sleep(_POLL_S)


def _raise_if_dead(waiting: Sequence[tuple[Part, ServerProcess]]) -> None:
    for part, process in waiting:
        if not process.alive():
            tail = process.log_tail(_FAILURE_LOG_LINES)
            raise ServerStartError(f"{part.name} exited during startup:\n{tail}")


def _late(waiting: Sequence[tuple[Part, ServerProcess]], timeout: float) -> ServerStartError:
    names = ", ".join(part.name for part, _ in waiting)
    tails = "\n".join(
        f"--- {part.name}:\n{process.log_tail(_FAILURE_LOG_LINES)}" for part, process in waiting
    )
    return ServerStartError(f"{names} not ready within {timeout:.0f} s\n{tails}")
