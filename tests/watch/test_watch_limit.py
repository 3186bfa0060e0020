"""inotify's limits and network filesystems: the folders inotify cannot serve are polled."""

from __future__ import annotations

import threading
from pathlib import Path

from daemon.fake import FakeApi
from daemon.watch.mounts import filesystem_type, network_filesystem
from daemon.watch.observers import NETWORK_FILESYSTEM, make_observer
from daemon.watch.settle import FileEvent
from tests.helpers import (
    Daemon,
    copy_sample,
    events,
    inject,
    run_cli,
    wait_until,
    write_config,
)
from tests.service.test_metrics import free_port, scrape, value

#: A sitecustomize that makes the kernel's inotify_add_watch answer ENOSPC (as at
#: fs.inotify.max_user_watches) once 3 folders are watched: lowering the real sysctl would
#: take root and hit every other process of the user on this machine.
_LIMIT = """
import ctypes, errno
import watchdog.observers.inotify_c as inotify_c
_real = inotify_c.inotify_add_watch
_paths = set()

def limited(fd, path, mask):
    if path not in _paths and len(_paths) >= 3:
        ctypes.set_errno(errno.ENOSPC)
        return -1
    _paths.add(path)
    return _real(fd, path, mask)

inotify_c.inotify_add_watch = limited
"""

INBOXES = 6


def test_inboxes_past_the_watch_limit_are_polled_and_served(
    api: FakeApi, tmp_path: Path, daemons: list[Daemon]
) -> None:
    """At the watch limit the daemon runs on: one watch_limit_reached, the rest polled
    (counted in /metrics), files in every inbox sent, a new inbox too."""
    spool = tmp_path / "spool"
    spool.mkdir()
    for box in range(INBOXES):
        (spool / f"conv_{box}").mkdir()
    port = free_port()
    config = write_config(tmp_path, api.url, metrics={"listen": f"127.0.0.1:{port}"})
    daemon = Daemon(config, env=inject(tmp_path / "site", _LIMIT))
    daemons.append(daemon)
    daemon.wait_event("daemon_started")
    for box in range(INBOXES):
        copy_sample("document.pdf", spool / f"conv_{box}", "scan.pdf")
    copy_sample("document.pdf", spool / "conv_new", "late.pdf")  # a folder made at runtime
    daemon.wait_event("file_sent", count=INBOXES + 1, timeout=60)
    samples = scrape(f"http://127.0.0.1:{port}")
    # spool root + 2 inboxes got the 3 watches; 4 inboxes and the new one are polled
    assert value(samples, "sendseven_polled_inboxes", cause="watch_limit") == INBOXES - 2 + 1
    assert value(samples, "sendseven_observer_alive") == 1
    assert daemon.stop() == 0
    said = events(daemon.lines, "watch_limit_reached")
    assert len(said) == 1
    assert said[0]["level"] == "warning"
    assert said[0]["sysctl"] == "fs.inotify.max_user_watches"
    assert events(daemon.lines, "event_handler_error") == []
    assert events(daemon.lines, "unhandled_exception") == []


class _Recorder:
    """A listener that records what it is told."""

    def __init__(self) -> None:
        self.names: set[str] = set()
        self.lock = threading.Lock()

    def on_event(self, path: Path, *, is_dir: bool, event: FileEvent = FileEvent.APPEARED) -> None:
        with self.lock:
            self.names.add(path.name)

    def on_listing(self, folder: Path, listing: list[tuple[str, bool]]) -> None:
        with self.lock:
            self.names.update(name for name, _ in listing)


