"""The local dev stack: ``python -m infra.localstack.stack up|down|status``.

``up`` starts, all on 127.0.0.1 and detached (they outlive the command):
Redis, SeaweedFS (S3, bucket ``loupe-images``, fresh random keys), then runs
``services.cli migrate`` and creates a user and an admin API key, then starts the API (gunicorn)
behind its front proxy (nginx, as in production) and one Celery worker (plus a model-less one
for the ``webhooks`` and ``maintenance`` queues, with the beat) and the dispatcher, which hands
queued jobs from SQL to the broker; waits until ``GET /healthz``
answers 200 through the proxy and the workers log ``ready.``, and writes ``.dev/stack.env``
(``KEY=value`` lines, shell-sourceable, mode 0600). The database is ``.dev/loupe.db`` (SQLite)
unless the environment's ``LOUPE_DATABASE_URL`` names another (:func:`dev_stack`).

The same sequence (:func:`bring_up`, a :class:`StackPlan`) starts the batching benchmark's
stack, attached (:func:`launched`); every app process is defined once, in
:mod:`infra.localstack.parts`, which the end-to-end tests start their processes from too.

State lives in ``.dev/`` at the repository root (or ``--dev-dir``)::

    .dev/run/<part>.pid   one JSON record per running part (see ServerProcess.to_record)
    .dev/logs/<part>.log  its output (the previous run's is kept as <part>.log.1)
    .dev/redis/ .dev/seaweed/ .dev/loupe.db .dev/models/   data, kept across up/down
    .dev/proxy/           nginx's configuration (from infra/nginx/loupe.conf.template), pid, temp
    .dev/stack.env        LOUPE_API_URL (the proxy), LOUPE_API_DIRECT_URL (gunicorn itself, for
                          debugging), LOUPE_API_KEY, LOUPE_ADMIN_KEY and every LOUPE_* in use

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
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from infra.localstack.parts import (
    READY_TIMEOUT_S,
    REPO_ROOT,
    Part,
    api_part,
    dispatcher_part,
    inference_worker_part,
    light_worker_part,
    process_env,
    proxy_part,
    start_parts,
)
from infra.localstack.servers import (
    RedisServer,
    S3Server,
    ServerProcess,
    ServerStartError,
    random_credentials,
    start_redis,
    start_seaweed,
)
from infra.models import build_models_for
from services.catalog.registry import build_registry
from services.settings import load_settings

PARTS = ("redis", "seaweed", "api", "proxy", "worker", "webhooks", "dispatcher")
"""The dev stack's parts in start order; ``down`` stops them in reverse."""
BUCKET = "loupe-images"
REGION = "us-east-1"
WORKER_CONCURRENCY = 4
WEBHOOK_CONCURRENCY = 8
# The local stack lets webhooks reach receivers on this machine (over plain http).
WEBHOOK_ALLOWED_NETWORKS = "127.0.0.0/8,::1/128"
API_THREADS = 16
"""gunicorn gthread threads per API process: a long-poll holds a thread, not a process."""
CLI_TIMEOUT_S = 600.0
DEMO_KEYS = {"LOUPE_API_KEY": ("demo-user", "user"), "LOUPE_ADMIN_KEY": ("demo-admin", "admin")}
"""The keys ``up`` creates: stack.env variable -> (name, role)."""


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


def local_app_parts(paths: StackPaths, env: Mapping[str, str]) -> list[Part]:
    """The dev stack's app processes: the API and nginx in front of it, one inference worker,
    the light worker with the deployment's one beat, and the dispatcher. Writes the proxy's
    configuration."""
    beat_schedule = paths.dev / "run" / "celerybeat-schedule"
    api = api_part(env)
    return [
        api,
        proxy_part(env, api, paths.dev / "proxy"),
        inference_worker_part(env),
        light_worker_part(env, beat_schedule=beat_schedule),
        dispatcher_part(env),
    ]


def create_key_argv(name: str, role: str) -> list[str]:
    """``services.cli create-key``: prints the new plaintext key as its last stdout line."""
    return [sys.executable, "-m", "services.cli", "create-key", "--name", name, "--role", role]


