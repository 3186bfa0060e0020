"""What a file's bytes are, and whether SendSeven takes them (README, "Classification").

Pure: this module knows nothing of HTTP, watchdog or the journal. The type comes from the
bytes (:mod:`daemon.media.sniff`); the name only feeds :func:`extension_mismatch`, a warning. The
verdict follows the API's table (:mod:`daemon.media.table`): accepted, ``unsupported_type``,
``too_large``, ``empty_file`` or ``unreadable``.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from daemon.media.reader import Bytes
from daemon.media.sniff import TEXT_SAMPLE_BYTES, detect
from daemon.media.table import CONTENT_TYPES, DOC, DOCX, LIMITS, MB, PPT, PPTX, XLS, XLSX
from daemon.states import Reason

__all__ = [
    "CONTENT_TYPES",
    "LIMITS",
    "MB",
    "TEXT_SAMPLE_BYTES",
    "Classification",
    "classify_file",
    "classify_fileobj",
    "extension_mismatch",
]


@dataclass(frozen=True)
class Classification:
    """The verdict on one file: what it is, and whether (or why not) it can be sent."""

    file: str
    """The path as given."""
    size: int
    """Size in bytes (0 when the file is gone)."""
    message_type: str | None
    """``image``, ``document``, ``video`` or ``audio`` when the type is supported."""
    content_type: str | None
    """What the bytes are, also for unsupported types when known (``image/bmp``)."""
    reason: Reason | None
    """None when accepted; else unsupported_type, too_large, empty_file or unreadable."""
    detail: str | None = None
    """One human sentence for the sidecar and the log, when not accepted."""

    @property
    def accepted(self) -> bool:
        """True when the file can be uploaded as it is."""
        return self.reason is None

    def as_json(self) -> dict[str, object]:
        """The ``classify`` command's object for this file."""
        return {
            "file": self.file,
            "message_type": self.message_type,
            "content_type": self.content_type,
            "size": self.size,
            "accepted": self.accepted,
            "reason": self.reason,
        }


def classify_file(path: Path) -> Classification:
    """Classify the file at ``path``; a symlink is never followed (it is ``unreadable``)."""
    name = str(path)
    try:
        # O_NONBLOCK: a FIFO dropped into an inbox must not block the worker on open().
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as error:
        return _unreadable(name, error, _size_of_regular(path))
    try:
        status = os.fstat(fd)
    except OSError as error:
        os.close(fd)
        return _unreadable(name, error)
    if not stat.S_ISREG(status.st_mode):
        os.close(fd)
        what = os.strerror(errno.EISDIR) if stat.S_ISDIR(status.st_mode) else "not a regular file"
        return Classification(name, 0, None, None, Reason.UNREADABLE, what)
    with os.fdopen(fd, "rb", buffering=0) as fileobj:
        return classify_fileobj(fileobj, name=name, size=status.st_size)


def classify_fileobj(fileobj: BinaryIO, *, name: str, size: int) -> Classification:
    """Classify an open, seekable binary file of ``size`` bytes (e.g. one the caller uploads).

    Lets a caller classify and then upload the very same open file, with no second open.
    The file position is left anywhere: seek before reading the file again.
    """
    if size <= 0:
        return Classification(name, 0, None, None, Reason.EMPTY_FILE, "the file is empty")
    try:
        content_type = detect(Bytes(fileobj, size))
    except OSError as error:
        return _unreadable(name, error, size)
    message_type = CONTENT_TYPES.get(content_type) if content_type else None
    if message_type is None:
        detail = _unsupported_detail(content_type)
        return Classification(name, size, None, content_type, Reason.UNSUPPORTED_TYPE, detail)
    limit = LIMITS[message_type]
    if size > limit:
        detail = _too_large_detail(size, limit, message_type)
        return Classification(name, size, message_type, content_type, Reason.TOO_LARGE, detail)
    return Classification(name, size, message_type, content_type, None)


def extension_mismatch(name: str, content_type: str | None) -> str | None:
    """The file's extension (lower case, no dot) when it does not fit ``content_type``.

    None when it fits, when the name has no extension, or when nothing is known about the
    extensions of ``content_type``.
    """
    # The suffix as PurePath(name).suffix has it, without building a path (hot path).
    base = name.rpartition("/")[2]
    dot = base.rfind(".")
    extension = base[dot + 1 :].lower() if 0 < dot < len(base) - 1 else ""
    fitting = _EXTENSIONS.get(content_type or "")
    if not extension or fitting is None or extension in fitting:
        return None
    return extension


# --- verdicts ----------------------------------------------------------------------------


#: Errors that say nothing about the file: this process (or the system) is out of file
#: descriptors for now. Raised, not a verdict, so the file is tried again later.
_TRANSIENT_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE})


