#!/usr/bin/env bash
# Rebuild the sample corpus that tests/test_classify.py (and the end-to-end tests) classify.
#
#   bash tests/data/make_corpus.sh
#
# Every file is made by a real encoder from a small synthetic source (a test pattern, a sine
# tone, a few lines of text), so the corpus exercises real headers, not hand-typed magic bytes.
# The exceptions are crafted on purpose and say so below: the CRC-protected ADTS streams, the
# AMR-WB file, the zip renamed .docx and the noise. What each file must classify as is written
# by hand in expected.json, not derived from this script or from daemon/media/classify.py.
#
# Debian (12) packages it needs:
#   ffmpeg                        video/audio (libx264, h263, aac, libmp3lame, libvorbis, libopus,
#                                 libvpx, libtheora, flac)
#   imagemagick                   `convert` for the images (built with libwebp for WebP)
#   sox libsox-fmt-base           AMR-NB (`-t amr-nb`, via libopencore-amrnb) and WAV
#   libreoffice-writer libreoffice-calc libreoffice-impress
#                                 DOC/DOCX/ODT, XLS/XLSX, PPT/PPTX (`soffice --headless --convert-to`)
#   ghostscript                   the PDF (pdfwrite from a tiny PostScript page)
#   gcc binutils                  the ELF executable named .jpg
#   zip tar openssl python3 coreutils libc-bin (iconv)
#
# Output is deterministic where the tools allow it (bitexact ffmpeg flags, stripped images,
# sox -R, SOURCE_DATE_EPOCH for Ghostscript, fixed zip/tar timestamps, seeded noise). Only
# LibreOffice's zip-based files (docx, xlsx, pptx, odt) carry the conversion time, so they
# differ byte-wise between runs but classify the same.
# slides.ppt is ~450 KB: LibreOffice's PPT export always embeds a 384x384 uncompressed preview
# bitmap in \005SummaryInformation (GenerateThumbnail does not switch it off for PPT).

set -euo pipefail

OUT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
export TZ=UTC LC_ALL=C.UTF-8 SOURCE_DATE_EPOCH=1700000000
cd "$WORK"

ff() { ffmpeg -hide_banner -loglevel error -nostdin -y "$@"; }
BITEXACT=(-fflags +bitexact -flags:v +bitexact -flags:a +bitexact -map_metadata -1)
PATTERN=(-f lavfi -i "testsrc=size=64x48:rate=10:duration=1")
PATTERN_CIF=(-f lavfi -i "testsrc=size=128x96:rate=10:duration=1")   # h263 needs a standard size
TONE=(-f lavfi -i "sine=frequency=440:sample_rate=8000:duration=1")
TONE44=(-f lavfi -i "sine=frequency=440:sample_rate=44100:duration=1")

# --- images ---------------------------------------------------------------------------------
img() { convert -size 32x32 gradient:'#2050c0'-'#f0c040' -strip "$@"; }
img -quality 75 "$OUT/image.jpg"
img -define png:exclude-chunks=date,time "$OUT/image.png"
img -colors 16 "$OUT/image.gif"
img -quality 50 "$OUT/image.webp"
img BMP3:"$OUT/image.bmp"                         # unsupported
img -compress lzw "$OUT/image.tiff"               # unsupported

# --- video ----------------------------------------------------------------------------------
ff "${PATTERN[@]}" "${TONE[@]}" -c:v libx264 -crf 40 -pix_fmt yuv420p -threads 1 \
   -c:a aac -b:a 12k -ac 1 "${BITEXACT[@]}" "$OUT/video.mp4"                   # ftyp isom
ff "${PATTERN_CIF[@]}" "${TONE[@]}" -c:v h263 -q:v 20 -c:a aac -b:a 12k -ac 1 \
   "${BITEXACT[@]}" -f 3gp "$OUT/video.3gp"                                     # ftyp 3gp4
ff "${PATTERN[@]}" "${TONE[@]}" -c:v libx264 -crf 40 -pix_fmt yuv420p -threads 1 \
   -c:a aac -b:a 12k -ac 1 "${BITEXACT[@]}" -f 3gp "$OUT/video_h264.3gp"        # ftyp 3gp6
ff "${PATTERN_CIF[@]}" "${TONE[@]}" -c:v h263 -q:v 20 -c:a aac -b:a 12k -ac 1 \
   "${BITEXACT[@]}" -f 3g2 "$OUT/video.3g2"                                     # ftyp 3g2a
ff "${PATTERN[@]}" -c:v libx264 -crf 40 -pix_fmt yuv420p -threads 1 \
   "${BITEXACT[@]}" -f mov "$OUT/video.mov"                                     # unsupported (qt)
ff "${PATTERN[@]}" -c:v libvpx -b:v 50k -threads 1 "${BITEXACT[@]}" "$OUT/video.webm"
ff "${PATTERN[@]}" -c:v libx264 -crf 40 -pix_fmt yuv420p -threads 1 \
   "${BITEXACT[@]}" "$OUT/video.mkv"