@dataclass(frozen=True)
class StackPlan:
    """What a stack runs once Redis and SeaweedFS answer, in this order.

    The app processes get :func:`loupe_env` with ``overrides`` on top. ``migrate`` runs, then
    ``create_key(name, role)`` once per ``keys`` entry (stack.env variable -> (name, role)),
    whose last stdout line is the key. Then ``app_parts(paths, env)`` start side by side; the
    part named ``proxy`` gives ``LOUPE_API_URL`` (``api`` where there is no proxy), ``api`` gives
    ``LOUPE_API_DIRECT_URL``.
    """

    app_parts: Callable[[StackPaths, Mapping[str, str]], Sequence[Part]] = local_app_parts
    keys: Mapping[str, tuple[str, str]] = field(default_factory=lambda: dict(DEMO_KEYS))
    overrides: Mapping[str, str] = field(default_factory=dict)
    migrate: Sequence[str] = (sys.executable, "-m", "services.cli", "migrate")
    create_key: Callable[[str, str], Sequence[str]] = create_key_argv


def run_cli(argv: Sequence[str], env: Mapping[str, str], cwd: Path) -> str:
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


def create_key(argv: Sequence[str], env: Mapping[str, str], cwd: Path) -> str:
    """Run a create-key command; the key it printed last, or :class:`StackError`."""
    lines = [line.strip() for line in run_cli(argv, env, cwd).splitlines() if line.strip()]
    if not lines:
        raise StackError(f"`{shlex.join(argv)}` printed no key")
    return lines[-1]


class Launcher:
    """Starts a stack's parts, remembers them, and stops them newest first.

    Attached (default) the processes are this process's children. Detached they outlive it,
    and each one's pid record is written to ``paths.pid_file(part)`` as soon as it runs, so
    ``down`` can stop it from another process. ``say`` reports progress.
    """

    def __init__(
        self, paths: StackPaths, *, detached: bool = False, say: Callable[[str], None] = print
    ) -> None:
        self.paths = paths
        self.detached = detached
        self.say = say
        self._started: list[ServerProcess] = []

    def backing(self) -> tuple[RedisServer, S3Server]:
        """Redis, then SeaweedFS with the stack's bucket and fresh random keys; both answer."""
        redis = start_redis(
            self.paths.dev / "redis", detached=self.detached, log_path=self.paths.log("redis")
        )
        self._started_part("redis", redis.process)
        self.say(f"redis    up at {redis.url}")
        s3 = self._seaweed()
        self.say(f"seaweed  up at {s3.endpoint_url} (bucket {s3.bucket})")
        return redis, s3

    def _seaweed(self) -> S3Server:
        access_key_id, secret_access_key = random_credentials()
        s3 = start_seaweed(
            self.paths.dev / "seaweed",
            bucket=BUCKET,
            access_key_id=access_key_id,
            secret_access_key=secret_access_key,
            region=REGION,
            detached=self.detached,
            log_path=self.paths.log("seaweed"),
        )
        self._started_part("seaweed", s3.process)
        return s3

    def apps(self, parts: Sequence[Part], env: Mapping[str, str], timeout: float) -> None:
        """Start ``parts`` side by side, logs in ``paths.log(part.name)``; return once all are
        ready (see :func:`infra.localstack.parts.start_parts`)."""
        self.say(f"starting {', '.join(part.name for part in parts)}")
        start_parts(
            [(part, self.paths.log(part.name)) for part in parts],
            env,
            cwd=self.paths.root,
            detached=self.detached,
            timeout=timeout,
            on_spawn=lambda part, process: self._started_part(part.name, process),
        )

    def stop(self) -> None:
        """Stop everything started here, newest first. Idempotent."""
        while self._started:
            self._started.pop().stop()

    def _started_part(self, part: str, process: ServerProcess) -> None:
        self._started.append(process)
        if self.detached:
            _record(self.paths, part, process)


@contextlib.contextmanager
def launched(paths: StackPaths, *, say: Callable[[str], None] = print) -> Iterator[Launcher]:
    """An attached :class:`Launcher`: whatever it started is stopped, newest first, however the
    block ends (also when a later part failed to start)."""
    launcher = Launcher(paths, say=say)
    try:
        yield launcher
    finally:
        launcher.stop()


def bring_up(launcher: Launcher, plan: StackPlan, timeout: float) -> dict[str, str]:
    """Start a whole stack with ``launcher``: Redis, SeaweedFS, ``plan``'s one-shot commands
    and app parts, each app part ready within ``timeout`` s. Returns the stack.env values:
    every LOUPE_* in use, the API's URLs (see :class:`StackPlan`) and the keys. Raises
    :class:`StackError` or :class:`ServerStartError`; what it started is left to the
    launcher's owner to stop."""
    paths = launcher.paths
    _prepare_dirs(paths)
    redis, s3 = launcher.backing()
    env = process_env({**loupe_env(paths, redis, s3), **plan.overrides})
    run_cli(plan.migrate, env, paths.root)
    launcher.say("database migrated")
    keys = {
        variable: create_key(plan.create_key(name, role), env, paths.root)
        for variable, (name, role) in plan.keys.items()
    }
    settings = load_settings(env)
    default_model = build_registry(settings).default_model
    build_models_for(settings, [default_model])  # workers load it as they start
    parts = plan.app_parts(paths, env)
    launcher.apps(parts, env, timeout)
    in_use = {key: value for key, value in env.items() if key.startswith("LOUPE_")}
    return {**in_use, **_api_urls(parts), **keys}


