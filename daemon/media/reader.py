"""Random access to an open file for the sniffers: only the ranges a check asks for."""

from __future__ import annotations

from typing import BinaryIO

#: ``filetype`` decides from this many leading bytes; every sniffer starts from them.
HEAD_BYTES = 8192


class Bytes:
    """Random access to the open file, reading only the ranges a check asks for."""

    def __init__(self, fileobj: BinaryIO, size: int) -> None:
        self.file = fileobj
        self.size = size
        self.head = self.at(0, HEAD_BYTES)

    def prefix(self, length: int) -> bytes:
        """The first ``length`` bytes, reusing the head already read."""
        if length <= len(self.head) or len(self.head) < HEAD_BYTES:
            return self.head[:length]
        return self.head + self.at(len(self.head), length - len(self.head))

    def at(self, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes from ``offset`` (fewer at the end of the file)."""
        self.file.seek(offset)
        chunks: list[bytes] = []
        while length > 0:
            chunk = self.file.read(length)
            if not chunk:
                break
            chunks.append(chunk)
            length -= len(chunk)
        return b"".join(chunks)
