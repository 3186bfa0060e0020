"""``demo``: the fake API plus the daemon on a temporary spool, with sample files.

The daemon runs as a real subprocess (``python -m daemon run``) against the bundled fake
API; this module reads its JSON log lines and tells a human what happened and where to look.
The samples are made here (a PNG, PDFs, a text file, and a BMP that is refused), so the demo
needs nothing but the installed package.
"""

from __future__ import annotations

import json
import signal
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path
from typing import Any

from daemon.fake.api import FakeApi

DEMO_TOKEN = "demo-token"  # noqa: S105 - the fake API's own token, not a secret
DEMO_TENANT = "demo-tenant"
CONVERSATIONS = {"front-desk": "conv_front_desk", "invoices": "conv_invoices"}


def _png(width: int = 48, height: int = 32) -> bytes:
    raw = b"".join(
        b"\x00" + b"".join(bytes((x * 5 % 256, y * 8 % 256, 160)) for x in range(width))
        for y in range(height)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def _pdf(text: str) -> bytes:
    stream = f"BT /F1 18 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def _bmp(width: int = 4, height: int = 4) -> bytes:
    pixels = b"\x00\x00\xff" * width * height
    header = struct.pack("<2sIHHI", b"BM", 54 + len(pixels), 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, len(pixels), 0, 0, 0, 0)
    return header + info + pixels


def sample_files() -> dict[str, dict[str, bytes]]:
    """Per inbox folder: file name → bytes."""
    return {
        "front-desk": {
            "scan-0001.pdf": _pdf("Scanned at the front desk"),
            "visitor-badge.png": _png(),
            "notes.txt": "Notes from the front desk: café at 10:00.\n".encode(),
        },
        "invoices": {
            "invoice-2026-0042.pdf": _pdf("Invoice 2026-0042"),
            "old-logo.bmp": _bmp(),  # BMP is not an allowed type: ends in failed/
        },
    }


def _config(root: Path, url: str) -> Path:
    config = root / "config.yaml"
    config.write_text(
        "# written by `sendseven-watch demo`\n"
        f"api:\n  url: {url}\n  token: {DEMO_TOKEN}\n  tenant_id: {DEMO_TENANT}\n"
        f"spool: {root / 'spool'}\n"
        "inboxes: []\n"
        'text: "{filename} ({message_type}, {size} bytes)"\n'
        "settle_seconds: 1\n"
        "rescan_interval: 30\n"
        "retry:\n  initial_delay: 0.2\n  max_delay: 2\n",
        encoding="utf-8",
    )
    return config


def _describe(line: dict[str, Any]) -> str | None:
    event = line.get("event")
    if event == "file_sent":
        return (
            f"  sent    {line['inbox']}/{line['file']} → {line['conversation_id']} as "
            f"{line['message_type']} ({line['content_type']}), message {line['message_id']}"
        )
    if event == "file_failed":
        return (
            f"  failed  {line['inbox']}/{line['file']}: {line['reason']}"
            f" — {line.get('detail') or ''}"
        )
    if event == "daemon_started":
        return f"  daemon watching {len(line.get('inboxes', []))} inboxes ({line.get('observer')})"
    if event in ("retry_scheduled", "auth_failed"):
        return f"  {event}: {line.get('file') or ''} {line.get('status') or line.get('error')}"
    return None


def run_demo(*, once: bool, folder: Path | None, log_level: str | None) -> int:
    """Run the demo; returns the exit code."""
    root = Path(tempfile.mkdtemp(prefix="sendseven-demo-")) if folder is None else folder
    spool = root / "spool"
    for name in CONVERSATIONS.values():
        (spool / name).mkdir(parents=True, exist_ok=True)
    samples = sample_files()
    with FakeApi(
        token=DEMO_TOKEN, tenant_id=DEMO_TENANT, conversations=set(CONVERSATIONS.values())
    ) as api:
        config = _config(root, api.url)
        print(f"fake SendSeven API on {api.url}")
        print(f"spool {spool}  (config {config})")
        expected = sum(len(files) for files in samples.values())
        if once:
            _drop(spool, samples)
        command = [sys.executable, "-m", "daemon", "run", "-c", str(config)]
        if log_level:
            command += ["--log-level", log_level]
        if once:
            command.append("--once")
        child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=root)
        if child.stdout is None:
            raise RuntimeError("no pipe to the daemon")
        outcomes = 0
        try:
            for raw in child.stdout:
                try:
                    line = json.loads(raw)
                except ValueError:
                    print(raw, end="")
                    continue
                if line.get("event") == "daemon_started" and not once:
                    _drop(spool, samples)
                text = _describe(line)
                if text:
                    print(text, flush=True)
                if line.get("event") in ("file_sent", "file_failed"):
                    outcomes += 1
                    if outcomes == expected:
                        _where_to_look(spool, len(api.messages()), once)
        except KeyboardInterrupt:
            child.send_signal(signal.SIGINT)
        return child.wait()


def _drop(spool: Path, samples: dict[str, dict[str, bytes]]) -> None:
    for folder, files in samples.items():
        inbox = spool / CONVERSATIONS[folder]
        for name, data in files.items():
            part = inbox / f"{name}.part"
            part.write_bytes(data)
            part.rename(inbox / name)  # how a careful script drops a file


def _where_to_look(spool: Path, messages: int, once: bool) -> None:
    print(f"\nthe fake API received {messages} messages. Look at:")
    for inbox in sorted(p for p in spool.iterdir() if not p.name.startswith(".")):
        print(f"  {inbox}/sent/    {inbox}/failed/  (each failure has a .error.json)")
    if not once:
        print("\nstill watching: drop more files into a folder above; Ctrl-C to stop.")
