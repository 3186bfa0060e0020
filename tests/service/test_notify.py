"""sd_notify against a real unix datagram socket standing in for systemd."""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.service.notify import Notifier, WatchdogPinger

#: How long a test waits for a datagram before calling it missing.
RECV_TIMEOUT_SECONDS = 5.0

#: 0.2 s watchdog timeout: a ping every 0.1 s.
WATCHDOG_USEC = "200000"


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Every thread a test starts is gone when it ends."""
    before = set(threading.enumerate())
    yield
    leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    assert not leaked, f"leaked threads: {leaked}"


@pytest.fixture
def systemd_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket in tmp_path and its path, as systemd would pass it."""
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(RECV_TIMEOUT_SECONDS)
        yield sock, str(path)


def receive(sock: socket.socket) -> str:
    """One datagram as text."""
    return sock.recv(65536).decode()


def drained(sock: socket.socket) -> list[str]:
    """Every datagram already waiting on the socket, without blocking."""
    sock.setblocking(False)
    messages = []
    try:
        while True:
            messages.append(receive(sock))
    except BlockingIOError:
        pass
    finally:
        sock.settimeout(RECV_TIMEOUT_SECONDS)
    return messages


def test_ready_sends_ready_and_status(systemd_socket: tuple[socket.socket, str]) -> None:
    """ready() sends READY=1 and STATUS= in one datagram."""
    sock, path = systemd_socket
    notifier = Notifier({"NOTIFY_SOCKET": path})

    notifier.ready("watching 3 inboxes")

    assert receive(sock) == "READY=1\nSTATUS=watching 3 inboxes"


def test_ready_without_status(systemd_socket: tuple[socket.socket, str]) -> None:
    """ready() with no status sends READY=1 alone."""
    sock, path = systemd_socket

    Notifier({"NOTIFY_SOCKET": path}).ready()

    assert receive(sock) == "READY=1"


def test_status_newlines_cannot_inject_assignments(
    systemd_socket: tuple[socket.socket, str],
) -> None:
    """A newline in a status text is flattened, so it cannot smuggle in e.g. READY=1."""
    sock, path = systemd_socket

    Notifier({"NOTIFY_SOCKET": path}).stopping("bad file\nREADY=1")

    assert receive(sock) == "STOPPING=1\nSTATUS=bad file READY=1"


def test_stopping_sends_stopping(systemd_socket: tuple[socket.socket, str]) -> None:
    """stopping() sends STOPPING=1 with the status."""
    sock, path = systemd_socket

    Notifier({"NOTIFY_SOCKET": path}).stopping("finishing 2 uploads")

    assert receive(sock) == "STOPPING=1\nSTATUS=finishing 2 uploads"


def test_reloading_carries_the_monotonic_time(systemd_socket: tuple[socket.socket, str]) -> None:
    """reloading() sends RELOADING=1 and MONOTONIC_USEC of CLOCK_MONOTONIC in µs."""
    sock, path = systemd_socket
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000

    Notifier({"NOTIFY_SOCKET": path}).reloading()

    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    first, second = receive(sock).split("\n")
    assert first == "RELOADING=1"
    key, _, value = second.partition("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(value) <= after


def test_notify_sends_all_lines_as_one_datagram(
    systemd_socket: tuple[socket.socket, str],
) -> None:
    """notify() joins its lines into a single datagram and reports delivery."""
    sock, path = systemd_socket

    assert Notifier({"NOTIFY_SOCKET": path}).notify("A=1", "B=2")

    assert receive(sock) == "A=1\nB=2"
    assert drained(sock) == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="abstract sockets are Linux")
def test_abstract_namespace_socket() -> None:
    """An "@name" NOTIFY_SOCKET is the Linux abstract namespace."""
    name = f"sendseven-watch-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(RECV_TIMEOUT_SECONDS)

        assert Notifier({"NOTIFY_SOCKET": "@" + name}).notify("READY=1")

        assert receive(sock) == "READY=1"


def test_no_socket_means_disabled_and_silent() -> None:
    """Without NOTIFY_SOCKET every call is a harmless no-op, and there is no watchdog."""
    notifier = Notifier({"WATCHDOG_USEC": WATCHDOG_USEC})

    assert notifier.notify("READY=1") is False
    notifier.ready("ok")
    notifier.stopping()
    notifier.reloading()
    assert notifier.watchdog_interval() is None


def test_empty_socket_variable_means_disabled() -> None:
    """An empty NOTIFY_SOCKET counts as unset: nothing is sent, no watchdog is pinged."""
    notifier = Notifier({"NOTIFY_SOCKET": "", "WATCHDOG_USEC": WATCHDOG_USEC})

    assert notifier.notify("READY=1") is False
    assert notifier.watchdog_interval() is None


def test_missing_socket_path_returns_false(tmp_path: Path) -> None:
    """A socket path that does not exist makes notify() return False, never raise."""
    notifier = Notifier(
        {"NOTIFY_SOCKET": str(tmp_path / "gone.sock"), "WATCHDOG_USEC": WATCHDOG_USEC}
    )

    assert notifier.watchdog_interval() == 0.1  # the socket is taken as given
    assert notifier.notify("READY=1") is False
    notifier.ready("ok")
    notifier.stopping("bye")


def test_socket_path_that_is_not_a_socket_returns_false(tmp_path: Path) -> None:
    """A NOTIFY_SOCKET naming a regular file makes notify() return False."""
    not_a_socket = tmp_path / "plain-file"
    not_a_socket.write_text("x")

    assert Notifier({"NOTIFY_SOCKET": str(not_a_socket)}).notify("READY=1") is False


