"""Classification by bytes: the sample corpus, size limits, hostile and odd files."""

from __future__ import annotations

import io
import json
import os
import shutil
import zipfile
from pathlib import Path

import filetype
import pytest

from daemon.media.classify import (
    MB,
    TEXT_SAMPLE_BYTES,
    Classification,
    classify_file,
    classify_fileobj,
    extension_mismatch,
)

DATA = Path(__file__).parents[1] / "data"
EXPECTED: dict[str, dict[str, str | None]] = json.loads(
    (DATA / "expected.json").read_text(encoding="utf-8")
)
NOT_SAMPLES = {"make_corpus.sh", "expected.json"}


def verdict(result: Classification) -> dict[str, str | None]:
    """The three fields expected.json pins down."""
    return {
        "message_type": result.message_type,
        "content_type": result.content_type,
        "reason": result.reason,
    }


def sparse_copy(source: Path, target: Path, size: int) -> Path:
    """``target``: the real bytes of ``source``, then holes up to ``size`` (nothing big on disk)."""
    shutil.copyfile(source, target)
    with target.open("r+b") as f:
        f.truncate(size)
    return target


# --- the corpus -------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus_file_is_classified_as_expected_json_says(name: str) -> None:
    """Every sample gets exactly the message type, content type and reason in expected.json."""
    path = DATA / name
    result = classify_file(path)
    assert verdict(result) == EXPECTED[name]
    assert result.size == path.stat().st_size
    assert result.accepted is (EXPECTED[name]["reason"] is None)
    assert (result.detail is None) is result.accepted
    assert result.file == str(path)


def test_expected_json_covers_the_whole_corpus() -> None:
    """expected.json names every sample file, and only those."""
    samples = {path.name for path in DATA.iterdir() if path.name not in NOT_SAMPLES}
    assert samples == set(EXPECTED)


def test_corpus_stays_small() -> None:
    """The committed corpus stays under 1.5 MB."""
    assert sum(path.stat().st_size for path in DATA.iterdir()) < 1.5 * MB


def test_rejections_say_why_in_one_sentence() -> None:
    """An unsupported, unknown or empty file carries a human detail for the sidecar."""
    assert classify_file(DATA / "image.bmp").detail == "BMP images are not supported"
    assert classify_file(DATA / "empty.txt").detail == "the file is empty"
    assert "not recognised" in (classify_file(DATA / "noise.txt").detail or "")


# --- size limits ------------------------------------------------------------------------


def test_image_one_byte_over_the_limit_is_too_large(tmp_path: Path) -> None:
    """A PNG one byte over 16 MB is too_large, still known as an image, with exact sizes."""
    path = sparse_copy(DATA / "image.png", tmp_path / "big.png", 16 * MB + 1)
    result = classify_file(path)
    assert verdict(result) == {
        "message_type": "image",
        "content_type": "image/png",
        "reason": "too_large",
    }
    assert result.size == 16 * MB + 1
    assert result.detail == "16777217 bytes exceeds the 16 MB (16777216 bytes) image limit"


def test_image_exactly_at_the_limit_is_accepted(tmp_path: Path) -> None:
    """16 MB is allowed; only more is too large."""
    path = sparse_copy(DATA / "image.png", tmp_path / "edge.png", 16 * MB)
    assert classify_file(path).accepted


def test_video_over_the_limit_names_both_sizes(tmp_path: Path) -> None:
    """A 17.2 MB MP4 is too_large and the detail says 17.2 MB against 16 MB."""
    path = sparse_copy(DATA / "video.mp4", tmp_path / "long.mp4", int(17.2 * MB))
    result = classify_file(path)
    assert (result.message_type, result.reason) == ("video", "too_large")
    assert result.detail == "17.2 MB exceeds the 16 MB video limit"


def test_document_over_100_mb_is_too_large(tmp_path: Path) -> None:
    """A PDF over 100 MB is too_large."""
    path = sparse_copy(DATA / "document.pdf", tmp_path / "huge.pdf", 101 * MB)
    result = classify_file(path)
    assert (result.message_type, result.reason) == ("document", "too_large")
    assert result.detail == "101.0 MB exceeds the 100 MB document limit"


def test_95_mb_pdf_is_accepted_as_a_document(tmp_path: Path) -> None:
    """A 95 MB PDF is within the document limit (and is not an image or video limit case)."""
    path = sparse_copy(DATA / "document.pdf", tmp_path / "scan.pdf", 95 * MB)
    result = classify_file(path)
    assert verdict(result) == {
        "message_type": "document",
        "content_type": "application/pdf",
        "reason": None,
    }
    assert result.size == 95 * MB


