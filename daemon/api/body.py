"""The upload body: multipart/form-data with one ``file`` part, streamed from an open file.

A :class:`MultipartBody` is a file-like object that yields the multipart preamble, the file
in chunks and the epilogue, with a Content-Length known up front. A 95 MB file therefore
costs one chunk of memory, not the >200 MB that ``requests``' ``files=`` would build. A body
is single-use: every attempt builds a fresh one.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from pathlib import Path

from daemon.errors import FileChanged, UploadDeadline

#: Bytes read from the file per chunk of the upload body.
CHUNK_BYTES = 256 * 1024


class MultipartBody:
    """A multipart/form-data body with one ``file`` part, streamed from an open file."""

    def __init__(self, path: Path, filename: str, content_type: str, deadline: float) -> None:
        self._fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            st = os.fstat(self._fd)
        except OSError:
            os.close(self._fd)
            raise
        self._initial = (st.st_size, st.st_mtime_ns)
        self.size = st.st_size
        self.boundary = uuid.uuid4().hex
        quoted = filename.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D")
        quoted = quoted.replace("\n", "%0A")
        quoted = quoted.encode(errors="surrogateescape").decode(errors="replace")  # not UTF-8
        self._preamble = (
            f"--{self.boundary}\r\n"
            f'Content-Disposition: form-data; name="file"; filename="{quoted}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n"
        ).encode()
        self._epilogue = f"\r\n--{self.boundary}--\r\n".encode()
        self.length = len(self._preamble) + self.size + len(self._epilogue)
        #: Monotonic time after which reading the body fails (:class:`UploadDeadline`).
        self.deadline = deadline
        self._sent_file = 0
        self._stage = 0  # 0 preamble, 1 file, 2 epilogue, 3 done
        self._sha = hashlib.sha256()
        #: What stopped the upload from inside :meth:`read` (urllib3 wraps whatever a body
        #: raises in its own errors; the client raises this one instead).
        self.error: UploadDeadline | FileChanged | None = None

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()

    def __len__(self) -> int:
        return self.length

    def read(self, size: int = -1) -> bytes:
        """Return the next piece of the body (``size`` is a hint; chunks are whole)."""
        if time.monotonic() > self.deadline:
            self.error = UploadDeadline("upload deadline passed", endpoint="attachments")
            raise self.error
        if self._stage == 0:
            self._stage = 1
            return self._preamble
        if self._stage == 1:
            want = min(CHUNK_BYTES, self.size - self._sent_file)
            chunk = os.read(self._fd, want) if want > 0 else b""
            if want > 0 and not chunk:
                self.error = FileChanged("file shrank while it was uploaded")
                raise self.error
            self._sha.update(chunk)
            self._sent_file += len(chunk)
            if self._sent_file >= self.size:
                self._stage = 2
            if chunk:
                return chunk
        if self._stage == 2:
            self._stage = 3
            return self._epilogue
        return b""

    def unchanged(self) -> bool:
        """Whether the file still has the size and mtime it had when the body was built."""
        try:
            st = os.fstat(self._fd)
        except OSError:
            return False
        return (st.st_size, st.st_mtime_ns) == self._initial

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> MultipartBody:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
