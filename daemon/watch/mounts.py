"""Which filesystem a path is on, from the kernel's mount table (``/proc/self/mountinfo``).

Python has no ``statfs``: ``os.statvfs`` lacks the filesystem type. The mount table names
it, and the mount point that is the longest prefix of a path is the one the path is on (the
last one listed when several are mounted on one point: it hides the others).

A network filesystem matters twice: inotify never hears of files written there by the
share's other clients (so ``observer: auto`` polls such an inbox), and SQLite's WAL needs
shared memory that does not work across hosts (so ``check-config`` warns about a
``state_dir`` there).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

#: Where the kernel lists this process's mounts.
MOUNTINFO = Path("/proc/self/mountinfo")

#: Filesystem types whose files other hosts may write (``fuse.*`` too: sshfs, s3fs, …).
NETWORK_FILESYSTEMS = frozenset(
    {"nfs", "nfs4", "cifs", "smb3", "smbfs", "ncpfs", "afs", "ceph", "9p", "glusterfs",
     "lustre", "gpfs", "ocfs2", "gfs2", "fuse"}
)  # fmt: skip
#: FUSE filesystems that are local disks (NTFS through ntfs-3g, overlays of containers).
LOCAL_FUSE = frozenset({"fuseblk", "fuse.fuse-overlayfs"})

_OCTAL = re.compile(r"\\([0-7]{3})")


def _unescape(field: str) -> str:
    """A mountinfo field with its ``\\040``-style escapes (space, tab, newline, backslash)."""
    return _OCTAL.sub(lambda match: chr(int(match[1], 8)), field)


def filesystem_type(path: Path, mountinfo: Path | None = None) -> str | None:
    """The type of the filesystem ``path`` is on (``ext4``, ``nfs4``, ``fuse.sshfs``, …),
    from ``mountinfo`` (default :data:`MOUNTINFO`); None when it cannot be read."""
    try:
        text = os.fsdecode((mountinfo or MOUNTINFO).read_bytes())
    except OSError:
        return None
    where = os.path.realpath(path)
    best: tuple[int, str] | None = None
    for line in text.splitlines():
        fields = line.split()
        try:
            point = _unescape(fields[4])
            fstype = fields[fields.index("-", 6) + 1]
        except (IndexError, ValueError):
            continue
        inside = where == point or where.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) >= best[0]):
            best = (len(point), fstype)
    return best[1] if best is not None else None


def network_filesystem(path: Path, mountinfo: Path | None = None) -> str | None:
    """The type of the network filesystem ``path`` is on (NFS, SMB/CIFS, FUSE, …), or None
    when it is on a local one (or the mount table cannot be read)."""
    fstype = filesystem_type(path, mountinfo)
    if fstype is None or fstype in LOCAL_FUSE:
        return None
    if fstype in NETWORK_FILESYSTEMS or fstype.startswith("fuse."):
        return fstype
    return None