class CountingReader(io.RawIOBase):
    """A real file, read through a tally of the bytes handed out."""

    def __init__(self, path: Path) -> None:
        self.inner = path.open("rb", buffering=0)
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self.inner.seek(offset, whence)

    def tell(self) -> int:
        return self.inner.tell()

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        count = self.inner.readinto(buffer) or 0
        self.bytes_read += count
        return count

    def close(self) -> None:
        self.inner.close()
        super().close()


@pytest.mark.parametrize(
    ("sample", "size", "content_type"),
    [
        ("document.pdf", 95 * MB, "application/pdf"),
        ("document.docx", 60 * MB, None),  # a truncated zip: unsupported, still cheap
        ("document.doc", 60 * MB, "application/msword"),
        ("text_utf8.txt", 60 * MB, None),  # holes are NUL bytes: not text
    ],
)
def test_large_files_are_classified_from_a_few_kib(
    tmp_path: Path, sample: str, size: int, content_type: str | None
) -> None:
    """Classifying a large file reads a few dozen KiB (head, text sample, zip end), no more."""
    path = sparse_copy(DATA / sample, tmp_path / sample, size)
    with CountingReader(path) as reader:
        result = classify_fileobj(reader, name=str(path), size=size)  # type: ignore[arg-type]
        assert reader.bytes_read <= 4 * TEXT_SAMPLE_BYTES
    if content_type is not None:
        assert result.content_type == content_type


# --- plain text -------------------------------------------------------------------------


def test_text_is_judged_on_its_first_64_kib(tmp_path: Path) -> None:
    """NUL bytes after the first 64 KiB do not make a long text file binary."""
    path = tmp_path / "export.log"
    path.write_bytes(b"2024-01-01 ok\n" * 6000 + b"\x00" * 1000)
    assert verdict(classify_file(path))["content_type"] == "text/plain"


def test_character_cut_at_the_sample_end_is_still_text(tmp_path: Path) -> None:
    """A UTF-8 character straddling the 64 KiB sample boundary does not make it binary."""
    path = tmp_path / "notes.txt"
    path.write_bytes(b"a" * (TEXT_SAMPLE_BYTES - 1) + "é".encode() + b" and more\n" * 10)
    assert classify_file(path).content_type == "text/plain"


@pytest.mark.parametrize(
    "text",
    [
        "BMW,320d,2019\n",  # "BM": filetype's whole BMP signature
        "MZ Logistics GmbH\nInvoice 42\n",  # "MZ": a Windows executable to filetype
        "M4A exports are listed below\n",  # "M4A ": an M4A to filetype
        "ID3 tags were removed\n",  # "ID3" without a real tag header
    ],
)
def test_text_starting_like_a_binary_signature_stays_text(tmp_path: Path, text: str) -> None:
    """Text whose first bytes happen to be a short binary signature is still text."""
    path = tmp_path / "list.txt"
    path.write_text(text * 20, encoding="utf-8")
    assert verdict(classify_file(path)) == {
        "message_type": "document",
        "content_type": "text/plain",
        "reason": None,
    }


def test_mostly_ascii_with_nul_bytes_is_not_text(tmp_path: Path) -> None:
    """A record file with NUL padding is binary, not text."""
    path = tmp_path / "records.txt"
    path.write_bytes(b"name=alice\x00\x00\x00\x00age=42\x00\x00" * 50)
    assert verdict(classify_file(path)) == {
        "message_type": None,
        "content_type": None,
        "reason": "unsupported_type",
    }


# --- containers and codecs filetype cannot tell apart -----------------------------------


@pytest.mark.parametrize(
    ("major", "compatible", "content_type"),
    [
        (b"3gp5", b"3gp5isomiso2avc1", "video/3gpp"),
        (b"isom", b"3gp4isomiso2avc1", "video/mp4"),  # the major brand decides
        (b"xyzw", b"3gp6abcdabcdabcd", "video/3gpp"),  # unknown major: compatible brands
        (b"xyzw", b"abcdmp42abcdabcd", "video/mp4"),
        (b"M4A ", b"M4A mp42isom\x00\x00\x00\x00", "audio/mp4"),
        (b"qt  ", b"qt  qt  qt  qt  ", "video/quicktime"),
    ],
)
def test_iso_media_is_told_apart_by_its_ftyp_brands(
    tmp_path: Path, major: bytes, compatible: bytes, content_type: str
) -> None:
    """MP4, 3GPP, M4A and QuickTime share the ftyp box; its brands decide."""
    data = bytearray((DATA / "video.mp4").read_bytes())
    assert data[4:8] == b"ftyp" and int.from_bytes(data[0:4], "big") == 32
    data[8:12], data[16:32] = major, compatible
    path = tmp_path / "clip.mp4"
    path.write_bytes(data)
    assert classify_file(path).content_type == content_type


