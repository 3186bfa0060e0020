"""Format sniffing: what a file's bytes are, reading only what a decision needs.

``filetype`` first, refined where it cannot tell formats apart: 3GP vs MP4 (the ``ftyp``
brand), Opus vs Vorbis (the first Ogg packet), CRC-protected ADTS AAC, MP3 after an ID3 tag,
OOXML only when the zip holds Word/Excel/PowerPoint parts, OLE2 Office files by their
directory, plain text by decoding a sample. :mod:`daemon.classify` turns the answer into a
verdict.
"""

from __future__ import annotations

import codecs
import struct
import unicodedata
import zipfile
from collections.abc import Iterator, Mapping
from typing import BinaryIO

import filetype

from daemon.media import CONTENT_TYPES, DOC, DOCX, LIMITS, PPT, PPTX, XLS, XLSX

#: ``filetype`` decides from this many leading bytes.
HEAD_BYTES = 8192
#: Plain text is judged on this many leading bytes, never on the whole file.
TEXT_SAMPLE_BYTES = 64 * 1024
#: Share of a text sample that must be printable (letters, punctuation, spaces, line breaks).
TEXT_PRINTABLE_RATIO = 0.95
#: After an ID3 tag, how far to look for the first audio frame (encoders pad).
ID3_SCAN_BYTES = 4096
#: Bounds on the OLE2 (CFB) directory walk; real Office files need a handful of sectors.
OLE_MAX_DIRECTORY_SECTORS = 512
OLE_MAX_DIFAT_SECTORS = 512


# --- reading -----------------------------------------------------------------------------


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


# --- detection ---------------------------------------------------------------------------

#: Types that stay what they are even when their bytes read as plain text.
_TEXT_LIKE_FORMATS = frozenset({"application/postscript", "application/rtf"})


def detect(src: Bytes) -> str | None:
    guess = _filetype_guess(src.head)
    content_type = _refine(src, guess)
    if content_type in CONTENT_TYPES or content_type in _TEXT_LIKE_FORMATS:
        return content_type
    if content_type is not None and content_type != guess:
        return content_type  # a container or codec identified here, from more than a prefix
    # Some filetype signatures are two to four printable bytes ("BM" is BMP, "MZ" an .exe,
    # "M4A "): a CSV whose first cell is "BMW" must stay text. Real binaries fail the test.
    sample = src.prefix(TEXT_SAMPLE_BYTES)
    if _is_text(sample, complete=len(sample) >= src.size):
        return "text/plain"
    return content_type


def _filetype_guess(head: bytes) -> str | None:
    kind = filetype.guess(head)  # bytes, never a str: filetype would take a str for a path
    return None if kind is None else str(kind.mime)


def _refine(src: Bytes, guess: str | None) -> str | None:  # noqa: PLR0911 — one per family
    """Correct ``filetype`` where it cannot tell formats apart (NOTES.md "filetype")."""
    head = src.head
    if head[4:8] == b"ftyp":
        return _iso_brand(head) or guess
    if head.startswith(b"OggS"):
        return _ogg_codec(head)
    if head.startswith(_OLE_MAGIC):
        return _ole_document(src) or guess or "application/x-ole-storage"
    if head.startswith(b"PK\x03\x04"):
        return _zip_document(src, guess)
    if head.startswith(b"ID3"):
        return _after_id3(src)
    if head.startswith(b"#!AMR-WB\n"):
        return "audio/amr-wb"
    if guess == "image/apng":
        return "image/png"  # an animated PNG is a valid PNG; viewers without APNG show frame 1
    if guess in (None, "audio/aac", "audio/mpeg"):
        # filetype takes any FF F1/FF FB start for audio and misses FF F0/F8 and MPEG-2.5;
        # two consecutive frame headers decide instead.
        return _audio_frames(src, 0)
    return guess


