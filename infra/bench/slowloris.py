"""Slow clients against the API: ``python -m infra.bench.slowloris``.

Starts the API (gunicorn) and nginx in front of it from the local stack's one definition, then
holds ``--connections`` slow connections open against each address in turn, nginx first,
while a probe times ``GET /healthz`` on fresh connections. Prints a table, then a JSON line.

The slow clients (:class:`Slowloris`) are what took the API down when gunicorn was the front
door: half send a request line and part of a header, half send whole headers and a body that
stops short of its ``Content-Length``; all then send one more byte every ``--interval`` s, and
one the server closes is opened again. Loopback only, bounded in count and time.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import select
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from infra.localstack.parts import Part, api_part, proxy_part
from infra.localstack.servers import LOOPBACK
from infra.localstack.stack import StackPaths, StackPlan, bring_up, launched

PARTIAL_HEADER = b"GET /healthz HTTP/1.1\r\nHost: loupe\r\nX-Slow: "
"""A request whose header never ends: one more byte of ``X-Slow``'s value each round."""
SHORT_BODY = (
    b"POST /v1/jobs HTTP/1.1\r\nHost: loupe\r\nContent-Type: application/json\r\n"
    b"Content-Length: 100000\r\n\r\n{"
)
"""Whole headers, then a body far shorter than its ``Content-Length``, one byte a round."""
_CONNECT_TIMEOUT_S = 2.0


@dataclass
class _Slot:
    opening: bytes
    sock: socket.socket | None = None


@dataclass
class Slowloris:
    """``connections`` slow clients of ``address`` (loopback), on one background thread.

    Used as a context manager: on entry every connection is open and has sent its opening
    (:data:`PARTIAL_HEADER` and :data:`SHORT_BODY`, alternately); until exit each sends one
    byte every ``interval`` s, and one the server closed or answered is opened again. Exit
    closes them all. ``reopened`` counts the connections the server ended meanwhile.
    """

    address: tuple[str, int]
    connections: int = 100
    interval: float = 3.0
    openings: Sequence[bytes] = (PARTIAL_HEADER, SHORT_BODY)
    reopened: int = 0
    _slots: list[_Slot] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __post_init__(self) -> None:
        if self.address[0] != LOOPBACK:
            raise ValueError("slow clients only against loopback")

    def __enter__(self) -> Slowloris:
        self._slots = [
            _Slot(self.openings[i % len(self.openings)]) for i in range(self.connections)
        ]
        for slot in self._slots:
            self._open(slot)
        self._thread = threading.Thread(target=self._run, name="slowloris", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        for slot in self._slots:
            self._close(slot)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._reopen_ended()
            for slot in self._slots:
                self._trickle(slot)

    def _open(self, slot: _Slot) -> None:
        try:
            slot.sock = socket.create_connection(self.address, timeout=_CONNECT_TIMEOUT_S)
            slot.sock.sendall(slot.opening)
        except OSError:
            self._close(slot)  # the server refused or is full: try again next round

    def _trickle(self, slot: _Slot) -> None:
        if slot.sock is None:
            self._open(slot)
            return
        try:
            slot.sock.sendall(b"a")
        except OSError:
            self._close(slot)

    def _reopen_ended(self) -> None:
        """Connections the server closed, or answered (a timeout's 408), are opened again."""
        open_socks = [slot.sock for slot in self._slots if slot.sock is not None]
        readable, _, _ = select.select(open_socks, [], [], 0) if open_socks else ([], [], [])
        for slot in self._slots:
            if slot.sock is not None and slot.sock in readable:
                self._close(slot)
                self.reopened += 1
                self._open(slot)

    @staticmethod
    def _close(slot: _Slot) -> None:
        if slot.sock is not None:
            slot.sock.close()
            slot.sock = None


def healthz_latencies(
    url: str, *, duration: float, interval: float = 0.1, timeout: float = 1.0
) -> list[float]:
    """``GET <url>/healthz`` on a fresh connection every ``interval`` s for ``duration`` s, one
    after another; each one's seconds, ``math.inf`` for a failure, a non-200 or a timeout."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    latencies = []
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        latencies.append(_timed_healthz(host, int(port), timeout))
        time.sleep(interval)
    return latencies


def _timed_healthz(host: str, port: int, timeout: float) -> float:
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    started = time.perf_counter()
    try:
        connection.request("GET", "/healthz")
        ok = connection.getresponse().status == 200
    except OSError:
        ok = False
    finally:
        connection.close()
    return time.perf_counter() - started if ok else math.inf


def percentile(values: Sequence[float], pct: float) -> float:
    """The nearest-rank ``pct`` percentile of non-empty ``values`` (``math.inf`` counts)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def summary(latencies: Sequence[float]) -> dict[str, float | int | None]:
    """Requests, failures, p50 and p99 in ms (None once failures reach that rank)."""
    return {
        "requests": len(latencies),
        "failed": sum(1 for value in latencies if math.isinf(value)),
        "p50_ms": _ms(percentile(latencies, 50)),
        "p99_ms": _ms(percentile(latencies, 99)),
    }


def _ms(seconds: float) -> float | None:
    return None if math.isinf(seconds) else round(seconds * 1000, 2)


# --------------------------------------------------------------------------- the benchmark


def _api_and_proxy(paths: StackPaths, env: Mapping[str, str]) -> list[Part]:
    api = api_part(env)
    return [api, proxy_part(env, api, paths.dev / "proxy")]


def measure(url: str, args: argparse.Namespace) -> dict[str, float | int | None]:
    """``/healthz`` latencies at ``url`` while :class:`Slowloris` holds ``url`` itself."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with Slowloris((host, int(port)), args.connections, args.interval) as slow:
        time.sleep(args.interval)  # let the first trickle land
        result = summary(healthz_latencies(url, duration=args.duration))
    return {**result, "reopened": slow.reopened}


@contextlib.contextmanager
def _stack(workdir: Path | None) -> Iterator[dict[str, str]]:
    with tempfile.TemporaryDirectory(prefix="loupe-slowloris-") as scratch:
        paths = StackPaths.at(workdir or Path(scratch))
        plan = StackPlan(app_parts=_api_and_proxy, keys={})
        with launched(paths, say=lambda line: print(line, file=sys.stderr)) as launcher:
            yield bring_up(launcher, plan, timeout=300)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print a table, then one JSON line."""
    parser = argparse.ArgumentParser(prog="python -m infra.bench.slowloris", description=__doc__)
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--interval", type=float, default=3.0, help="seconds between bytes")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of probing each")
    parser.add_argument("--workdir", type=Path, default=None, help="stack state (default: temp)")
    args = parser.parse_args(argv)
    with _stack(args.workdir) as values:
        targets = {"nginx": values["LOUPE_API_URL"], "gunicorn": values["LOUPE_API_DIRECT_URL"]}
        results = {name: measure(url, args) for name, url in targets.items()}
    print(f"{'front door':12} {'requests':>8} {'failed':>6} {'p50 ms':>8} {'p99 ms':>8}")
    for name, row in results.items():
        p50, p99 = (row[key] if row[key] is not None else "failed" for key in ("p50_ms", "p99_ms"))
        print(f"{name:12} {row['requests']:>8} {row['failed']:>6} {p50:>8} {p99:>8}")
    print(json.dumps({"connections": args.connections, "interval_s": args.interval, **results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