def test_auto_polls_a_folder_on_a_network_filesystem(tmp_path: Path) -> None:
    """`auto` polls a folder the mount table puts on NFS, and watches the others."""
    share, local = tmp_path / "share", tmp_path / "local"
    share.mkdir()
    local.mkdir()
    recorder = _Recorder()
    observer = make_observer(
        "auto",
        recorder,
        0.05,
        network=lambda folder: "nfs4" if folder == share else None,
    )
    observer.start()
    try:
        observer.schedule(share)
        observer.schedule(local)
        assert observer.fallbacks() == {share: NETWORK_FILESYSTEM}
        (share / "a.pdf").write_bytes(b"a")
        (local / "b.pdf").write_bytes(b"b")
        wait_until(lambda: {"a.pdf", "b.pdf"} <= recorder.names, timeout=10)
        assert observer.dead_watches({share, local}) == set()
    finally:
        observer.stop()
        observer.join(5)


def test_explicit_inotify_does_not_poll_a_network_folder(tmp_path: Path) -> None:
    """`observer: inotify` is taken at its word: no folder is polled for its filesystem."""
    recorder = _Recorder()
    observer = make_observer("inotify", recorder, network=lambda folder: "nfs4")
    observer.start()
    try:
        observer.schedule(tmp_path)
        assert observer.fallbacks() == {}
    finally:
        observer.stop()
        observer.join(5)


MOUNTINFO = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw
60 27 0:50 / /mnt/share rw,relatime shared:30 - nfs4 nas:/export rw,vers=4.2
61 60 0:51 / /mnt/share/local\\040disk rw,relatime - ext4 /dev/vdb rw
62 27 0:52 / /srv/scans rw,relatime - cifs //files/scans rw
63 27 0:53 / /srv/sshfs rw - fuse.sshfs host:/x rw
64 27 0:54 / /srv/ntfs rw - fuseblk /dev/sdc1 rw
65 27 0:55 / /srv/scans rw,relatime - ext4 /dev/vdc rw
"""


def test_the_filesystem_type_is_the_longest_mount_point_s(tmp_path: Path) -> None:
    """The mount table (injected) decides: longest prefix, last mount on a point, escapes."""
    table = tmp_path / "mountinfo"
    table.write_text(MOUNTINFO, encoding="utf-8")
    assert filesystem_type(Path("/mnt/share/inbox/x"), table) == "nfs4"
    assert filesystem_type(Path("/mnt/shared"), table) == "ext4"
    assert filesystem_type(Path("/mnt/share/local disk/state"), table) == "ext4"
    assert filesystem_type(Path("/srv/scans/a"), table) == "ext4"  # mounted over the cifs
    assert network_filesystem(Path("/mnt/share/inbox"), table) == "nfs4"
    assert network_filesystem(Path("/srv/sshfs/in"), table) == "fuse.sshfs"
    assert network_filesystem(Path("/srv/ntfs/in"), table) is None
    assert network_filesystem(Path("/var/lib/x"), table) is None
    assert filesystem_type(Path("/x"), tmp_path / "missing") is None


def test_check_config_warns_about_a_state_dir_on_a_network_filesystem(
    api: FakeApi, tmp_path: Path
) -> None:
    """check-config names a state_dir the mount table (injected) puts on NFS; not a local one."""
    config = write_config(tmp_path, api.url, state_dir=str(tmp_path / "state"))
    table = tmp_path / "mountinfo"
    table.write_text(
        "27 1 254:0 / / rw - ext4 /dev/vda rw\n"
        f"60 27 0:50 / {tmp_path / 'state'} rw - nfs4 nas:/export rw\n",
        encoding="utf-8",
    )
    code = f"import daemon.watch.mounts as m, pathlib; m.MOUNTINFO = pathlib.Path({str(table)!r})"
    on_nfs = run_cli("check-config", "-c", str(config), env=inject(tmp_path / "site", code))
    assert on_nfs.returncode == 0, on_nfs.stderr
    assert f"warning: state_dir {tmp_path / 'state'} is on a network filesystem (nfs4)" in (
        on_nfs.stdout
    )
    local = run_cli("check-config", "-c", str(config))
    assert local.returncode == 0 and "warning" not in local.stdout