def test_zip_with_office_folders_but_no_content_types_is_a_plain_zip(tmp_path: Path) -> None:
    """A zip is DOCX only with [Content_Types].xml; word/ alone does not make one."""
    path = tmp_path / "report.docx"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("word/document.xml", "<w:document/>")
    result = classify_file(path)
    assert (result.content_type, result.reason) == ("application/zip", "unsupported_type")


def test_ooxml_is_recognised_from_the_central_directory(tmp_path: Path) -> None:
    """An XLSX whose first entries are not the Office parts is still an XLSX."""
    path = tmp_path / "book.xlsx"
    with zipfile.ZipFile(path, "w") as archive:
        for n in range(8):
            archive.writestr(f"customXml/item{n}.xml", "<x/>" * 50)
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("xl/workbook.xml", "<workbook/>")
    assert filetype.guess(path.read_bytes()).mime == "application/zip"  # filetype can't tell
    assert classify_file(path).content_type == (
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    )


def _ole_without_filetype_markers(name: str) -> bytearray:
    """A corpus OLE2 file minus the CompObj text filetype recognises it by."""
    data = bytearray((DATA / name).read_bytes())
    for marker in (b"MSWordDoc", b"Calc", b"MS PowerPoint 97"):
        at = data.find(marker, 0, 8192)
        if at >= 0:
            data[at : at + len(marker)] = b"X" * len(marker)
    assert filetype.guess(bytes(data)) is None
    return data


@pytest.mark.parametrize("name", ["document.doc", "sheet.xls", "slides.ppt"])
def test_ole_directory_decides_when_filetype_cannot_tell(tmp_path: Path, name: str) -> None:
    """DOC, XLS and PPT are told apart by their OLE2 directory's stream names."""
    path = tmp_path / name
    path.write_bytes(_ole_without_filetype_markers(name))
    assert verdict(classify_file(path)) == EXPECTED[name]


def test_ole_directory_overrides_filetype_first_sector_guess(tmp_path: Path) -> None:
    """A Word file whose FAT looks like a workbook to filetype is still a Word document."""
    data = _ole_without_filetype_markers("document.doc")
    data[516:520] = (2).to_bytes(4, "little")  # FAT entry 1 -> 2, common in real files
    assert filetype.guess(bytes(data)).mime == "application/vnd.ms-excel"
    path = tmp_path / "letter.doc"
    path.write_bytes(data)
    assert classify_file(path).content_type == "application/msword"


def test_ole_file_without_office_streams_is_unsupported(tmp_path: Path) -> None:
    """An OLE2 file with no WordDocument/Workbook/PowerPoint stream is unsupported."""
    data = bytearray((DATA / "document.doc").read_bytes())
    at = data.find("WordDocument".encode("utf-16-le"))
    data[at : at + 2] = "X".encode("utf-16-le")
    path = tmp_path / "mail.doc"
    path.write_bytes(data)
    assert verdict(classify_file(path)) == {
        "message_type": None,
        "content_type": "application/x-ole-storage",
        "reason": "unsupported_type",
    }


def test_id3_tag_before_adts_frames_is_aac(tmp_path: Path) -> None:
    """An ID3v2 tag in front of ADTS frames makes an AAC file, not an MP3."""
    tag = b"ID3\x04\x00\x00" + bytes([0, 0, 0, 100]) + b"\x00" * 100
    path = tmp_path / "voice.aac"
    path.write_bytes(tag + (DATA / "audio.aac").read_bytes())
    assert classify_file(path).content_type == "audio/aac"


@pytest.mark.parametrize("sync", [b"\xff\xf1", b"\xff\xfb", b"\xff\xf0"])
def test_noise_starting_like_an_audio_frame_is_rejected(tmp_path: Path, sync: bytes) -> None:
    """One plausible frame header is not enough: the next frame must follow."""
    path = tmp_path / "noise.mp3"
    path.write_bytes(sync + (DATA / "noise.txt").read_bytes())
    assert verdict(classify_file(path)) == {
        "message_type": None,
        "content_type": None,
        "reason": "unsupported_type",
    }


