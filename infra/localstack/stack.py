"""The local dev stack: ``python -m infra.localstack.stack up|down|status``.

``up`` starts, all on 127.0.0.1 and detached (they outlive the command):
Redis, SeaweedFS (S3, bucket ``loupe-images``, fresh random keys), then runs
``services.cli migrate`` and creates a user and an admin API key, then starts the API (gunicorn)
and one Celery worker (plus a model-less one for the ``webhooks`` queue), waits until
``GET /healthz`` answers 200 and the workers log ``ready.``,
and writes ``.dev/stack.env`` (``KEY=value`` lines, shell-sourceable, mode 0600).

State lives in ``.dev/`` at the repository root (or ``--dev-dir``)::

    .dev/run/<part>.pid   one JSON record per running part (see ServerProcess.to_record)
    .dev/logs/<part>.log  its output (the previous run's is kept as <part>.log.1)
    .dev/redis/ .dev/seaweed/ .dev/loupe.db .dev/models/   data, kept across up/down
    .dev/stack.env        LOUPE_API_URL, LOUPE_API_KEY, LOUPE_ADMIN_KEY and every LOUPE_* in use

Exit codes: ``up`` 0 when the stack is up (also when it already was), 1 on failure (everything
it started is stopped again; the logs stay); ``down`` always 0; ``status`` 0 when every part
runs, 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import requests

from infra.localstack.servers import (
    LOOPBACK,
    RedisServer,
    S3Server,
    ServerProcess,
    ServerStartError,
    free_port,
    random_credentials,
    read_log_tail,
    spawn,
    start_redis,
    start_seaweed,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
PARTS = ("redis", "seaweed", "api", "worker", "webhooks")
"""Start order; ``down`` stops them in reverse."""
BUCKET = "loupe-images"
REGION = "us-east-1"
WORKER_CONCURRENCY = 4
WEBHOOK_CONCURRENCY = 8
# The local stack lets webhooks reach receivers on this machine (over plain http).
WEBHOOK_ALLOWED_NETWORKS = "127.0.0.0/8,::1/128"
API_THREADS = 16
"""gunicorn gthread threads per API process: a long-poll holds a thread, not a process."""
READY_TIMEOUT_S = 300.0
CLI_TIMEOUT_S = 600.0
_WORKER_READY = re.compile(r"@\S+ ready\.")
_QUIET_ENV = {
    "PYTHONUNBUFFERED": "1",
    "OTEL_SDK_DISABLED": "true",
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "TOKENIZERS_PARALLELISM": "false",
}
"""No network, no telemetry from the app processes."""


class StackError(RuntimeError):
    """A step of ``up`` failed; the message says which and carries the relevant log tail."""


@dataclass(frozen=True)
class StackPaths:
    """Where the stack keeps its state; every path is absolute."""

    root: Path
    dev: Path

    @classmethod
    def at(cls, dev: Path | None = None, root: Path = REPO_ROOT) -> StackPaths:
        """Paths for ``dev`` (default ``<root>/.dev``); ``root`` is the processes' working dir."""
        return cls(root=root.resolve(), dev=(dev or root / ".dev").resolve())

    @property
    def env_file(self) -> Path:
        return self.dev / "stack.env"

    def pid_file(self, part: str) -> Path:
        return self.dev / "run" / f"{part}.pid"

    def log(self, part: str) -> Path:
        return self.dev / "logs" / f"{part}.log"


@dataclass(frozen=True)
class StackCommands:
    """argv templates of the app processes; ``{python}``, ``{port}``, ``{name}``, ``{role}``
    are filled in. ``create_key`` must print the new plaintext key as its last stdout line."""

    migrate: tuple[str, ...]
    create_key: tuple[str, ...]
    api: tuple[str, ...]
    worker: tuple[str, ...]
    webhook_worker: tuple[str, ...] = (
        "{python}", "-m", "celery", "-A", "workers.celery_app", "worker",
        "-Q", "webhooks,maintenance", "--beat", "--schedule", "{schedule}",
        "--pool", "threads", "--concurrency", str(WEBHOOK_CONCURRENCY),
        "--without-gossip", "--without-mingle", "--loglevel", "INFO", "-n", "loupe-webhooks@%h",
    )  # fmt: skip
    """The light worker: webhook deliveries and the maintenance sweeps (with an embedded beat
    that schedules them); no model."""


DEFAULT_COMMANDS = StackCommands(
    migrate=("{python}", "-m", "services.cli", "migrate"),
    create_key=(
        "{python}", "-m", "services.cli", "create-key", "--name", "{name}", "--role", "{role}",
    ),
    api=(
        "{python}", "-m", "gunicorn", "--bind", LOOPBACK + ":{port}", "--workers", "2",
        "--worker-class", "gthread", "--threads", str(API_THREADS),
        "--access-logfile", "-", "services.api.wsgi:app",
    ),
    worker=(
        "{python}", "-m", "celery", "-A", "workers.celery_app", "worker", "-Q", "inference",
        "--pool", "threads", "--concurrency", str(WORKER_CONCURRENCY),
        "--prefetch-multiplier", "1", "--without-gossip", "--without-mingle",
        "--loglevel", "INFO", "-n", "loupe-local@%h",
    ),
)  # fmt: skip


