"""A fault-injecting TCP proxy for tests: put it between boto3 and moto's server, then `outage(s)`
cuts every open connection and refuses new ones for `s` seconds, as a network or S3 outage does;
`cut(pattern)` cuts the connection of every request whose bytes hold `pattern` (one object's
download failing while the rest of the store answers). Bounded: it serves at most
`max_connections` connections and stops with `close()`."""

from __future__ import annotations

import socket
import threading
import time


class FaultProxy:
    def __init__(self, target: tuple[str, int], max_connections: int = 5000) -> None:
        self.target = target
        self.max_connections = max_connections
        self.down_until = 0.0
        self.refused = 0  # connections refused during outages (proof that the outage was felt)
        self.cutting: bytes | None = None  # `cut`'s pattern
        self.cuts = 0  # requests cut for holding it
        self._served = 0
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, name="fault-proxy", daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def outage(self, seconds: float) -> None:
        """From now on for `seconds`: every open connection is cut, every new one refused."""
        self.down_until = time.monotonic() + seconds
        with self._lock:
            for s in list(self._open):
                _close(s)
            self._open.clear()

    def cut(self, pattern: bytes | None) -> None:
        """From now on, a request holding `pattern` (an HTTP request line, say) is answered by a reset
        connection; None stops cutting."""
        self.cutting = pattern

    def _accept(self) -> None:
        while not self._closed and self._served < self.max_connections:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self._served += 1
            if time.monotonic() < self.down_until:
                self.refused += 1
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                _close(client)  # a reset, as from a host that is away
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _close(client)
                continue
            with self._lock:
                self._open.update((client, upstream))
            for a, b, request in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(target=self._pump, args=(a, b, request), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, request: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if request and self.cutting is not None and self.cutting in data:
                    self.cuts += 1
                    src.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    break  # both sides closed below: the client sees its request's connection reset
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._open.discard(src)
                self._open.discard(dst)
            _close(src)
            _close(dst)

    def close(self) -> None:
        self._closed = True
        _close(self._listener)
        self.outage(0)


def _close(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        s.close()
    except OSError:
        pass