# --- unreadable -------------------------------------------------------------------------


@pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0,
    reason="root reads files whatever their mode, so chmod 000 cannot make one unreadable",
)
def test_file_without_read_permission_is_unreadable(tmp_path: Path) -> None:
    """A file that cannot be opened is unreadable, with the OS's words."""
    path = tmp_path / "secret.pdf"
    shutil.copyfile(DATA / "document.pdf", path)
    path.chmod(0)
    try:
        result = classify_file(path)
    finally:
        path.chmod(0o600)
    assert (result.reason, result.detail) == ("unreadable", "Permission denied")


def test_directory_is_unreadable(tmp_path: Path) -> None:
    """A directory is not a file to send."""
    result = classify_file(tmp_path)
    assert (result.reason, result.detail, result.size) == ("unreadable", "Is a directory", 0)


def test_dangling_symlink_is_unreadable(tmp_path: Path) -> None:
    """A symlink to nowhere is unreadable."""
    link = tmp_path / "gone.pdf"
    link.symlink_to(tmp_path / "missing.pdf")
    assert classify_file(link).reason == "unreadable"


def test_symlink_to_a_good_file_is_not_followed(tmp_path: Path) -> None:
    """Even a symlink to a valid sample is not followed."""
    link = tmp_path / "image.png"
    link.symlink_to(DATA / "image.png")
    result = classify_file(link)
    assert result.reason == "unreadable"
    assert "symbolic links are not followed" in (result.detail or "")


def test_missing_file_is_unreadable(tmp_path: Path) -> None:
    """A file that vanished is unreadable."""
    result = classify_file(tmp_path / "vanished.pdf")
    assert (result.reason, result.detail) == ("unreadable", "No such file or directory")


def test_fifo_is_unreadable_without_blocking(tmp_path: Path) -> None:
    """A named pipe is refused at once instead of waiting for a writer."""
    fifo = tmp_path / "pipe.txt"
    os.mkfifo(fifo)
    result = classify_file(fifo)
    assert (result.reason, result.detail) == ("unreadable", "not a regular file")


# --- extension mismatch -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content_type", "mismatch"),
    [
        ("photo.pdf", "image/png", "pdf"),
        ("Scan.PDF", "application/pdf", None),
        ("voice.ogg", "audio/opus", None),
        ("export.csv", "text/plain", None),
        ("README", "text/plain", None),
        (".profile", "text/plain", None),
        ("program.jpg", "application/x-executable", "jpg"),
        ("letter.DOCX", "application/zip", "docx"),
        ("in/box/clip.3gp", "video/3gpp", None),
        ("clip.mp4", "video/3gpp", "mp4"),
        ("odd.xyz", "application/x-unknown", None),
        ("data.bin", None, None),
    ],
)
def test_extension_mismatch(name: str, content_type: str | None, mismatch: str | None) -> None:
    """The extension is reported only when it does not fit the detected type."""
    assert extension_mismatch(name, content_type) == mismatch


def test_corpus_mismatches_are_exactly_the_misnamed_files() -> None:
    """In the corpus, only the deliberately misnamed files have a mismatching extension."""
    mismatched = {
        name
        for name, expected in EXPECTED.items()
        if extension_mismatch(name, expected["content_type"])
    }
    assert mismatched == {"misnamed_png.pdf", "misnamed_pdf.jpg", "program.jpg", "zip_renamed.docx"}


# --- as_json ----------------------------------------------------------------------------


def test_as_json_of_an_accepted_file() -> None:
    """as_json has the classify command's six keys with the verdict's values."""
    path = DATA / "image.png"
    assert classify_file(path).as_json() == {
        "file": str(path),
        "message_type": "image",
        "content_type": "image/png",
        "size": path.stat().st_size,
        "accepted": True,
        "reason": None,
    }


def test_as_json_of_a_rejected_file() -> None:
    """A rejected file reports accepted false, its reason and what its bytes are."""
    path = DATA / "image.bmp"
    data = classify_file(path).as_json()
    assert data == {
        "file": str(path),
        "message_type": None,
        "content_type": "image/bmp",
        "size": path.stat().st_size,
        "accepted": False,
        "reason": "unsupported_type",
    }
    assert json.loads(json.dumps(data)) == data
