"""A TCP proxy whose open connections a test can cut (a broken transport, for real)."""

from __future__ import annotations

import socket
import threading


class CuttableProxy:
    """Forwards 127.0.0.1:<port> to ``upstream`` ("host:port"); ``cut()`` drops every open
    connection (new ones are still accepted, as after a network blip)."""

    def __init__(self, upstream: str) -> None:
        host, port = upstream.rsplit(":", 1)
        self.upstream = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"127.0.0.1:{self.port}"
        self.cuts = 0
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=5)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets |= {client, server}
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                self._drop(s)

    def _drop(self, s: socket.socket) -> None:
        with self._lock:
            self._sockets.discard(s)
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        s.close()

    def retarget(self, upstream: str) -> None:
        """New connections go to ``upstream`` (another replica); open ones are cut."""
        host, port = upstream.rsplit(":", 1)
        self.upstream = (host, int(port))
        self.cut()

    def cut(self) -> None:
        with self._lock:
            open_sockets = list(self._sockets)
        for s in open_sockets:
            self._drop(s)
        self.cuts += 1

    def close(self) -> None:
        self._closed = True
        self.listener.close()
        self.cut()