def test_watchdog_interval_is_half_the_timeout() -> None:
    """watchdog_interval() is half of WATCHDOG_USEC, in seconds."""
    notifier = Notifier({"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "30000000"})

    assert notifier.watchdog_interval() == 15.0


def test_watchdog_for_this_pid_is_kept() -> None:
    """WATCHDOG_PID naming this process keeps the watchdog."""
    notifier = Notifier(
        {
            "NOTIFY_SOCKET": "/run/x",
            "WATCHDOG_USEC": WATCHDOG_USEC,
            "WATCHDOG_PID": str(os.getpid()),
        }
    )

    assert notifier.watchdog_interval() == 0.1


@pytest.mark.parametrize(
    "environ",
    [
        {"NOTIFY_SOCKET": "/run/x"},
        {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "0"},
        {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "soon"},
        {"WATCHDOG_USEC": WATCHDOG_USEC},
        {
            "NOTIFY_SOCKET": "/run/x",
            "WATCHDOG_USEC": WATCHDOG_USEC,
            "WATCHDOG_PID": str(os.getpid() + 1),
        },
    ],
    ids=["unset", "zero", "garbage", "no-socket", "other-pid"],
)
def test_no_watchdog(environ: dict[str, str]) -> None:
    """No usable watchdog (unset, invalid, no socket, another process's) gives None."""
    assert Notifier(environ).watchdog_interval() is None


def test_watchdog_pings_while_healthy(systemd_socket: tuple[socket.socket, str]) -> None:
    """WATCHDOG=1 arrives repeatedly while the daemon is healthy, and stops after stop()."""
    sock, path = systemd_socket
    notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": WATCHDOG_USEC})
    pinger = WatchdogPinger(notifier, lambda: True)

    pinger.start()
    try:
        assert pinger.running
        pings = [receive(sock) for _ in range(3)]
    finally:
        pinger.stop()

    assert pings == ["WATCHDOG=1"] * 3
    assert not pinger.running
    drained(sock)
    time.sleep(0.3)
    assert drained(sock) == []


def test_no_ping_while_unhealthy(systemd_socket: tuple[socket.socket, str]) -> None:
    """No WATCHDOG=1 is sent while the health check says False (or raises)."""
    sock, path = systemd_socket
    notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": WATCHDOG_USEC})
    checks = 0
    checked_enough = threading.Event()

    def healthy() -> bool:
        nonlocal checks
        checks += 1
        if checks >= 4:
            checked_enough.set()
        if checks % 2:
            return False
        raise RuntimeError("health check broke")

    pinger = WatchdogPinger(notifier, healthy)
    pinger.start()
    try:
        assert checked_enough.wait(RECV_TIMEOUT_SECONDS)
    finally:
        pinger.stop()

    assert drained(sock) == []


def test_pings_resume_when_healthy_again(systemd_socket: tuple[socket.socket, str]) -> None:
    """Pings stop while unhealthy and come back once the daemon recovers."""
    sock, path = systemd_socket
    notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": WATCHDOG_USEC})
    recovered = threading.Event()
    checks = threading.Semaphore(0)

    def healthy() -> bool:
        checks.release()
        return recovered.is_set()

    pinger = WatchdogPinger(notifier, healthy)
    pinger.start()
    try:
        for _ in range(3):
            assert checks.acquire(timeout=RECV_TIMEOUT_SECONDS)
        assert drained(sock) == []
        recovered.set()
        assert receive(sock) == "WATCHDOG=1"
    finally:
        pinger.stop()


def test_no_thread_without_watchdog(systemd_socket: tuple[socket.socket, str]) -> None:
    """Without WATCHDOG_USEC start() starts no thread and stop() is still fine."""
    _, path = systemd_socket
    pinger = WatchdogPinger(Notifier({"NOTIFY_SOCKET": path}), lambda: True)
    threads_before = threading.active_count()

    pinger.start()

    assert not pinger.running
    assert threading.active_count() == threads_before
    pinger.stop()


def test_no_thread_for_another_processes_watchdog(
    systemd_socket: tuple[socket.socket, str],
) -> None:
    """A watchdog meant for another PID (inherited variables) starts no thread."""
    _, path = systemd_socket
    other_pid = str(os.getpid() + 1)
    notifier = Notifier(
        {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": WATCHDOG_USEC, "WATCHDOG_PID": other_pid}
    )
    pinger = WatchdogPinger(notifier, lambda: True)

    pinger.start()

    assert not pinger.running
    pinger.stop()


def test_stop_is_idempotent_and_start_twice_is_one_thread(
    systemd_socket: tuple[socket.socket, str],
) -> None:
    """start() twice runs one thread; stop() may be called again, and before start()."""
    _, path = systemd_socket
    pinger = WatchdogPinger(
        Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": WATCHDOG_USEC}), lambda: True
    )
    pinger.stop()

    pinger.start()
    pinger.start()
    names = [t.name for t in threading.enumerate()]
    pinger.stop()
    pinger.stop()

    assert names.count("sd-watchdog") == 1
    assert not pinger.running


def test_pinger_survives_a_vanished_socket(tmp_path: Path) -> None:
    """When the socket goes away the pinger keeps running quietly and still stops."""
    path = tmp_path / "notify.sock"
    checks = threading.Semaphore(0)

    def healthy() -> bool:
        checks.release()
        return True

    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
    path.unlink()
    pinger = WatchdogPinger(
        Notifier({"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": WATCHDOG_USEC}), healthy
    )

    pinger.start()
    try:
        for _ in range(3):
            assert checks.acquire(timeout=RECV_TIMEOUT_SECONDS)
        assert pinger.running
    finally:
        pinger.stop()