_MP4_BRANDS = frozenset(
    {"isom", "mp41", "mp42", "avc1", "dash", "mmp4", "MSNV", "M4V ", "M4VH", "M4VP", "f4v "}
    | {f"iso{n}" for n in range(2, 10)}
)
#: What a major brand says the file is; None: HEIF/AVIF images, which filetype names.
_MAJOR_BRANDS: Mapping[str, str | None] = {
    **dict.fromkeys(_MP4_BRANDS, "video/mp4"),
    **dict.fromkeys(("M4A ", "M4B ", "M4P ", "F4A ", "F4B "), "audio/mp4"),
    "qt  ": "video/quicktime",
    **dict.fromkeys(("heic", "heix", "hevc", "hevx", "mif1", "msf1", "avif", "avis"), None),
}


def _iso_brand(head: bytes) -> str | None:
    """3GPP, MP4 or other ISO-BMFF by the ``ftyp`` box's brands; None when undecided."""
    box_size = int.from_bytes(head[0:4], "big")
    if box_size < 16:
        return None
    major = head[8:12].decode("latin-1")
    body = head[16 : min(box_size, len(head))]
    compatible = {body[i : i + 4].decode("latin-1") for i in range(0, len(body) - 3, 4)}
    if major.startswith("3g"):  # 3gp4..3gp9, 3g2a, 3gr6, 3gs7...: the 3GPP/3GPP2 family
        return "video/3gpp"
    if major in _MAJOR_BRANDS:
        return _MAJOR_BRANDS[major]
    # An unknown major brand: trust what the file claims to be compatible with.
    if compatible & _MP4_BRANDS:
        return "video/mp4"
    return "video/3gpp" if any(brand.startswith("3g") for brand in compatible) else None


_OGG_CODECS = (
    (b"OpusHead", "opus"),
    (b"\x01vorbis", "vorbis"),
    (b"\x80theora", "theora"),
    (b"fishead\x00", "skeleton"),
)


def _ogg_codec(head: bytes) -> str:
    """Opus, Vorbis or other Ogg, by the first packet of each stream (the BOS pages)."""
    found: set[str] = set()
    pos = 0
    while head[pos : pos + 4] == b"OggS" and pos + 27 <= len(head) and head[pos + 5] & 0x02:
        segments = head[pos + 26]
        body = pos + 27 + segments
        packet = head[body : body + 16]
        found.add(next((codec for magic, codec in _OGG_CODECS if packet.startswith(magic)), "?"))
        pos = body + sum(head[pos + 27 : body])
    found.discard("skeleton")
    if found == {"opus"}:
        return "audio/opus"
    if found == {"vorbis"}:
        return "audio/ogg"
    return "video/ogg" if "theora" in found else "application/ogg"


_OLE_MAGIC = bytes.fromhex("d0cf11e0a1b11ae1")
_OLE_MAX_SECTOR = 0xFFFFFFFA  # above: free, end-of-chain and special markers
_OLE_STREAMS = (
    ("WordDocument", DOC),
    ("Workbook", XLS),
    ("Book", XLS),  # Excel 5/95 workbooks
    ("PowerPoint Document", PPT),
)


def _ole_document(src: Bytes) -> str | None:
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


def _zip_document(src: Bytes, guess: str | None) -> str:
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


def _after_id3(src: Bytes) -> str | None:
    """What follows the ID3v2 tag(s): MP3 frames, ADTS AAC or FLAC (None: not an ID3 tag)."""
    pos = 0
    for _ in range(8):  # taggers sometimes stack several tags
        tag = src.at(pos, 10)
        valid = (
            len(tag) == 10
            and tag.startswith(b"ID3")
            and tag[3] in (2, 3, 4)
            and all(byte < 0x80 for byte in tag[6:10])
        )
        if not valid:
            break
        size = (tag[6] << 21) | (tag[7] << 14) | (tag[8] << 7) | tag[9]
        pos += 10 + size + (10 if tag[5] & 0x10 else 0)
    if pos == 0:
        return None  # e.g. a text file that starts with the letters "ID3"
    window = src.at(pos, ID3_SCAN_BYTES)
    if window.startswith(b"fLaC"):
        return "audio/x-flac"
    for offset in _positions(window, 0xFF):
        found = _audio_frames(src, pos + offset)
        if found:
            return found
    return "audio/mpeg"  # an ID3 tag is MP3's own; trust it when the frames are unusual


