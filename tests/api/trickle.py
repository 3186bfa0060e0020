"""A raw HTTP server on loopback whose replies trickle: one byte at a time, for ever.

Per endpoint (``attachments``, ``messages``) it answers normally (201 with a JSON ``id``),
or trickles its headers (the status line comes, then one header byte per ``every``
seconds) or its body (complete headers announcing a body that comes one byte per
``every`` seconds). It reads each request whole first, so the client is left waiting only
for the reply.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import socket
import threading
from typing import Literal

Mode = Literal["ok", "headers", "body"]


class TrickleServer:
    """Answers ``POST /attachments`` and ``POST /messages`` as its modes say."""

    def __init__(self, attachments: Mode = "ok", messages: Mode = "ok", every: float = 1.0):
        self.modes: dict[str, Mode] = {"attachments": attachments, "messages": messages}
        self.every = every
        self.requests: list[str] = []
        #: The Idempotency-Key of every request to /messages, in order.
        self.keys: list[str] = []
        self._ids = itertools.count(1)
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self._threads: list[threading.Thread] = []
        self._accept = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}/api/v1"

    def __enter__(self) -> TrickleServer:
        self._accept.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._accept.join(5)
        for thread in self._threads:
            thread.join(5)
        self._listener.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            thread = threading.Thread(target=self._one, args=(conn,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _one(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            conn.settimeout(30)
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                head += chunk
            header, _, body = head.partition(b"\r\n\r\n")
            lines = header.decode("latin-1").split("\r\n")
            sizes = [
                line.split(":", 1)[1]
                for line in lines
                if line.lower().startswith("content-length:")
            ]
            length = int(sizes[0]) if sizes else 0
            while len(body) < length:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                body += chunk
            endpoint = lines[0].split()[1].rstrip("/").rsplit("/", 1)[-1]
            self.requests.append(endpoint)
            self.keys += [
                line.split(":", 1)[1].strip()
                for line in lines
                if line.lower().startswith("idempotency-key:")
            ]
            mode = self.modes.get(endpoint, "ok")
            reply = json.dumps({"id": f"{endpoint[:3]}_{next(self._ids)}", "status": "queued"})
            if mode == "ok":
                conn.sendall(
                    b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(reply)}\r\nConnection: close\r\n\r\n".encode()
                    + reply.encode()
                )
                return
            if mode == "headers":
                conn.sendall(b"HTTP/1.1 201 Created\r\nX-Slow: ")
            else:
                conn.sendall(
                    b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
                    b"Content-Length: 100000\r\nConnection: close\r\n\r\n"
                )
            while not self._stop.wait(self.every):
                conn.sendall(b"a" if mode == "headers" else b" ")
