"""The dev stack CLI: up/status/down with real Redis and SeaweedFS and stand-in app processes.

The API and worker are replaced by tiny stand-ins (``http.server`` with a ``healthz`` file, a
script that logs ``ready.``) so these tests check the orchestration, not the app. The e2e test at
the end runs the real app through ``up``, the demo and ``down``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import create_engine, text

from infra.localstack import demo
from infra.localstack.parts import Part
from infra.localstack.servers import ServerProcess, make_s3_client, redis_ping
from infra.localstack.stack import (
    DEV_STACK,
    PARTS,
    StackPaths,
    StackPlan,
    dev_stack,
    down,
    local_app_parts,
    main,
    part_states,
    read_env_file,
    status,
    up,
    write_env_file,
)
from services.db.engine import normalize_url
from tests.conftest import _fresh_postgres_database
from tests.support.nginx import NO_NGINX

PYTHON = sys.executable


def _check_env(database_prefix: str = "sqlite:////") -> str:
    """Code a stand-in runs first: its environment is the stack's."""
    return (
        "import os, sys; "
        "assert os.environ['LOUPE_S3_BUCKET'] == 'loupe-images', os.environ; "
        f"assert os.environ['LOUPE_DATABASE_URL'].startswith({database_prefix!r}); "
        "assert os.environ['LOUPE_BROKER_URL'].startswith('redis://127.0.0.1:'); "
    )


_CHECK_WEBHOOK_ENV = (
    "assert os.environ['LOUPE_WEBHOOK_ALLOW_HTTP'] == 'true'; "
    "assert os.environ['LOUPE_WEBHOOK_ALLOWED_NETWORKS'] == '127.0.0.0/8,::1/128'; "
)
_WORKER = "import time; print('loupe-local@test ready.', flush=True); time.sleep(600)"
_WEBHOOKS = "import time; print('loupe-webhooks@test ready.', flush=True); time.sleep(600)"
_DISPATCHER = "import time; print('dispatcher ready.', flush=True); time.sleep(600)"


def fake_plan(
    tmp_path: Path, *, worker_script: str = _WORKER, database_prefix: str = "sqlite:////"
) -> StackPlan:
    """The dev stack's plan with stand-in commands: the real parts' readiness checks and URL,
    ``http.server`` serving a ``healthz`` file as the API behind the real proxy (nginx; the test
    skips without it), scripts that log ``ready.`` once their database URL starts with
    ``database_prefix``."""
    check_env = _check_env(database_prefix)
    www = tmp_path / "www"
    www.mkdir(exist_ok=True)
    (www / "healthz").write_text("ok")

    def stand_ins(paths: StackPaths, env: Mapping[str, str]) -> list[Part]:
        if NO_NGINX:
            pytest.skip(NO_NGINX)
        api, proxy, worker, webhooks, dispatcher = local_app_parts(paths, env)
        assert api.url is not None
        port = api.url.rsplit(":", 1)[1]
        return [
            replace(api, argv=(PYTHON, "-m", "http.server", "--bind", "127.0.0.1", "--directory", str(www), port)),
            proxy,
            replace(worker, argv=(PYTHON, "-c", check_env + worker_script)),
            replace(webhooks, argv=(PYTHON, "-c", check_env + _CHECK_WEBHOOK_ENV + _WEBHOOKS)),
            replace(dispatcher, argv=(PYTHON, "-c", check_env + _DISPATCHER)),
        ]  # fmt: skip

    return StackPlan(
        app_parts=stand_ins,
        migrate=(PYTHON, "-c", check_env + "print('migrated')"),
        create_key=lambda name, role: [PYTHON, "-c", "import sys; print('noise'); print('key-' + sys.argv[1] + '-' + sys.argv[2])", name, role],
    )  # fmt: skip


@pytest.fixture
def paths(tmp_path: Path) -> StackPaths:
    return StackPaths.at(tmp_path / "dev", root=Path(__file__).resolve().parents[2])


def _recorded_processes(paths: StackPaths) -> list[ServerProcess]:
    return [
        ServerProcess.from_record(json.loads(paths.pid_file(part).read_text()))
        for part in PARTS
        if paths.pid_file(part).exists()
    ]


