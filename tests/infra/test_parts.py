"""The stack's parts, defined once: their commands, environment, readiness, and how a set starts."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from infra import gunicorn_conf
from infra.localstack.parts import (
    GUNICORN_CONFIG,
    QUIET_ENV,
    Part,
    api_part,
    inference_worker_part,
    light_worker_part,
    process_env,
    proxy_part,
    start_part,
    start_parts,
    worker_ready,
)
from infra.localstack.servers import RedisServer, S3Server, ServerStartError, redis_ping
from infra.localstack.stack import (
    API_THREADS,
    PARTS,
    StackPaths,
    launched,
    local_app_parts,
)
from services.settings import default_max_waiters, load_settings
from tests.support.nginx import needs_nginx

PYTHON = sys.executable
_READY = "import time; print('stand-in@test ready.', flush=True); time.sleep(600)"
_DIES = "print('ImportError: no module named vllm', flush=True); raise SystemExit(3)"
_SILENT = "import time; time.sleep(600)"


def _option(argv: tuple[str, ...], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def _stand_in(name: str, script: str) -> Part:
    """A process that reports ready the way a Celery worker does, under the real check."""
    return Part(name, (PYTHON, "-c", script), worker_ready)


# --------------------------------------------------------------------------- commands


def test_api_runs_gthread_with_the_threads_the_app_is_told_about() -> None:
    env = {"LOUPE_API_THREADS": str(API_THREADS)}
    api = api_part(env, port=8123, workers=3)

    assert _option(api.argv, "--config") == str(GUNICORN_CONFIG)
    assert gunicorn_conf.worker_class == "gthread"
    assert _option(api.argv, "--threads") == str(API_THREADS)
    assert _option(api.argv, "--workers") == "3"
    assert _option(api.argv, "--bind") == "127.0.0.1:8123"
    assert api.url == "http://127.0.0.1:8123"
    settings = load_settings(env)
    assert settings.max_waiters_per_process == default_max_waiters(API_THREADS)
    assert 0 < settings.max_waiters_per_process < API_THREADS


def test_api_threads_default_to_the_apps_own_default() -> None:
    assert _option(api_part({}).argv, "--threads") == str(load_settings({}).api_threads)


@needs_nginx
def test_proxy_fronts_the_api_with_its_body_limit_from_the_template(tmp_path: Path) -> None:
    api = api_part({}, port=8123)
    proxy = proxy_part({"LOUPE_MAX_REQUEST_BYTES": "4096"}, api, tmp_path / "nginx", port=8124)

    assert proxy.name == "proxy" and proxy.url == "http://127.0.0.1:8124"
    assert (_option(proxy.argv, "-p"), _option(proxy.argv, "-g")) == (
        str(tmp_path / "nginx"),
        "daemon off;",
    )
    site = (tmp_path / "nginx" / "loupe.conf").read_text()
    assert "server 127.0.0.1:8123;" in site
    assert "listen 127.0.0.1:8124 default_server;" in site
    assert "client_max_body_size 4096;" in site
    assert not re.search(r"\$\{LOUPE_\w+\}", site)
    main = Path(_option(proxy.argv, "-c")).read_text()
    assert f"include {tmp_path / 'nginx' / 'loupe.conf'};" in main
    assert f"pid {tmp_path / 'nginx' / 'nginx.pid'};" in main


@needs_nginx
def test_proxy_body_limit_defaults_to_the_apps(tmp_path: Path) -> None:
    proxy_part({}, api_part({}), tmp_path)

    limit = load_settings({}).max_request_bytes
    assert f"client_max_body_size {limit};" in (tmp_path / "loupe.conf").read_text()


def test_inference_worker_takes_its_knobs_and_sizes_from_the_environment() -> None:
    env = {"LOUPE_WORKER_CONCURRENCY": "7"}
    worker = inference_worker_part(env, node="pool", queues="tiny-pool", app="tests.e2e.x")

    assert worker.argv[:3] == (PYTHON, "-m", "celery")
    assert (_option(worker.argv, "-A"), _option(worker.argv, "-Q")) == ("tests.e2e.x", "tiny-pool")
    assert _option(worker.argv, "--concurrency") == "7"
    assert _option(worker.argv, "--pool") == "threads"
    assert _option(worker.argv, "--prefetch-multiplier") == "1"
    assert _option(worker.argv, "-n") == "pool@%h"
    assert "--beat" not in worker.argv


def test_inference_worker_without_a_concurrency_leaves_it_to_the_model() -> None:
    assert "--concurrency" not in inference_worker_part({}).argv


def test_light_worker_embeds_the_beat_only_when_given_its_schedule(tmp_path: Path) -> None:
    plain = light_worker_part({"LOUPE_WEBHOOK_CONCURRENCY": "4"}, node="hooks", queues="webhooks")
    beating = light_worker_part({}, beat_schedule=tmp_path / "schedule")

    assert (_option(plain.argv, "-Q"), _option(plain.argv, "--concurrency")) == ("webhooks", "4")
    assert "--beat" not in plain.argv
    assert _option(beating.argv, "-Q") == "webhooks,maintenance"
    assert _option(beating.argv, "--schedule") == str(tmp_path / "schedule")
    assert _option(beating.argv, "--concurrency") == str(load_settings({}).webhook_concurrency)


@needs_nginx
def test_the_dev_stacks_app_parts_are_the_parts_it_records(tmp_path: Path) -> None:
    parts = local_app_parts(StackPaths.at(tmp_path), {})

    assert tuple(part.name for part in parts) == PARTS[2:]


def test_process_env_isolated_drops_the_shells_loupe_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LOUPE_DEFAULT_MODEL", "from-the-shell")
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "3")

    inherited = process_env({"LOUPE_S3_BUCKET": "b"})
    isolated = process_env({"LOUPE_S3_BUCKET": "b"}, inherit_loupe=False)

    assert inherited["LOUPE_DEFAULT_MODEL"] == "from-the-shell"
    assert "LOUPE_DEFAULT_MODEL" not in isolated
    assert isolated["LOUPE_S3_BUCKET"] == "b"
    assert isolated["VLLM_CPU_KVCACHE_SPACE"] == "3"  # a default, not forced
    assert QUIET_ENV.items() <= isolated.items()


# --------------------------------------------------------------------------- starting


def test_start_part_returns_once_ready_and_stops_cleanly(tmp_path: Path) -> None:
    process = start_part(_stand_in("worker", _READY), process_env({}), tmp_path / "w.log")
    try:
        assert process.alive()
        assert "ready." in process.log_text()
    finally:
        process.stop()
    assert not process.alive()
    assert process.returncode is not None


def test_a_part_that_dies_stops_the_parts_spawned_with_it(tmp_path: Path) -> None:
    seen = []
    parts = [(_stand_in("api", _READY), tmp_path / "a.log"), (_stand_in("worker", _DIES), tmp_path / "w.log")]  # fmt: skip

    with pytest.raises(ServerStartError, match="worker exited during startup") as failed:
        start_parts(parts, process_env({}), on_spawn=lambda _part, p: seen.append(p), timeout=60)

    assert "no module named vllm" in str(failed.value)
    assert len(seen) == 2
    assert not any(process.alive() for process in seen)


def test_a_part_never_ready_is_named_with_its_log_after_the_timeout(tmp_path: Path) -> None:
    seen = []
    part = _stand_in("webhooks", "print('starting', flush=True); " + _SILENT)

    with pytest.raises(ServerStartError, match="webhooks not ready within 1 s") as failed:
        start_parts(
            [(part, tmp_path / "h.log")], process_env({}), timeout=1, on_spawn=lambda _, p: seen.append(p)
        )  # fmt: skip

    assert "starting" in str(failed.value)
    assert not seen[0].alive()


def test_launched_stops_what_it_started_when_a_later_part_fails(tmp_path: Path) -> None:
    """Redis and SeaweedFS were up when the worker died: the error leaving the block stops them."""
    paths = StackPaths.at(tmp_path / "dev")
    backing: list[RedisServer | S3Server] = []

    def start_a_stack_whose_worker_dies() -> None:
        with launched(paths, say=lambda _: None) as launcher:
            backing.extend(launcher.backing())
            launcher.apps([_stand_in("api", _READY), _stand_in("worker", _DIES)], {}, timeout=60)

    with pytest.raises(ServerStartError, match="worker exited during startup"):
        start_a_stack_whose_worker_dies()

    redis, s3 = backing
    assert not redis.process.alive()
    assert not s3.process.alive()
    assert not redis_ping(redis.port)