ff "${PATTERN[@]}" -c:v libtheora -q:v 1 "${BITEXACT[@]}" "$OUT/video.ogv"     # Theora in Ogg

# --- audio ----------------------------------------------------------------------------------
ff "${TONE[@]}" -c:a aac -b:a 12k -ac 1 "${BITEXACT[@]}" -f adts "$OUT/audio.aac"   # FF F1
ff "${TONE44[@]}" -c:a libmp3lame -b:a 32k -ac 1 "${BITEXACT[@]}" "$OUT/audio.mp3" # ID3v2 + FF FB
ff "${TONE44[@]}" -c:a libmp3lame -b:a 32k -ac 1 "${BITEXACT[@]}" \
   -id3v2_version 0 -write_xing 0 "$OUT/audio_noid3.mp3"                       # bare FF FB
ff "${TONE[@]}" -c:a libmp3lame -b:a 8k -ac 1 "${BITEXACT[@]}" \
   -id3v2_version 0 -write_xing 0 "$OUT/audio_8k.mp3"                          # MPEG-2.5: FF E3
ff "${TONE[@]}" -c:a libvorbis -q:a 0 -ac 1 "${BITEXACT[@]}" "$OUT/audio.ogg"
ff "${TONE[@]}" -c:a libopus -b:a 6k -ac 1 "${BITEXACT[@]}" "$OUT/audio.opus"
cp "$OUT/audio.opus" "$OUT/audio_opus.ogg"                                    # Opus named .ogg
ff "${TONE[@]}" -c:a flac -ac 1 "${BITEXACT[@]}" -f ogg "$OUT/audio_flac.ogg"  # unsupported
ff "${TONE[@]}" -c:a aac -b:a 12k -ac 1 "${BITEXACT[@]}" -f ipod "$OUT/audio.m4a"  # ftyp M4A
ff -f lavfi -i "sine=frequency=440:sample_rate=8000:duration=0.5" -ac 1 \
   "${BITEXACT[@]}" -c:a pcm_s16le "$OUT/audio.wav"
ff "${TONE[@]}" -c:a flac -ac 1 "${BITEXACT[@]}" "$OUT/audio.flac"
sox -R -n -r 8000 -c 1 -t amr-nb "$OUT/audio.amr" synth 1 sine 440

# CRC-protected ADTS. ffmpeg's ADTS muxer never writes a CRC, so these are CRAFTED from
# audio.aac: in every frame the protection_absent bit is cleared, frame_length grows by 2 and a
# 2-byte crc_check field is inserted after the 7-byte header. The CRC value is a CRC-16
# (0x8005, init 0xFFFF) over the 7 header bytes only, not the full ISO 13818-7 coverage;
# decoders such as ffmpeg skip the field, and the classifier reads only the header.
# audio_crc.aac keeps ID=0 (MPEG-4: FF F0); audio_mpeg2_crc.aac also sets ID=1 (MPEG-2: FF F8).
python3 - "$OUT" <<'PY'
import pathlib, sys
out = pathlib.Path(sys.argv[1])
src = (out / "audio.aac").read_bytes()

def crc16(data: bytes) -> int:
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x8005) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc

def protect(stream: bytes, mpeg2: bool) -> bytes:
    frames, pos = [], 0
    while pos < len(stream):
        head = bytearray(stream[pos:pos + 7])
        assert head[0] == 0xFF and head[1] & 0xF6 == 0xF0 and head[1] & 1, "not a bare ADTS frame"
        length = ((head[3] & 3) << 11) | (head[4] << 3) | (head[5] >> 5)
        payload = stream[pos + 7:pos + length]
        head[1] &= 0xFE                       # protection_absent = 0
        if mpeg2:
            head[1] |= 0x08                   # ID = 1 (MPEG-2)
        new = length + 2
        head[3] = (head[3] & 0xFC) | (new >> 11)
        head[4] = (new >> 3) & 0xFF
        head[5] = (head[5] & 0x1F) | ((new & 7) << 5)
        frames.append(bytes(head) + crc16(head).to_bytes(2, "big") + payload)
        pos += length
    return b"".join(frames)

(out / "audio_crc.aac").write_bytes(protect(src, mpeg2=False))
(out / "audio_mpeg2_crc.aac").write_bytes(protect(src, mpeg2=True))

# AMR-WB (not in the API's table). sox here cannot encode AMR-WB, so this is CRAFTED: the
# RFC 4867 storage header followed by 50 NO_DATA frames (frame type 15, one byte each).
(out / "audio_wb.awb").write_bytes(b"#!AMR-WB\n" + bytes([0x7C]) * 50)
PY

# --- documents ------------------------------------------------------------------------------
mkdir -p src lo
cat > src/document.txt <<'EOF'
Quarterly note for the front desk

