"""The obvious alternative, for comparison: the API's own example, in a loop.

One file at a time, in order; for each: ``requests.post(.../attachments, files=...)`` with
the whole file read into memory, then ``requests.post(.../messages, json=...)``; no
``Session`` (a new connection per request), no concurrency. The content type comes from the
file name (``mimetypes``), as a script would do. For fairness with the daemon it also moves
each sent file into its inbox's ``sent/`` folder.

    python bench/baseline.py --url URL --token T --tenant-id TENANT INBOX...

Every inbox folder's name is its conversation id. Prints one JSON line at the end:
``{"sent": n, "failed": n, "seconds": s}``; exits 1 if any file failed.
"""

from __future__ import annotations

import argparse
import json
import mimetypes
import os
import sys
import time
from pathlib import Path

import requests

MESSAGE_TYPES = {"image": "image", "video": "video", "audio": "audio"}


def message_type_of(content_type: str) -> str:
    return MESSAGE_TYPES.get(content_type.split("/", 1)[0], "document")


def send_folder(url: str, headers: dict[str, str], inbox: Path) -> tuple[int, int]:
    sent = failed = 0
    (inbox / "sent").mkdir(exist_ok=True)
    files = [p for p in inbox.iterdir() if p.is_file() and not p.name.startswith(".")]
    files.sort(key=lambda p: (p.stat().st_mtime_ns, p.name))
    for path in files:
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        upload = requests.post(
            url + "/attachments",
            files={"file": (path.name, path.read_bytes(), content_type)},
            headers=headers,
            timeout=120,
        )
        if upload.status_code != 201:
            failed += 1
            print(f"upload {path.name}: {upload.status_code} {upload.text}", file=sys.stderr)
            continue
        message = requests.post(
            url + "/messages",
            json={
                "conversation_id": inbox.name,
                "message_type": message_type_of(content_type),
                "attachments": [upload.json()["id"]],
            },
            headers=headers,
            timeout=120,
        )
        if message.status_code != 201:
            failed += 1
            print(f"send {path.name}: {message.status_code} {message.text}", file=sys.stderr)
            continue
        os.rename(path, inbox / "sent" / path.name)
        sent += 1
    return sent, failed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--url", required=True, help="API base URL, e.g. http://127.0.0.1:8765/api/v1"
    )
    parser.add_argument("--token", required=True)
    parser.add_argument("--tenant-id", required=True)
    parser.add_argument("inboxes", nargs="+", type=Path)
    args = parser.parse_args()
    headers = {"Authorization": f"Bearer {args.token}", "X-Tenant-ID": args.tenant_id}
    started = time.monotonic()
    sent = failed = 0
    for inbox in args.inboxes:
        ok, bad = send_folder(args.url.rstrip("/"), headers, inbox)
        sent, failed = sent + ok, failed + bad
    seconds = time.monotonic() - started
    print(json.dumps({"sent": sent, "failed": failed, "seconds": round(seconds, 3)}))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