def _positions(data: bytes, value: int) -> Iterator[int]:
    index = data.find(value)
    while index != -1:
        yield index
        index = data.find(value, index + 1)


def _audio_frames(src: Bytes, pos: int) -> str | None:
    """ADTS AAC or MPEG Layer III when a frame header at ``pos`` is followed by another."""
    for frame_length, content_type in (
        (_adts_frame_length, "audio/aac"),
        (_mp3_frame_length, "audio/mpeg"),
    ):
        length = frame_length(src.at(pos, 9))
        if length is None:
            continue
        following = pos + length
        if following == src.size or (
            following < src.size and frame_length(src.at(following, 9)) is not None
        ):
            return content_type
    return None


def _adts_frame_length(header: bytes) -> int | None:
    # syncword 0xFFF, any ID (MPEG-4/MPEG-2), layer 00, with or without CRC: FF F0/F1/F8/F9
    if len(header) < 7 or header[0] != 0xFF or header[1] & 0xF6 != 0xF0:
        return None
    if (header[2] >> 2) & 0x0F > 12:  # sampling_frequency_index 13-15 are reserved
        return None
    length = ((header[3] & 0x03) << 11) | (header[4] << 3) | (header[5] >> 5)
    header_length = 7 if header[1] & 0x01 else 9
    return length if length > header_length else None


_MP3_KBPS_V1 = (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)
_MP3_KBPS_V2 = (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)
_MP3_HZ = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


def _mp3_frame_length(header: bytes) -> int | None:
    if len(header) < 4 or header[0] != 0xFF or header[1] & 0xE0 != 0xE0:
        return None
    version = (header[1] >> 3) & 0x03  # 3: MPEG-1, 2: MPEG-2, 0: MPEG-2.5, 1: reserved
    layer = (header[1] >> 1) & 0x03  # 1: Layer III
    bitrate_index, rate_index = header[2] >> 4, (header[2] >> 2) & 0x03
    if version == 1 or layer != 1 or bitrate_index in (0, 15) or rate_index == 3:
        return None
    padding = (header[2] >> 1) & 0x01
    hz = _MP3_HZ[version][rate_index]
    if version == 3:
        return 144_000 * _MP3_KBPS_V1[bitrate_index] // hz + padding
    return 72_000 * _MP3_KBPS_V2[bitrate_index] // hz + padding


# --- plain text --------------------------------------------------------------------------

#: Control characters that real text files contain (DOS files may end with Ctrl-Z).
_TEXT_CONTROLS = frozenset("\t\n\r\f\v\x1a")


def _is_text(sample: bytes, *, complete: bool) -> bool:
    """UTF-8, UTF-16 with a BOM, or a legacy 8-bit encoding, mostly printable, no NULs.

    ``complete`` says the sample is the whole file; otherwise a multibyte character cut at
    the sample's end is fine.
    """
    if not sample:
        return False  # nothing was read: the file shrank under us, not an empty document
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encoding = "utf-16"
    elif b"\x00" in sample:
        return False
    else:
        encoding = "utf-8-sig"
    try:
        text = codecs.getincrementaldecoder(encoding)().decode(sample, final=complete)
    except UnicodeDecodeError:
        if encoding == "utf-16":
            return False
        # Not UTF-8: a cp1252/latin-1 export. Undefined bytes become U+FFFD and count against.
        text = sample.decode("cp1252", errors="replace")
    unprintable = sum(1 for char in text if not _printable(char))
    return unprintable <= len(text) * (1 - TEXT_PRINTABLE_RATIO)


def _printable(char: str) -> bool:
    if char in _TEXT_CONTROLS:
        return True
    # Cc control, Cs surrogate, Cn unassigned, Co private use; Cf (soft hyphen, ZWJ) is fine.
    return char != "\ufffd" and unicodedata.category(char) not in ("Cc", "Cs", "Cn", "Co")