Café opening hours change next week: the façade works at Zürich-Süd are done.
Naïve question from Søren: does the crème brûlée stay on the menu? Ja, natürlich.
EOF
cat > src/sheet.csv <<'EOF'
item,quantity,unit_price
Café crème,2,3.50
Thé vert,1,2.10
Croissant,6,1.20
EOF
cat > src/slides.fodp <<'EOF'
<?xml version="1.0" encoding="UTF-8"?>
<office:document xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0"
 xmlns:draw="urn:oasis:names:tc:opendocument:xmlns:drawing:1.0"
 xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0"
 xmlns:svg="urn:oasis:names:tc:opendocument:xmlns:svg-compatible:1.0"
 office:version="1.2" office:mimetype="application/vnd.oasis.opendocument.presentation">
 <office:body><office:presentation>
  <draw:page draw:name="page1">
   <draw:frame svg:x="2cm" svg:y="2cm" svg:width="20cm" svg:height="3cm">
    <draw:text-box><text:p>Sample slide for sendseven-watch — café</text:p></draw:text-box>
   </draw:frame>
  </draw:page>
 </office:presentation></office:body>
</office:document>
EOF
# A private LibreOffice profile: no clash with a desktop session or a parallel run, and no
# preview thumbnails where the export filter honours the setting.
mkdir -p profile/user
cat > profile/user/registrymodifications.xcu <<'EOF'
<?xml version="1.0" encoding="UTF-8"?>
<oor:items xmlns:oor="http://openoffice.org/2001/registry" xmlns:xs="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
<item oor:path="/org.openoffice.Office.Common/Save/Document"><prop oor:name="GenerateThumbnail" oor:op="fuse"><value>false</value></prop></item>
</oor:items>
EOF
lo() { soffice "-env:UserInstallation=file://$WORK/profile" --headless "$@" --outdir lo >/dev/null 2>&1; }
lo --infilter="Text (encoded):UTF8" --convert-to doc src/document.txt
lo --infilter="Text (encoded):UTF8" --convert-to docx src/document.txt
lo --infilter="Text (encoded):UTF8" --convert-to odt src/document.txt           # unsupported
lo --infilter="CSV:44,34,76,1" --convert-to xls src/sheet.csv
lo --infilter="CSV:44,34,76,1" --convert-to xlsx src/sheet.csv
lo --convert-to ppt src/slides.fodp
lo --convert-to pptx src/slides.fodp
cp lo/document.doc lo/document.docx lo/document.odt "$OUT/"
cp lo/sheet.xls lo/sheet.xlsx lo/slides.ppt lo/slides.pptx "$OUT/"

cat > src/page.ps <<'EOF'
%!PS
/Helvetica findfont 14 scalefont setfont
72 720 moveto (Sample document for sendseven-watch) show
showpage
EOF
gs -q -dSAFER -dBATCH -dNOPAUSE -sDEVICE=pdfwrite -o "$OUT/document.pdf" src/page.ps

cp src/document.txt "$OUT/text_utf8.txt"
cp src/sheet.csv "$OUT/table.csv"
iconv -f UTF-8 -t CP1252 src/document.txt > "$OUT/text_cp1252.txt"   # a legacy Windows export
iconv -f UTF-8 -t UTF-16 src/document.txt > "$OUT/text_utf16.txt"    # with BOM (FF FE)
# Text whose first two bytes are "BM", the whole of filetype's BMP signature.
cat > "$OUT/cars.csv" <<'EOF'
BMW,320d,2019,diesel
Škoda,Octavia,2021,petrol
Citroën,C3,2018,petrol
EOF

# --- hostile and unsupported ----------------------------------------------------------------
mkdir -p zipsrc
printf 'Just a readme inside an archive.\n' > zipsrc/readme.txt
cp src/sheet.csv zipsrc/data.csv
touch -d @"$SOURCE_DATE_EPOCH" zipsrc/*
(cd zipsrc && zip -X -q -D "$OUT/archive.zip" readme.txt data.csv)
cp "$OUT/archive.zip" "$OUT/zip_renamed.docx"                      # CRAFTED: a zip named .docx
tar --sort=name --mtime=@"$SOURCE_DATE_EPOCH" --owner=0 --group=0 --numeric-owner \
    -C zipsrc -cf "$OUT/archive.tar" readme.txt data.csv

printf 'int main(void) { return 0; }\n' > src/true.c
gcc -Os -s -Wl,--build-id=none -Wl,-z,noseparate-code -o "$OUT/program.jpg" src/true.c       # ELF named .jpg
chmod 644 "$OUT/program.jpg"

# 4 KiB of noise named .txt. Seeded (AES-CTR keystream) rather than /dev/urandom so a rebuild
# gives the same bytes; the committed file is the reference either way.
head -c 4096 /dev/zero | openssl enc -aes-128-ctr -nosalt \
    -K 73656e64736576656e2d776174636821 -iv 00000000000000000000000000000000 > "$OUT/noise.txt"

: > "$OUT/empty.txt"
cp "$OUT/image.png" "$OUT/misnamed_png.pdf"          # valid PNG, wrong name: still an image
cp "$OUT/document.pdf" "$OUT/misnamed_pdf.jpg"       # valid PDF, wrong name: still a document

echo "corpus rebuilt in $OUT:"
ls -l "$OUT" | tail -n +2
du -sh "$OUT"