def test_env_file_round_trips_awkward_values(tmp_path: Path) -> None:
    values = {"A": "plain", "B": "with space", "C": "quote'and\"dq", "D": "", "E": "$HOME;x"}
    write_env_file(tmp_path / "x.env", values)
    assert read_env_file(tmp_path / "x.env") == values
    assert (tmp_path / "x.env").stat().st_mode & 0o777 == 0o600


def test_up_status_down_with_stand_in_app(paths: StackPaths, tmp_path: Path, capsys) -> None:
    plan = fake_plan(tmp_path)
    try:
        assert up(paths, plan, timeout=60) == 0
        env = read_env_file(paths.env_file)
        assert env["LOUPE_API_KEY"] == "key-demo-user-user"
        assert env["LOUPE_ADMIN_KEY"] == "key-demo-admin-admin"
        assert env["LOUPE_API_URL"].startswith("http://127.0.0.1:")
        assert env["LOUPE_API_DIRECT_URL"].startswith("http://127.0.0.1:")
        assert env["LOUPE_API_URL"] != env["LOUPE_API_DIRECT_URL"]
        via_proxy = requests.get(env["LOUPE_API_URL"] + "/healthz", timeout=10)
        direct = requests.get(env["LOUPE_API_DIRECT_URL"] + "/healthz", timeout=10)
        assert (via_proxy.text, direct.text) == ("ok", "ok")
        assert via_proxy.headers["Server"] == "nginx"
        assert env["LOUPE_DATABASE_URL"] == f"sqlite:///{paths.dev / 'loupe.db'}"
        assert env["LOUPE_MODELS_DIR"] == str(paths.dev / "models")
        assert redis_ping(int(env["LOUPE_BROKER_URL"].rsplit(":", 1)[1].split("/")[0]))
        client = make_s3_client(
            env["LOUPE_S3_ENDPOINT_URL"],
            env["LOUPE_S3_ACCESS_KEY_ID"],
            env["LOUPE_S3_SECRET_ACCESS_KEY"],
            env["LOUPE_S3_REGION"],
        )
        try:
            client.head_bucket(Bucket=env["LOUPE_S3_BUCKET"])
        finally:
            client.close()
        assert part_states(paths) == dict.fromkeys(PARTS, "running")
        assert status(paths) == 0
        capsys.readouterr()
        assert up(paths, plan, timeout=60) == 0
        assert "already up" in capsys.readouterr().out
        processes = _recorded_processes(paths)
        assert len(processes) == len(PARTS)
    finally:
        assert down(paths) == 0
    assert not any(process.alive() for process in processes)
    assert not paths.env_file.exists()
    assert not list((paths.dev / "run").iterdir())
    assert status(paths) == 1
    assert down(paths) == 0  # nothing running is fine


def test_up_reports_a_dying_worker_and_stops_everything(
    paths: StackPaths, tmp_path: Path, capsys
) -> None:
    plan = fake_plan(
        tmp_path, worker_script="print('ImportError: no module named vllm'); raise SystemExit(3)"
    )
    assert up(paths, plan, timeout=60) == 1
    err = capsys.readouterr().err
    assert "worker exited during startup" in err
    assert "no module named vllm" in err
    assert part_states(paths) == dict.fromkeys(PARTS, "stopped")
    assert not paths.env_file.exists()


def test_up_reports_a_failing_migration(paths: StackPaths, tmp_path: Path, capsys) -> None:
    failing = (PYTHON, "-c", "import sys; sys.exit('alembic: cannot reach database')")
    broken = replace(fake_plan(tmp_path), migrate=failing)
    assert up(paths, broken, timeout=60) == 1
    assert "cannot reach database" in capsys.readouterr().err
    assert part_states(paths) == dict.fromkeys(PARTS, "stopped")


def test_up_replaces_a_partial_stack(paths: StackPaths, tmp_path: Path, capsys) -> None:
    plan = fake_plan(tmp_path)
    try:
        assert up(paths, plan, timeout=60) == 0
        worker = next(p for p in _recorded_processes(paths) if p.log_path.name == "worker.log")
        worker.stop()
        assert part_states(paths)["worker"] == "dead"
        assert up(paths, plan, timeout=60) == 0
        assert "partial stack" in capsys.readouterr().out
        assert part_states(paths) == dict.fromkeys(PARTS, "running")
    finally:
        down(paths)


