"""Office documents: Word, Excel and PowerPoint, by what the container holds.

``filetype`` decides from a prefix: an OOXML type from the first few zip entries, an OLE2
one from bytes at fixed places in the first sectors, so it misses or misnames Office files
laid out otherwise. Here OOXML is recognised only when the zip holds Word/Excel/PowerPoint
parts, and OLE2 Office files by the stream names in their directory. :mod:`daemon.media.sniff`
calls in here once the magic bytes say zip or OLE2.
"""

from __future__ import annotations

import struct
import zipfile
from collections.abc import Iterator

from daemon.media.reader import Bytes
from daemon.media.table import DOC, DOCX, LIMITS, PPT, PPTX, XLS, XLSX

#: Bounds on the OLE2 (CFB) directory walk; real Office files need a handful of sectors.
OLE_MAX_DIRECTORY_SECTORS = 512
OLE_MAX_DIFAT_SECTORS = 512

OLE_MAGIC = bytes.fromhex("d0cf11e0a1b11ae1")
_OLE_MAX_SECTOR = 0xFFFFFFFA  # above: free, end-of-chain and special markers
_OLE_STREAMS = (
    ("WordDocument", DOC),
    ("Workbook", XLS),
    ("Book", XLS),  # Excel 5/95 workbooks
    ("PowerPoint Document", PPT),
)


def ole_document(src: Bytes) -> str | None:
    """Word, Excel or PowerPoint by the stream names at the top of the OLE2 directory.

    None when the directory cannot be read (then filetype's guess stands); an OLE2 file
    without those streams (Outlook .msg, .msi, an encrypted OOXML) is x-ole-storage.
    """
    try:
        names = set(_ole_root_streams(src))
    except (ValueError, IndexError, struct.error):
        return None
    return next((ct for stream, ct in _OLE_STREAMS if stream in names), "application/x-ole-storage")


def _ole_root_streams(src: Bytes) -> Iterator[str]:
    header = src.at(0, 512)
    shift = struct.unpack_from("<H", header, 0x1E)[0]
    if shift not in (9, 12):
        raise ValueError("not a CFB sector size")
    sector = 1 << shift
    per_sector = sector // 4
    difat = list(struct.unpack_from("<109I", header, 0x4C))
    next_difat = struct.unpack_from("<I", header, 0x44)[0]
    for _ in range(OLE_MAX_DIFAT_SECTORS):
        if next_difat >= _OLE_MAX_SECTOR:
            break
        more = struct.unpack(f"<{per_sector}I", src.at((next_difat + 1) * sector, sector))
        difat.extend(more[:-1])
        next_difat = more[-1]

    def next_sector(current: int) -> int:
        fat_sector = difat[current // per_sector]
        if fat_sector >= _OLE_MAX_SECTOR:
            raise ValueError("sector outside the FAT")
        entry = src.at((fat_sector + 1) * sector + (current % per_sector) * 4, 4)
        return int(struct.unpack("<I", entry)[0])

    entries: list[bytes] = []
    current, seen = struct.unpack_from("<I", header, 0x30)[0], set[int]()
    while current < _OLE_MAX_SECTOR and current not in seen:
        if len(seen) >= OLE_MAX_DIRECTORY_SECTORS:
            raise ValueError("directory too long")
        seen.add(current)
        data = src.at((current + 1) * sector, sector)
        entries.extend(data[i : i + 128] for i in range(0, len(data) - 127, 128))
        current = next_sector(current)
    if not entries or entries[0][0x42] != 5:
        raise ValueError("no root entry")
    # The root's children form a tree through the left/right sibling links.
    stack, visited = [struct.unpack_from("<I", entries[0], 0x4C)[0]], set[int]()
    while stack:
        index = stack.pop()
        if index >= len(entries) or index in visited:
            continue
        visited.add(index)
        entry = entries[index]
        name_bytes = struct.unpack_from("<H", entry, 0x40)[0]
        if entry[0x42] == 2 and 2 <= name_bytes <= 64:
            yield entry[: name_bytes - 2].decode("utf-16-le", errors="replace")
        stack.extend(struct.unpack_from("<II", entry, 0x44))


_OOXML = (("word/", DOCX), ("xl/", XLSX), ("ppt/", PPTX))


def zip_document(src: Bytes, guess: str | None) -> str:
    """DOCX/XLSX/PPTX only when the zip really has their parts; else what filetype said."""
    others = guess if guess not in (None, DOCX, XLSX, PPTX) else "application/zip"
    if src.size > LIMITS["document"]:
        # Too large to send whatever it is; spare reading a large central directory.
        return guess or "application/zip"
    try:
        with zipfile.ZipFile(src.file) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, ValueError, EOFError):
        return others
    if "[Content_Types].xml" in names:
        for prefix, content_type in _OOXML:
            if any(name.startswith(prefix) for name in names):
                return content_type
    return others
