"""A loopback TCP forwarder a test controls: it can refuse connections, as a database that went
away would, and accept them again, without touching the server behind it.

``refuse()`` closes the listening socket (new connections get ECONNREFUSED) and cuts every
forwarded connection; ``accept()`` listens again on the same port. Threads, not asyncio: the
forwarder runs beside a synchronous test.
"""

from __future__ import annotations

import socket
import threading
from contextlib import suppress

from infra.localstack.servers import LOOPBACK, free_port

_CHUNK = 65536


class TcpProxy:
    """Forwards ``127.0.0.1:port`` to ``target`` while accepting (it starts accepting)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self.accept()

    def accept(self) -> None:
        """Listen (again) on :attr:`port`; idempotent."""
        with self._lock:
            if self._listener is not None:
                return
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((LOOPBACK, self.port))
            listener.listen(64)
            self._listener = listener
        threading.Thread(target=self._serve, args=(listener,), daemon=True).start()

    def refuse(self) -> None:
        """Stop listening and cut every forwarded connection; idempotent."""
        with self._lock:
            listener, self._listener = self._listener, None
            open_now, self._open = self._open, set()
        if listener is not None:
            _close(listener)
        for sock in open_now:
            _close(sock)

    def close(self) -> None:
        self.refuse()

    def _serve(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # refused: the listener was shut down
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _close(client)
                continue
            upstream.settimeout(None)
            if not self._track(client, upstream):
                continue
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _track(self, *socks: socket.socket) -> bool:
        """Register a forwarded pair; False (and closed) if the proxy refused meanwhile."""
        with self._lock:
            if self._listener is not None:
                self._open.update(socks)
                return True
        for sock in socks:
            _close(sock)
        return False

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(_CHUNK):
                sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            _close(sock)
            with self._lock:
                self._open.discard(sock)


def _close(sock: socket.socket) -> None:
    with suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with suppress(OSError):
        sock.close()
