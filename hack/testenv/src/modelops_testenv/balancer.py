"""A TCP balancer on loopback like kube-proxy in front of a Service: each new connection goes
to the next backend, round robin; the bytes of a connection always reach the same backend.
Tests put it before several server processes to see what replicas behind a Service see."""

from __future__ import annotations

import contextlib
import socket
import threading


class ConnectionBalancer:
    def __init__(self, backends: list[int]) -> None:
        self.backends = backends  # ports on 127.0.0.1
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.connections = 0
        self.sockets: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            backend = socket.create_connection(
                ("127.0.0.1", self.backends[self.connections % len(self.backends)])
            )
            self.connections += 1
            self.sockets += [client, backend]
            for a, b in ((client, backend), (backend, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.listener.close()
        for sock in self.sockets:
            sock.close()
