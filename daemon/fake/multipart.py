"""Request bodies for the fake API, read while they stream in: ``Content-Length`` or
chunked framing, and a multipart/form-data parser that measures (size, sha256, first bytes)
the file part as it passes, so a 95 MB upload costs a read buffer, not 95 MB.
"""

from __future__ import annotations

import hashlib
from email.message import Message
from email.parser import HeaderParser
from email.utils import collapse_rfc2231_value
from io import BufferedIOBase

#: Bytes read from the socket at a time.
READ_CHUNK_BYTES = 256 * 1024
#: How many leading bytes of an uploaded file are kept (for tests to look at).
HEAD_BYTES = 64
MAX_PART_HEADER_BYTES = 16 * 1024
MAX_LINE_BYTES = 4096
MAX_TRAILER_LINES = 64


class FramingError(Exception):
    """The body's framing (Content-Length, chunks) is broken: the connection is unusable."""


class ClientLeftError(Exception):
    """The client closed the connection before the body was complete."""


class Body:
    """A request body as a stream of bytes, whatever its framing; ``b""`` at its end."""

    def __init__(self, rfile: BufferedIOBase, length: int | None) -> None:
        self._rfile = rfile
        self._chunked = length is None
        # Bytes left in the whole body (Content-Length) or in the current chunk (chunked).
        self._left = length or 0
        self._done = False

    @classmethod
    def of_request(cls, rfile: BufferedIOBase, headers: Message) -> Body:
        encoding = headers.get("Transfer-Encoding", "").strip().lower()
        if encoding:  # wins over Content-Length, as RFC 9112 says
            if encoding != "chunked":
                raise FramingError(f"unsupported Transfer-Encoding: {encoding}")
            return cls(rfile, None)
        length = headers.get("Content-Length", "0").strip()
        if not length.isdigit():
            raise FramingError(f"bad Content-Length: {length!r}")
        return cls(rfile, int(length))

    def read(self, size: int = READ_CHUNK_BYTES) -> bytes:
        if self._left == 0 and not self._done:
            if self._chunked:
                self._next_chunk()
            else:
                self._done = True
        if self._done:
            return b""
        want = min(size, self._left)
        data = self._rfile.read(want)
        if len(data) < want:
            raise ClientLeftError
        self._left -= want
        if self._chunked and self._left == 0 and self._rfile.read(2) != b"\r\n":
            raise FramingError("chunk data not followed by CRLF")
        return data

    def _next_chunk(self) -> None:
        line = self._rfile.readline(MAX_LINE_BYTES)
        if not line:
            raise ClientLeftError
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise FramingError(f"bad chunk size line: {line[:40]!r}") from None
        if size < 0:
            raise FramingError("negative chunk size")
        self._left = size
        if size == 0:  # the last chunk: skip the trailer section up to its blank line
            for _ in range(MAX_TRAILER_LINES):
                trailer = self._rfile.readline(MAX_LINE_BYTES)
                if not trailer:
                    raise ClientLeftError
                if trailer in (b"\r\n", b"\n"):
                    self._done = True
                    return
            raise FramingError("too many trailer lines")

    def drain(self) -> None:
        while self.read():
            pass

    def read_all(self, limit: int) -> bytes | None:
        """The whole body, or None (the body drained) when it is longer than ``limit``."""
        chunks: list[bytes] = []
        total = 0
        while chunk := self.read():
            total += len(chunk)
            if total > limit:
                self.drain()
                return None
            chunks.append(chunk)
        return b"".join(chunks)


class FilePart:
    """The upload's file part, measured while it streams past (never held whole)."""

    def __init__(self, headers: Message) -> None:
        self.headers = headers
        self.size = 0
        self.head = b""
        self._digest = hashlib.sha256()

    def feed(self, data: bytes) -> None:
        if len(self.head) < HEAD_BYTES:
            self.head += data[: HEAD_BYTES - len(self.head)]
        self.size += len(data)
        self._digest.update(data)

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()


def read_file_part(body: Body, boundary: bytes, name: str) -> FilePart | None:
    """Stream a multipart body up to its close delimiter, measuring the first part ``name``.

    Raises ``ValueError`` when the body is not well-formed multipart.
    """
    delimiter = b"\r\n--" + boundary
    keep = len(delimiter) - 1  # a delimiter may straddle two reads
    found: FilePart | None = None
    sink: FilePart | None = None  # where the current section's bytes go (None: skipped)
    buf = b"\r\n"  # so that a delimiter on the very first line looks like every later one
    while True:
        while (at := buf.find(delimiter)) < 0:
            if len(buf) > keep:
                if sink is not None:
                    sink.feed(buf[:-keep])
                buf = buf[-keep:]
            buf += _more(body)
        if sink is not None:
            sink.feed(buf[:at])
        buf = _fill(body, buf[at + len(delimiter) :], 2)
        if buf.startswith(b"--"):  # the close delimiter; the caller drains the epilogue
            return found
        buf = buf.lstrip(b" \t")  # transport padding
        # The delimiter line's own CRLF is kept, so an empty header block is found at 0 too.
        while (end := buf.find(b"\r\n\r\n")) < 0:
            if len(buf) > MAX_PART_HEADER_BYTES:
                raise ValueError("part headers too long")
            buf += _more(body)
        if not buf.startswith(b"\r\n"):
            raise ValueError("boundary delimiter not followed by CRLF")
        headers = HeaderParser().parsestr(buf[2:end].decode("utf-8", "replace"))
        buf = buf[end + 4 :]
        part_name = headers.get_param("name", header="content-disposition")
        sink = None
        if found is None and part_name is not None and collapse_rfc2231_value(part_name) == name:
            sink = found = FilePart(headers)


def _more(body: Body) -> bytes:
    data = body.read()
    if not data:
        raise ValueError("body ends inside the multipart stream")
    return data


def _fill(body: Body, buf: bytes, size: int) -> bytes:
    while len(buf) < size:
        buf += _more(body)
    return buf
