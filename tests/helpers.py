"""Shared test helpers: configs for spools in tmp_path, the installed command, log lines."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

if TYPE_CHECKING:
    from daemon.delivery.pipeline import Pipeline
    from daemon.store.claims import Owner
    from daemon.store.journal import Journal

DATA = Path(__file__).parent / "data"
TOKEN = "test-token-5e3cr3t"
TENANT = "test-tenant"
#: The installed console script, next to the interpreter running the tests.
COMMAND = str(Path(sys.executable).parent / "sendseven-watch")


@contextlib.contextmanager
def running(pipeline: Pipeline, owner: Owner, journal: Journal) -> Iterator[None]:
    """``pipeline`` started for the block; then stopped, its claim folders and journal
    let go."""
    pipeline.start()
    try:
        yield
    finally:
        pipeline.stop(10)
        owner.release()
        journal.close()


def unarchivable_sent(inbox: Path) -> None:
    """Make ``inbox``'s ``sent/`` impossible to create: a symlink to a file (a mode would
    not do: the tests may run as root, which ignores modes)."""
    inbox.mkdir(parents=True, exist_ok=True)
    (inbox / ".not-a-folder").write_text("x")
    (inbox / "sent").symlink_to(".not-a-folder")


def write_config(folder: Path, api_url: str, **overrides: Any) -> Path:
    """A config file for a spool in ``folder`` (fast settle and retries for tests)."""
    config: dict[str, Any] = {
        "api": {"url": api_url, "token": TOKEN, "tenant_id": TENANT, "read_timeout": 30},
        "spool": str(folder / "spool"),
        "settle_seconds": 0.3,
        "rescan_interval": 5,
        "workers": 4,
        "retry": {"initial_delay": 0.05, "max_delay": 0.5, "give_up_after": 60},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        elif value is None:
            config.pop(key, None)
        else:
            config[key] = value
    (folder / "spool").mkdir(exist_ok=True)
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def clean_env() -> dict[str, str]:
    """The environment for subprocesses: no stray SENDSEVEN_* from the developer's shell."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENDSEVEN_")}
    env.pop("NOTIFY_SOCKET", None)
    return env


def inject(folder: Path, code: str) -> dict[str, str]:
    """An environment whose interpreter runs ``code`` at start-up (a ``sitecustomize``)."""
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(code, encoding="utf-8")
    env = clean_env()
    env["PYTHONPATH"] = str(folder)
    return env


def run_cli(
    *args: str, cwd: Path | None = None, timeout: float = 90, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the installed ``sendseven-watch`` and wait for it."""
    return subprocess.run(
        [COMMAND, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=env if env is not None else clean_env(),
        check=False,
    )


def log_lines(text: str) -> list[dict[str, Any]]:
    """Every stdout line parsed as JSON (a line that is not JSON fails the test)."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def events(lines: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [line for line in lines if line.get("event") == name]


class Daemon:
    """``sendseven-watch run`` in a subprocess, its stdout collected line by line."""

    def __init__(
        self, config: Path, *extra: str, env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> None:
        self.lines: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self._cond = threading.Condition()
        self.process = subprocess.Popen(
            [COMMAND, "run", "-c", str(config), *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env if env is not None else clean_env(),
            cwd=cwd,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            with self._cond:
                self.raw.append(raw)
                self.lines.append(json.loads(raw))
                self._cond.notify_all()

    def wait_for(
        self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = 30
    ) -> list[dict[str, Any]]:
        """Block until ``predicate(lines)`` holds; fail the test on timeout or exit."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self.lines):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    pytest.fail(f"timed out; log so far:\n{''.join(self.raw[-40:])}")
                self._cond.wait(min(remaining, 0.2))
            return list(self.lines)

    def wait_event(self, name: str, count: int = 1, timeout: float = 30) -> list[dict[str, Any]]:
        lines = self.wait_for(lambda ls: len(events(ls, name)) >= count, timeout)
        return events(lines, name)

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout)
        self._reader.join(5)
        assert self.process.stderr is not None
        self.stderr = self.process.stderr.read()
        self.process.stderr.close()
        if self.process.stdout is not None:
            self.process.stdout.close()
        return code

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(10)
        self._reader.join(5)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


def copy_sample(name: str, inbox: Path, as_name: str | None = None) -> Path:
    """Drop a corpus file into ``inbox`` the careful way (write aside, then rename)."""
    inbox.mkdir(parents=True, exist_ok=True)
    target = inbox / (as_name or name)
    temp = inbox / f".{target.name}.tmp"
    shutil.copyfile(DATA / name, temp)
    temp.rename(target)
    return target


def wait_until(predicate: Callable[[], bool], timeout: float = 30, step: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail("condition not reached in time")
        time.sleep(step)


# -- TLS and proxies (deployment tests) ---------------------------------------------------


class Tls:
    """A private CA (made by ``trustme``) and a server context whose certificate it signed."""

    def __init__(self, folder: Path, *names: str) -> None:
        import trustme

        self.ca = trustme.CA()
        issued = self.ca.issue_cert(*(names or ("127.0.0.1", "localhost")))
        self.server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        issued.configure_cert(self.server)
        folder.mkdir(parents=True, exist_ok=True)
        #: The CA's certificate as a PEM file: what ``api.ca_bundle`` names.
        self.ca_pem = folder / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_pem))
        #: The server's certificate chain and key, for ``fake-api --tls-cert/--tls-key``.
        self.cert_pem = folder / "server.pem"
        self.key_pem = folder / "server.key"
        self.cert_pem.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
        issued.private_key_pem.write_to_path(str(self.key_pem))


class ConnectProxy:
    """A forwarding HTTP proxy on loopback that tunnels ``CONNECT host:port`` (for
    ``$HTTPS_PROXY``); notes each request line in ``seen``. ``with ConnectProxy() as p``."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def __enter__(self) -> ConnectProxy:
        self._spawn(self._accept)
        return self

    def __exit__(self, *exc: object) -> None:
        self._listener.close()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in list(self._threads):
            thread.join(5)
        for sock in sockets:
            sock.close()

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _keep(self, sock: socket.socket) -> socket.socket:
        with self._lock:
            self._sockets.append(sock)
        return sock

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self._spawn(self._serve, self._keep(client))

    def _serve(self, client: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = client.recv(4096)
            if not chunk:
                return
            head += chunk
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        self.seen.append(request_line)
        method, target, _ = request_line.split(" ", 2)
        if method != "CONNECT":
            client.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
            return
        host, _, port = target.rpartition(":")
        try:
            upstream = self._keep(socket.create_connection((host, int(port)), timeout=10))
        except OSError:
            client.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            return
        upstream.settimeout(None)
        client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        self._spawn(self._pipe, upstream, client)
        self._pipe(client, upstream)

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)
