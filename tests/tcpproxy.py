"""A TCP proxy for tests: forwards a local port to a server and can be told to go silent.

Silent means what a hung database or a stuck middlebox looks like from the client: new
connections are accepted and never answered, and existing ones stop carrying data in
either direction, while every socket stays open (so the kernel keeps acknowledging and
no TCP-level timeout fires). ``resume()`` forwards again; data held back is delivered.
"""

from __future__ import annotations

import socket
import threading
from types import TracebackType


class TcpProxy:
    """Forward ``127.0.0.1:<port>`` to ``upstream``; ``silence()`` and ``resume()`` it."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self._open = threading.Event()
        self._open.set()
        self._closed = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self.accepted = 0
        self._thread = threading.Thread(target=self._accept, name="tcpproxy", daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        """``host:port`` to connect to instead of the upstream server."""
        return f"127.0.0.1:{self.port}"

    def silence(self) -> None:
        """Accept but never answer; hold back everything on existing connections."""
        self._open.clear()

    def resume(self) -> None:
        """Forward again, new connections and existing ones alike."""
        self._open.set()

    def close(self) -> None:
        """Close the listener and every connection."""
        self._closed.set()
        self._open.set()  # release held pumps so they see the close
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                try:
                    sock.close()
                except OSError:
                    pass
            self._sockets.clear()
        self._thread.join(timeout=5)

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        self.close()

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _addr = self._listener.accept()
            except OSError:
                return
            self.accepted += 1
            self._track(client)
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        self._open.wait()  # a silent proxy accepts, then says nothing
        if self._closed.is_set():
            return
        try:
            server = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            client.close()
            return
        server.settimeout(None)
        self._track(server)
        threading.Thread(target=self._pump, args=(server, client), daemon=True).start()
        self._pump(client, server)

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                self._open.wait()  # while silent, hold the data back
                if self._closed.is_set():
                    break
                target.sendall(data)
        except OSError:
            pass
        for sock in (source, target):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