def _prepare_dirs(paths: StackPaths) -> None:
    """State dirs, and last run's logs moved aside: a stale ``ready.`` line must not count."""
    for directory in (paths.dev / "logs", paths.dev / "run", paths.dev / "models"):
        directory.mkdir(parents=True, exist_ok=True)
    _rotate_logs(paths)


def _api_urls(parts: Sequence[Part]) -> dict[str, str]:
    """``LOUPE_API_URL``: the proxy's URL, else the API's; ``LOUPE_API_DIRECT_URL``: the API's."""
    urls = {part.name: part.url for part in parts if part.url}
    if "api" not in urls:
        raise StackError("the stack has no api part")
    return {"LOUPE_API_URL": urls.get("proxy", urls["api"]), "LOUPE_API_DIRECT_URL": urls["api"]}


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
  API     {env.get("LOUPE_API_URL")}   (nginx, as in production; log {_shown(paths.log("proxy"))})
  direct  {env.get("LOUPE_API_DIRECT_URL")}   (gunicorn, to debug; log {_shown(paths.log("api"))})
  worker  log {_shown(paths.log("worker"))}
  webhooks log {_shown(paths.log("webhooks"))} (loopback receivers allowed, http too)
  dispatch log {_shown(paths.log("dispatcher"))}
Try:
  set -a; . {env_file}; set +a
  curl -s -H "Authorization: Bearer $LOUPE_API_KEY" -F image=@photo.png \\
       -F prompt='Describe this image.' -F model=loupe-tiny-mllama "$LOUPE_API_URL/v1/jobs"
  {python} -m infra.localstack.demo{demo_args}
Stop: {python} -m infra.localstack.stack down{down_args}"""
    )


DEV_STACK = StackPlan()
"""The dev stack: API, inference worker, light worker and dispatcher, a user key and an admin
key."""


def dev_stack(environ: Mapping[str, str]) -> StackPlan:
    """The dev stack on the database ``environ``'s ``LOUPE_DATABASE_URL`` names, when it names
    one (``make up`` on PostgreSQL: migrated, keys created and jobs kept there); else on the
    stack's own SQLite file."""
    url = environ.get("LOUPE_DATABASE_URL")
    return replace(DEV_STACK, overrides={"LOUPE_DATABASE_URL": url}) if url else DEV_STACK


def up(paths: StackPaths, plan: StackPlan = DEV_STACK, timeout: float = READY_TIMEOUT_S) -> int:
    """``up``: start the stack unless it already runs (then say so); 0 when up, 1 on failure.

    The parts are detached, their pid records in ``paths``; a failure stops them all again.
    """
    with _locked(paths):
        if _already_up(paths):
            return 0
        try:
            values = bring_up(Launcher(paths, detached=True), plan, timeout)
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


def _already_up(paths: StackPaths) -> bool:
    """True (and the summary printed) when every part runs; a partial stack is stopped."""
    states = part_states(paths)
    if all(state == "running" for state in states.values()) and paths.env_file.exists():
        print("the Loupe dev stack is already up")
        _print_summary(paths, read_env_file(paths.env_file))
        return True
    if any(state != "stopped" for state in states.values()):
        print(f"found a partial stack ({states}); stopping it first")
        stop_all(paths)
    return False


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: ``up | down | status`` with ``--dev-dir`` and ``--timeout``."""
    parser = argparse.ArgumentParser(prog="python -m infra.localstack.stack", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--dev-dir", type=Path, default=None, help="state dir (default .dev)")
    parser.add_argument("--timeout", type=float, default=READY_TIMEOUT_S, help="seconds for up")
    args = parser.parse_args(argv)
    paths = StackPaths.at(args.dev_dir)
    if args.command == "up":
        return up(paths, dev_stack(os.environ), timeout=args.timeout)
    if args.command == "down":
        return down(paths)
    return status(paths)


if __name__ == "__main__":
    sys.exit(main())