def _size_of_regular(path: Path) -> int:
    """The size of a file that may not be read: its metadata still tells (0 for a link)."""
    try:
        st = path.lstat()
    except OSError:
        return 0
    return st.st_size if stat.S_ISREG(st.st_mode) else 0


def _unreadable(name: str, error: OSError, size: int = 0) -> Classification:
    """The ``unreadable`` verdict; an error that is not the file's fault is raised instead."""
    if error.errno in _TRANSIENT_ERRNOS:
        raise error
    detail = error.strerror or str(error)
    if error.errno == errno.ELOOP:
        detail = f"{detail} (symbolic links are not followed)"
    return Classification(name, size, None, None, Reason.UNREADABLE, detail)


def _too_large_detail(size: int, limit: int, message_type: str) -> str:
    shown, limit_shown = f"{size / MB:.1f} MB", f"{limit // MB} MB"
    if round(size / MB, 1) <= limit / MB:  # rounding would hide the excess: show bytes
        shown, limit_shown = f"{size} bytes", f"{limit_shown} ({limit} bytes)"
    return f"{shown} exceeds the {limit_shown} {message_type} limit"


_UNSUPPORTED_NAMES = {
    "image/bmp": "BMP images",
    "image/tiff": "TIFF images",
    "image/heic": "HEIC images",
    "image/avif": "AVIF images",
    "video/webm": "WebM videos",
    "video/x-matroska": "Matroska (MKV) videos",
    "video/quicktime": "QuickTime (MOV) videos",
    "video/x-msvideo": "AVI videos",
    "video/ogg": "Ogg (Theora) videos",
    "audio/x-wav": "WAV audio files",
    "audio/x-flac": "FLAC audio files",
    "audio/mp4": "MPEG-4 audio (M4A) files",
    "audio/amr-wb": "AMR-WB audio files",
    "application/ogg": "Ogg streams other than Vorbis or Opus",
    "application/zip": "ZIP archives (other than Office documents)",
    "application/x-tar": "tar archives",
    "application/gzip": "gzip files",
    "application/x-executable": "ELF executables",
    "application/x-msdownload": "Windows executables",
    "application/vnd.oasis.opendocument.text": "OpenDocument text documents",
    "application/vnd.oasis.opendocument.spreadsheet": "OpenDocument spreadsheets",
    "application/vnd.oasis.opendocument.presentation": "OpenDocument presentations",
    "application/x-ole-storage": "OLE2 files other than Word, Excel or PowerPoint documents",
    "application/rtf": "RTF documents",
    "application/postscript": "PostScript files",
}


def _unsupported_detail(content_type: str | None) -> str:
    if content_type is None:
        return "the file's type is not recognised (no known format, and not plain text)"
    return f"{_UNSUPPORTED_NAMES.get(content_type, f'{content_type} files')} are not supported"


#: Extensions that fit each content type (lower case, no dot), for the mismatch warning.
_EXTENSIONS: Mapping[str, frozenset[str]] = {
    content_type: frozenset(extensions.split())
    for content_type, extensions in {
        "image/jpeg": "jpg jpeg jpe jfif",
        "image/png": "png",
        "image/gif": "gif",
        "image/webp": "webp",
        "application/pdf": "pdf",
        DOC: "doc dot",
        DOCX: "docx",
        XLS: "xls xlt",
        XLSX: "xlsx",
        PPT: "ppt pps pot",
        PPTX: "pptx ppsx",
        "text/plain": "txt text csv tsv tab log md markdown rst json xml yaml yml ini cfg conf "
        "asc eml ics vcf srt",
        "video/mp4": "mp4 m4v",
        "video/3gpp": "3gp 3gpp 3g2 3gpp2",
        "audio/aac": "aac adts",
        "audio/mpeg": "mp3 mpga",
        "audio/ogg": "ogg oga",
        "audio/opus": "opus ogg oga",  # Opus in an .ogg file is common (voice notes)
        "audio/amr": "amr",
        "image/bmp": "bmp dib",
        "image/tiff": "tif tiff",
        "video/webm": "webm",
        "video/x-matroska": "mkv mk3d mka",
        "video/quicktime": "mov qt",
        "video/ogg": "ogv ogg",
        "audio/x-wav": "wav",
        "audio/x-flac": "flac",
        "audio/mp4": "m4a m4b mp4",
        "audio/amr-wb": "awb amr",
        "application/ogg": "ogg ogx oga spx",
        "application/zip": "zip",
        "application/x-tar": "tar",
        "application/x-executable": "bin elf so o out",
        "application/vnd.oasis.opendocument.text": "odt",
        "application/vnd.oasis.opendocument.spreadsheet": "ods",
        "application/vnd.oasis.opendocument.presentation": "odp",
    }.items()
}
