"""Format sniffing: what a file's bytes are, reading only what a decision needs.

``filetype`` first, refined where it cannot tell formats apart: 3GP vs MP4 (the ``ftyp``
brand), Opus vs Vorbis (the first Ogg packet), CRC-protected ADTS AAC, MP3 after an ID3 tag,
OOXML only when the zip holds Word/Excel/PowerPoint parts, OLE2 Office files by their
directory, plain text by decoding a sample. :mod:`daemon.media.classify` turns the answer into a
verdict.

Office documents (OLE2 directory, OOXML parts) are read in :mod:`daemon.media.officedocs`, MPEG
audio and ADTS AAC frame sync in :mod:`daemon.media.audioframes`.
"""

from __future__ import annotations

import codecs
import unicodedata
from collections.abc import Mapping

import filetype

from daemon.media.audioframes import after_id3, audio_frames
from daemon.media.officedocs import OLE_MAGIC, ole_document, zip_document
from daemon.media.reader import Bytes
from daemon.media.table import CONTENT_TYPES

#: Plain text is judged on this many leading bytes, never on the whole file.
TEXT_SAMPLE_BYTES = 64 * 1024
#: Share of a text sample that must be printable (letters, punctuation, spaces, line breaks).
TEXT_PRINTABLE_RATIO = 0.95


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
    """Correct ``filetype`` where it cannot tell formats apart: 3GP comes back as MP4 or
    nothing, any Ogg as ``audio/ogg``, CRC-protected ADTS not at all, and Office files are
    judged from fixed places in the prefix (filetype 1.2's own matchers)."""
    head = src.head
    if head[4:8] == b"ftyp":
        return _iso_brand(head) or guess
    if head.startswith(b"OggS"):
        return _ogg_codec(head)
    if head.startswith(OLE_MAGIC):
        return ole_document(src) or guess or "application/x-ole-storage"
    if head.startswith(b"PK\x03\x04"):
        return zip_document(src, guess)
    if head.startswith(b"ID3"):
        return after_id3(src)
    if head.startswith(b"#!AMR-WB\n"):
        return "audio/amr-wb"
    if guess == "image/apng":
        return "image/png"  # an animated PNG is a valid PNG; viewers without APNG show frame 1
    if guess in (None, "audio/aac", "audio/mpeg"):
        # filetype takes any FF F1/FF FB start for audio and misses FF F0/F8 and MPEG-2.5;
        # two consecutive frame headers decide instead.
        return audio_frames(src, 0)
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
