"""MPEG audio and ADTS AAC, by frame sync: a frame header followed by another.

``filetype`` takes any FF F1/FF FB start for audio and misses FF F0/F8 (CRC-protected ADTS
AAC) and MPEG-2.5, and it calls anything that starts with an ID3 tag MP3. Here two
consecutive frame headers decide, and ID3 tags are skipped to see whether MP3 frames, ADTS
AAC or FLAC follow. :mod:`daemon.media.sniff` calls in here for ID3-tagged files and for what
filetype calls AAC, MP3 or nothing.
"""

from __future__ import annotations

from collections.abc import Iterator

from daemon.media.reader import Bytes

#: After an ID3 tag, how far to look for the first audio frame (encoders pad).
ID3_SCAN_BYTES = 4096


def after_id3(src: Bytes) -> str | None:
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
        found = audio_frames(src, pos + offset)
        if found:
            return found
    return "audio/mpeg"  # an ID3 tag is MP3's own; trust it when the frames are unusual


def _positions(data: bytes, value: int) -> Iterator[int]:
    index = data.find(value)
    while index != -1:
        yield index
        index = data.find(value, index + 1)


def audio_frames(src: Bytes, pos: int) -> str | None:
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