def test_dev_stack_runs_on_the_callers_database_url() -> None:
    url = "postgresql+psycopg://loupe@db.internal:5432/loupe"
    assert dev_stack({"LOUPE_DATABASE_URL": url}).overrides == {"LOUPE_DATABASE_URL": url}
    assert dev_stack({"LOUPE_DATABASE_URL": ""}) == dev_stack({}) == DEV_STACK
    assert DEV_STACK.overrides == {}


@pytest.mark.postgres
def test_up_on_postgres_migrates_and_keeps_that_database(paths: StackPaths, tmp_path: Path) -> None:
    """``LOUPE_DATABASE_URL=postgresql+psycopg://... make up``: the real migration and key
    creation run there, and the stack's processes get it."""
    for url in _fresh_postgres_database():
        database = normalize_url(url)
        plan = replace(
            fake_plan(tmp_path, database_prefix=database),
            migrate=DEV_STACK.migrate,
            create_key=DEV_STACK.create_key,
            overrides=dev_stack({"LOUPE_DATABASE_URL": database}).overrides,
        )
        try:
            assert up(paths, plan, timeout=60) == 0
            assert read_env_file(paths.env_file)["LOUPE_DATABASE_URL"] == database
            assert not (paths.dev / "loupe.db").exists()
            engine = create_engine(database)
            with engine.connect() as conn:
                assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
                assert conn.execute(text("SELECT count(*) FROM api_keys")).scalar() == 2
            engine.dispose()
        finally:
            down(paths)


def test_main_status_without_a_stack_exits_1(tmp_path: Path) -> None:
    assert main(["status", "--dev-dir", str(tmp_path / "none")]) == 1
    assert main(["down", "--dev-dir", str(tmp_path / "none")]) == 0


# --------------------------------------------------------------------------- demo


def test_demo_sample_png_is_a_320x240_png() -> None:
    from io import BytesIO

    from PIL import Image

    with Image.open(BytesIO(demo.sample_png())) as image:
        assert image.format == "PNG"
        assert image.size == (320, 240)


def test_demo_job_problems_accepts_only_a_real_answer() -> None:
    good: dict[str, Any] = {
        "status": "succeeded",
        "output": {"text": "a house", "finish_reason": "length"},
        "usage": {"prompt_tokens": 20, "completion_tokens": 24, "images": 1},
    }
    assert demo.job_problems(good) == []
    assert demo.job_problems({**good, "status": "failed"})
    assert demo.job_problems({**good, "output": {"text": "  "}})
    assert demo.job_problems({**good, "usage": {**good["usage"], "completion_tokens": 0}})
    assert demo.job_problems({**good, "usage": {**good["usage"], "images": 0}})
    assert demo.job_problems({"status": "succeeded", "output": None, "usage": None})


def test_demo_without_env_file_exits_2(tmp_path: Path) -> None:
    assert demo.main(["--env-file", str(tmp_path / "missing.env")]) == 2


@pytest.mark.e2e
def test_up_demo_down_runs_a_real_job(tmp_path: Path) -> None:
    """The real app: migrate, keys, gunicorn, a Celery worker with the tiny model, one job."""
    dev = tmp_path / "dev"
    python = sys.executable
    repo = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOUPE_")}
    stack = [python, "-m", "infra.localstack.stack"]
    try:
        up_run = subprocess.run(
            [*stack, "up", "--dev-dir", str(dev)],
            cwd=repo,
            env=env,
            capture_output=True,
            text=True,
            timeout=400,
        )
        assert up_run.returncode == 0, up_run.stdout + up_run.stderr
        demo_run = subprocess.run(
            [python, "-m", "infra.localstack.demo", "--env-file", str(dev / "stack.env")],
            cwd=repo, env=env, capture_output=True, text=True, timeout=400,
        )  # fmt: skip
        assert demo_run.returncode == 0, demo_run.stdout + demo_run.stderr
        assert '"status": "succeeded"' in demo_run.stdout
    finally:
        down_run = subprocess.run(
            [*stack, "down", "--dev-dir", str(dev)],
            cwd=repo,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert down_run.returncode == 0, down_run.stdout + down_run.stderr
