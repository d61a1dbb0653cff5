"""A TCP proxy in front of PostgreSQL that counts round trips: the frontend's Query and Sync messages.

In the PostgreSQL protocol a client waits for the server only after a simple ``Query`` ('Q')
or, in the extended protocol, after ``Sync`` ('S'); so their count is the number of round
trips, whatever psycopg does in between (Parse/Bind/Describe/Execute are pipelined). The
proxy answers SSL and GSS encryption requests itself with 'N' (no encryption), so it can
read the plain protocol even when the real server offers TLS. Used in a separate bench
phase only: relaying through Python adds latency, so no timed scenario goes through it.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections import Counter
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102
ROUND_TRIP_TYPES = (b"Q", b"S")


class PgRoundTripCounter:
    """``start()`` then point connection strings at ``host:port``; ``round_trips()`` since ``reset()``."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.host, self.port = "127.0.0.1", self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._messages: Counter[bytes] = Counter()
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._closed = False

    def start(self) -> PgRoundTripCounter:
        self._spawn(self._accept_loop, "pg-counter-accept")
        return self

    def stop(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(); close() alone does not
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()
        for thread in self._threads:
            thread.join(timeout=5)

    def reset(self) -> None:
        with self._lock:
            self._messages.clear()

    def round_trips(self) -> int:
        with self._lock:
            return sum(self._messages[t] for t in ROUND_TRIP_TYPES)

    def messages(self) -> dict[str, int]:
        with self._lock:
            return {t.decode(): n for t, n in sorted(self._messages.items())}

    def rewrite(self, connection_string: str) -> str:
        """The same URL-style connection string, pointed at the proxy."""
        parts = urlsplit(connection_string)
        auth = parts.netloc.rpartition("@")[0]
        netloc = f"{auth}@{self.host}:{self.port}" if auth else f"{self.host}:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc))

    # --- relaying -------------------------------------------------------------------------
    def _spawn(self, target: Callable[..., None], name: str, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.add(sock)

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self._target, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._track(sock)
            self._spawn(self._client_to_server, "pg-counter-c2s", client, server)
            self._spawn(self._server_to_client, "pg-counter-s2c", server, client)

    def _server_to_client(self, server: socket.socket, client: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := server.recv(65536):
                client.sendall(data)
        _close_both(server, client)

    def _client_to_server(self, client: socket.socket, server: socket.socket) -> None:
        buffer = b""
        startup = True
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                buffer += data
                out = bytearray()
                while True:
                    if startup:
                        if len(buffer) < 8:
                            break
                        length, code = struct.unpack("!ii", buffer[:8])
                        if len(buffer) < length:
                            break
                        message, buffer = buffer[:length], buffer[length:]
                        if code in (SSL_REQUEST, GSSENC_REQUEST):
                            client.sendall(b"N")  # no encryption: the client goes on in plain text
                            continue
                        startup = code == CANCEL_REQUEST  # a cancel request ends the connection anyway
                        out += message
                        continue
                    if len(buffer) < 5:
                        break
                    kind = buffer[:1]
                    (length,) = struct.unpack("!i", buffer[1:5])
                    if len(buffer) < 1 + length:
                        break
                    message, buffer = buffer[: 1 + length], buffer[1 + length :]
                    with self._lock:
                        self._messages[kind] += 1
                    out += message
                if out:
                    server.sendall(out)
        _close_both(client, server)


def _close_both(a: socket.socket, b: socket.socket) -> None:
    for sock in (a, b):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