def _fill(template: Sequence[str], **values: str) -> list[str]:
    return [part.format(python=sys.executable, **values) for part in template]


# --------------------------------------------------------------------------- state files


def write_env_file(path: Path, values: Mapping[str, str]) -> None:
    """Write ``KEY=value`` lines (values shell-quoted, keys sorted), mode 0600, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = "".join(f"{key}={shlex.quote(values[key])}\n" for key in sorted(values))
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(body)
    tmp.replace(path)


def read_env_file(path: Path) -> dict[str, str]:
    """Parse :func:`write_env_file` output (``#`` comments and blank lines skipped)."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, _, raw = line.partition("=")
        words = shlex.split(raw)
        values[key.strip()] = words[0] if words else ""
    return values


def _record(paths: StackPaths, part: str, process: ServerProcess) -> None:
    file = paths.pid_file(part)
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(json.dumps({"part": part, **process.to_record()}) + "\n")


def _recorded(paths: StackPaths) -> dict[str, ServerProcess]:
    """The parts with a pid file, as pid-only handles (alive or not)."""
    found = {}
    for part in PARTS:
        file = paths.pid_file(part)
        with contextlib.suppress(FileNotFoundError, ValueError, KeyError):
            found[part] = ServerProcess.from_record(json.loads(file.read_text()))
    return found


@contextlib.contextmanager
def _locked(paths: StackPaths) -> Iterator[None]:
    """One ``up``/``down`` at a time per ``.dev``."""
    paths.dev.mkdir(parents=True, exist_ok=True)
    with (paths.dev / "stack.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _rotate_logs(paths: StackPaths) -> None:
    for part in PARTS:
        log = paths.log(part)
        if log.exists():
            log.replace(log.with_name(log.name + ".1"))


# --------------------------------------------------------------------------- down / status


def stop_all(paths: StackPaths, *, quiet: bool = False) -> None:
    """Stop every recorded part (reverse order; TERM, then KILL after 10 s); drop the pid files."""
    recorded = _recorded(paths)
    for part in reversed(PARTS):
        process = recorded.get(part)
        if process is not None:
            running = process.alive()
            process.stop()
            if running and not quiet:
                print(f"stopped {part} (pid {process.pid})")
        paths.pid_file(part).unlink(missing_ok=True)
    paths.env_file.unlink(missing_ok=True)


def down(paths: StackPaths) -> int:
    """``down``: stop whatever runs; exit 0 even if nothing did."""
    with _locked(paths):
        if not _recorded(paths):
            print("nothing running")
        stop_all(paths)
    return 0


def part_states(paths: StackPaths) -> dict[str, str]:
    """``running``, ``dead`` (pid file, no process) or ``stopped`` (no pid file) per part."""
    recorded = _recorded(paths)
    states = {}
    for part in PARTS:
        process = recorded.get(part)
        if process is None:
            states[part] = "stopped"
        else:
            states[part] = "running" if process.alive() else "dead"
    return states


def status(paths: StackPaths) -> int:
    """``status``: print each part's state (and the URLs when up); 0 iff all run."""
    states = part_states(paths)
    recorded = _recorded(paths)
    for part, state in states.items():
        pid = f" pid {recorded[part].pid}" if part in recorded else ""
        print(f"{part:8} {state}{pid}  log {paths.log(part)}")
    if paths.env_file.exists():
        env = read_env_file(paths.env_file)
        print(f"API {env.get('LOUPE_API_URL')}  env {paths.env_file}")
    return 0 if all(state == "running" for state in states.values()) else 1


# --------------------------------------------------------------------------- up


def loupe_env(paths: StackPaths, redis: RedisServer, s3: S3Server) -> dict[str, str]:
    """The LOUPE_* settings of the stack's app processes."""
    return {
        "LOUPE_DATABASE_URL": f"sqlite:///{paths.dev / 'loupe.db'}",
        "LOUPE_BROKER_URL": redis.url,
        "LOUPE_S3_ENDPOINT_URL": s3.endpoint_url,
        "LOUPE_S3_BUCKET": s3.bucket,
        "LOUPE_S3_REGION": s3.region,
        "LOUPE_S3_ACCESS_KEY_ID": s3.access_key_id,
        "LOUPE_S3_SECRET_ACCESS_KEY": s3.secret_access_key,
        "LOUPE_MODELS_DIR": str(paths.dev / "models"),
        "LOUPE_WORKER_CONCURRENCY": str(WORKER_CONCURRENCY),
        "LOUPE_WEBHOOK_CONCURRENCY": str(WEBHOOK_CONCURRENCY),
        "LOUPE_WEBHOOK_ALLOWED_NETWORKS": WEBHOOK_ALLOWED_NETWORKS,
        "LOUPE_WEBHOOK_ALLOW_HTTP": "true",
        # Image URLs on this machine too (say, `python -m http.server` beside your pictures).
        "LOUPE_IMAGE_URL_ALLOWED_NETWORKS": WEBHOOK_ALLOWED_NETWORKS,
        "LOUPE_IMAGE_URL_ALLOW_HTTP": "true",
        "LOUPE_API_THREADS": str(API_THREADS),  # sizes the app's waiter cap to --threads
    }


def process_env(loupe: Mapping[str, str]) -> dict[str, str]:
    """Our environment (LOUPE_* we don't set pass through), ``loupe`` on top, telemetry off."""
    return {**os.environ, **loupe, **_QUIET_ENV}


def _run_cli(argv: Sequence[str], env: Mapping[str, str], cwd: Path) -> str:
    """Run a one-shot command; its stdout, or :class:`StackError` with its output tail."""
    try:
        done = subprocess.run(
            list(argv),
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise StackError(f"`{shlex.join(argv)}` took more than {CLI_TIMEOUT_S:.0f} s") from exc
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-30:])
        raise StackError(f"`{shlex.join(argv)}` failed (exit {done.returncode}):\n{tail}")
    return done.stdout


def _create_key(
    commands: StackCommands, env: Mapping[str, str], cwd: Path, name: str, role: str
) -> str:
    out = _run_cli(_fill(commands.create_key, name=name, role=role), env, cwd)
    lines = [line.strip() for line in out.splitlines() if line.strip()]
    if not lines:
        raise StackError(f"create-key --name {name} printed no key")
    return lines[-1]


def _healthz(api_url: str) -> bool:
    try:
        with requests.get(api_url + "/healthz", timeout=2) as response:
            return response.status_code == 200
    except requests.RequestException:
        return False


def _worker_ready(log: Path) -> bool:
    return bool(_WORKER_READY.search(read_log_tail(log, lines=400)))


def _wait_ready(api_url: str, api: ServerProcess, worker: ServerProcess, timeout: float) -> None:
    """Until the API's /healthz is 200 and the worker logged ``ready.``; StackError if one dies."""
    deadline = time.monotonic() + timeout
    ready = {"api": False, "worker": False}
    processes = {"api": api, "worker": worker}
    while not all(ready.values()):
        for part, process in processes.items():
            if not process.alive():
                raise StackError(f"{part} exited during startup:\n{process.log_tail()}")
        ready["api"] = ready["api"] or _healthz(api_url)
        ready["worker"] = ready["worker"] or _worker_ready(worker.log_path)
        if time.monotonic() >= deadline:
            late = [part for part, ok in ready.items() if not ok]
            tails = "\n".join(f"--- {p}:\n{processes[p].log_tail()}" for p in late)
            raise StackError(f"{', '.join(late)} not ready within {timeout:.0f} s\n{tails}")
        time.sleep(0.5)


def _start_backing(paths: StackPaths) -> tuple[RedisServer, S3Server]:
    redis = start_redis(paths.dev / "redis", detached=True, log_path=paths.log("redis"))
    _record(paths, "redis", redis.process)
    print(f"redis    up at {redis.url}")
    access_key_id, secret_access_key = random_credentials()
    s3 = start_seaweed(
        paths.dev / "seaweed",
        bucket=BUCKET,
        access_key_id=access_key_id,
        secret_access_key=secret_access_key,
        region=REGION,
        detached=True,
        log_path=paths.log("seaweed"),
    )
    _record(paths, "seaweed", s3.process)
    print(f"seaweed  up at {s3.endpoint_url} (bucket {s3.bucket})")
    return redis, s3


def _start_app(
    paths: StackPaths, commands: StackCommands, env: Mapping[str, str], timeout: float
) -> str:
    """Start the API and the worker, wait for both; returns the API URL."""
    port = free_port()
    api = spawn(
        _fill(commands.api, port=str(port)),
        paths.log("api"),
        env=env,
        cwd=paths.root,
        detached=True,
    )
    _record(paths, "api", api)
    worker = spawn(
        _fill(commands.worker),
        paths.log("worker"),
        env=env,
        cwd=paths.root,
        detached=True,
    )
    _record(paths, "worker", worker)
    webhooks = spawn(
        _fill(commands.webhook_worker, schedule=str(paths.dev / "run" / "celerybeat-schedule")),
        paths.log("webhooks"),
        env=env,
        cwd=paths.root,
        detached=True,
    )
    _record(paths, "webhooks", webhooks)
    api_url = f"http://{LOOPBACK}:{port}"
    print(f"api      starting at {api_url}; worker starting (first start builds a tiny model)")
    _wait_ready(api_url, api, worker, timeout)
    _wait_webhooks_ready(webhooks, timeout)
    return api_url


def _wait_webhooks_ready(webhooks: ServerProcess, timeout: float) -> None:
    """Until the webhooks worker logged ``ready.``; StackError if it dies or is late."""
    deadline = time.monotonic() + timeout
    while not _worker_ready(webhooks.log_path):
        if not webhooks.alive():
            raise StackError(f"webhooks exited during startup:\n{webhooks.log_tail()}")
        if time.monotonic() >= deadline:
            raise StackError(f"webhooks not ready within {timeout:.0f} s\n{webhooks.log_tail()}")
        time.sleep(0.5)


def _bring_up(paths: StackPaths, commands: StackCommands, timeout: float) -> dict[str, str]:
    """Start every part in order; returns the stack.env values."""
    for directory in (paths.dev / "logs", paths.dev / "run", paths.dev / "models"):
        directory.mkdir(parents=True, exist_ok=True)
    _rotate_logs(paths)
    redis, s3 = _start_backing(paths)
    env = process_env(loupe_env(paths, redis, s3))
    _run_cli(_fill(commands.migrate), env, paths.root)
    print("database migrated")
    user_key = _create_key(commands, env, paths.root, "demo-user", "user")
    admin_key = _create_key(commands, env, paths.root, "demo-admin", "admin")
    api_url = _start_app(paths, commands, env, timeout)
    in_use = {key: value for key, value in env.items() if key.startswith("LOUPE_")}
    return {
        **in_use,
        "LOUPE_API_URL": api_url,
        "LOUPE_API_KEY": user_key,
        "LOUPE_ADMIN_KEY": admin_key,
    }


def _shown(path: Path) -> str:
    """``path`` relative to the current directory when inside it, else absolute."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _print_summary(paths: StackPaths, env: Mapping[str, str]) -> None:
    env_file = _shown(paths.env_file)
    python = _shown(Path(sys.executable).absolute())
    default = paths.dev == StackPaths.at().dev
    demo_args = "" if default else f" --env-file {env_file}"
    down_args = "" if default else f" --dev-dir {_shown(paths.dev)}"
    print(
        f"""
Loupe dev stack is up; {env_file} has its URLs and keys.
  API     {env.get("LOUPE_API_URL")}   (log {_shown(paths.log("api"))})
  worker  log {_shown(paths.log("worker"))}
  webhooks log {_shown(paths.log("webhooks"))} (loopback receivers allowed, http too)
Try:
  set -a; . {env_file}; set +a
  curl -s -H "Authorization: Bearer $LOUPE_API_KEY" -F image=@photo.png \\
       -F prompt='Describe this image.' -F model=loupe-tiny-mllama "$LOUPE_API_URL/v1/jobs"
  {python} -m infra.localstack.demo{demo_args}
Stop: {python} -m infra.localstack.stack down{down_args}"""
    )


def up(
    paths: StackPaths,
    commands: StackCommands = DEFAULT_COMMANDS,
    timeout: float = READY_TIMEOUT_S,
) -> int:
    """``up``: start the stack unless it already runs (then say so); 0 when up, 1 on failure."""
    with _locked(paths):
        states = part_states(paths)
        if all(state == "running" for state in states.values()) and paths.env_file.exists():
            print("the Loupe dev stack is already up")
            _print_summary(paths, read_env_file(paths.env_file))
            return 0
        if any(state != "stopped" for state in states.values()):
            print(f"found a partial stack ({states}); stopping it first")
            stop_all(paths)
        try:
            values = _bring_up(paths, commands, timeout)
        except (StackError, ServerStartError) as exc:
            print(f"\nup failed: {exc}\n(logs in {paths.dev / 'logs'})", file=sys.stderr)
            stop_all(paths, quiet=True)
            return 1
        except BaseException:
            stop_all(paths, quiet=True)
            raise
        write_env_file(paths.env_file, values)
        _print_summary(paths, values)
        return 0


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: ``up | down | status`` with ``--dev-dir`` and ``--timeout``."""
    parser = argparse.ArgumentParser(prog="python -m infra.localstack.stack", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--dev-dir", type=Path, default=None, help="state dir (default .dev)")
    parser.add_argument("--timeout", type=float, default=READY_TIMEOUT_S, help="seconds for up")
    args = parser.parse_args(argv)
    paths = StackPaths.at(args.dev_dir)
    if args.command == "up":
        return up(paths, timeout=args.timeout)
    if args.command == "down":
        return down(paths)
    return status(paths)


if __name__ == "__main__":
    sys.exit(main())
