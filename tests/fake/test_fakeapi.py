"""The fake SendSeven API, spoken to with a real HTTP client over loopback."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from daemon.fake.api import FakeApi
from daemon.fake.rules import DROP, MB, Faults
from tests.helpers import COMMAND, Tls, clean_env

TOKEN = "test-token"
TENANT = "test-tenant"
CONVERSATION = "conv_1"
#: Seconds a client waits for the fake API; generous, never a timing assertion.
TIMEOUT_S = 30
PNG_HEAD = b"\x89PNG\r\n\x1a\n"
AUTH = {"Authorization": f"Bearer {TOKEN}", "X-Tenant-ID": TENANT}


@pytest.fixture
def api() -> Iterator[FakeApi]:
    with FakeApi(conversations={CONVERSATION}, scopeless_tokens={"read-only"}) as fake:
        yield fake
    assert fake.errors() == []


def upload(
    api: FakeApi,
    *,
    content: bytes = PNG_HEAD + b"pixels",
    content_type: str | None = "image/png",
    filename: str | None = "scan.png",
    headers: dict[str, str] | None = None,
    session: requests.Session | None = None,
) -> requests.Response:
    part: tuple[Any, ...] = (
        (filename, content)
        if content_type is None
        else (
            filename,
            content,
            content_type,
        )
    )
    post = session.post if session else requests.post
    return post(
        f"{api.url}/attachments", headers=headers or AUTH, files={"file": part}, timeout=TIMEOUT_S
    )


def send(
    api: FakeApi,
    attachment_id: str,
    message_type: str = "image",
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> requests.Response:
    body = {
        "conversation_id": CONVERSATION,
        "message_type": message_type,
        "attachments": [attachment_id],
        **extra,
    }
    return requests.post(
        f"{api.url}/messages", headers=headers or AUTH, json=body, timeout=TIMEOUT_S
    )


def multipart(boundary: bytes, content_type: bytes, chunks: Iterator[bytes]) -> Iterator[bytes]:
    """A multipart body yielded piece by piece, never built whole."""
    yield b"--" + boundary + b"\r\n"
    yield b'Content-Disposition: form-data; name="file"; filename="big.bin"\r\n'
    yield b"Content-Type: " + content_type + b"\r\n\r\n"
    yield from chunks
    yield b"\r\n--" + boundary + b"--\r\n"


def zeros(total: int, first: bytes = PNG_HEAD, chunk: int = 1 * MB) -> Iterator[bytes]:
    yield first
    left = total - len(first)
    while left > 0:
        yield bytes(min(chunk, left))
        left -= chunk


def test_upload_returns_attachment(api: FakeApi) -> None:
    """An accepted upload answers 201 with id, filename, content_type, file_size and url."""
    reply = upload(api)
    assert reply.status_code == 201
    body = reply.json()
    assert set(body) == {"id", "filename", "content_type", "file_size", "url"}
    assert body["id"].startswith("att_")
    assert (body["filename"], body["content_type"], body["file_size"]) == (
        "scan.png",
        "image/png",
        len(PNG_HEAD) + 6,
    )


def test_upload_records_sha256_size_and_head(api: FakeApi, tmp_path: Path) -> None:
    """The recorded sha256, size and head are those of the file that was uploaded."""
    path = tmp_path / "report.pdf"
    path.write_bytes(b"%PDF-1.7\n" + os.urandom(700_000))
    with path.open("rb") as handle:
        reply = requests.post(
            f"{api.url}/attachments",
            headers=AUTH,
            files={"file": (path.name, handle, "application/pdf")},
            timeout=TIMEOUT_S,
        )
    assert reply.status_code == 201
    [received] = api.attachments()
    data = path.read_bytes()
    assert received.id == reply.json()["id"]
    assert received.sha256 == hashlib.sha256(data).hexdigest()
    assert received.size == len(data)
    assert received.head == data[:64]
    assert received.headers["authorization"] == "Bearer ***"
    assert received.headers["x-tenant-id"] == TENANT


def test_chunked_upload_with_boundary_lookalikes(api: FakeApi) -> None:
    """A chunked upload whose content is full of near-delimiters is measured exactly."""
    boundary = b"b0undary"
    lookalike = b"\r\n--b0undarX\r\n--b0un\r\n-"
    content = b"%PDF-1.4\n" + (os.urandom(1000) + lookalike) * 600
    pieces = (content[i : i + 4093] for i in range(0, len(content), 4093))
    reply = requests.post(
        f"{api.url}/attachments",
        headers={**AUTH, "Content-Type": "multipart/form-data; boundary=b0undary"},
        data=multipart(boundary, b"application/pdf", pieces),
        timeout=TIMEOUT_S,
    )
    assert reply.status_code == 201
    [received] = api.attachments()
    assert received.headers["transfer-encoding"] == "chunked"
    assert received.sha256 == hashlib.sha256(content).hexdigest()
    assert received.size == len(content)


def test_non_ascii_filename_is_decoded(api: FakeApi) -> None:
    """A UTF-8 filename arrives as the same text."""
    reply = upload(api, filename="Übersicht März.png")
    assert reply.json()["filename"] == "Übersicht März.png"


def test_send_returns_message(api: FakeApi) -> None:
    """An accepted send answers 201 with the documented message object and is recorded."""
    attachment = upload(api).json()
    reply = send(api, attachment["id"], text="Scan from the front desk")
    assert reply.status_code == 201
    body = reply.json()
    assert body["id"].startswith("msg_")
    assert body["conversation_id"] == CONVERSATION
    assert body["direction"] == "outbound"
    assert body["message_type"] == "image"
    assert body["text"] == "Scan from the front desk"
    assert body["attachments"] == [attachment]
    assert body["status"] == "pending"
    assert body["created_at"].endswith("Z")
    [message] = api.messages()
    assert message.id == body["id"]
    assert message.attachment_ids == (attachment["id"],)
    assert message.attachments[0].filename == "scan.png"
    assert not message.duplicate


def test_upload_without_file_part_is_400(api: FakeApi) -> None:
    """An upload with no part named file is refused with 400."""
    reply = requests.post(
        f"{api.url}/attachments",
        headers=AUTH,
        files={"document": ("a.png", PNG_HEAD, "image/png")},
        timeout=TIMEOUT_S,
    )
    assert reply.status_code == 400
    assert reply.json()["message"] == "missing file part"


def test_upload_without_filename_is_400(api: FakeApi) -> None:
    """A file part without a filename is refused with 400."""
    reply = upload(api, filename=None)
    assert reply.status_code == 400
    assert set(reply.json()) == {"error", "message"}


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"conversation_id": CONVERSATION, "message_type": "image"},
        {"conversation_id": 7, "message_type": "image", "attachments": ["x"]},
        {"conversation_id": CONVERSATION, "message_type": "sticker", "attachments": ["x"]},
        {"conversation_id": CONVERSATION, "message_type": "image", "attachments": "x"},
        {"conversation_id": CONVERSATION, "message_type": "image", "attachments": []},
        {"conversation_id": CONVERSATION, "message_type": "image", "attachments": ["att_nope"]},
    ],
    ids=["empty", "no-attachments", "int-id", "bad-type", "str-list", "empty-list", "unknown"],
)
def test_send_with_missing_or_bad_fields_is_400(api: FakeApi, body: dict[str, object]) -> None:
    """A send with a missing, ill-typed or unknown field is refused with 400."""
    reply = requests.post(f"{api.url}/messages", headers=AUTH, json=body, timeout=TIMEOUT_S)
    assert reply.status_code == 400
    assert reply.json()["error"] == "bad_request"
    assert api.messages() == []


def test_send_with_mismatched_message_type_is_400(api: FakeApi) -> None:
    """A message_type that is not the attachment's family is refused with 400."""
    attachment_id = upload(api).json()["id"]
    assert send(api, attachment_id, message_type="document").status_code == 400


def test_bad_token_is_401(api: FakeApi) -> None:
    """A token the API does not know is refused with 401 on both endpoints."""
    bad = {"Authorization": "Bearer nope", "X-Tenant-ID": TENANT}
    for reply in (upload(api, headers=bad), send(api, "att_x", headers=bad)):
        assert reply.status_code == 401
        assert reply.json()["message"] == "Invalid or expired token"
    assert api.attachments() == []


def test_wrong_tenant_is_403(api: FakeApi) -> None:
    """A known token with another tenant id is refused with 403."""
    reply = upload(api, headers={**AUTH, "X-Tenant-ID": "someone-else"})
    assert reply.status_code == 403


def test_scopeless_token_is_403(api: FakeApi) -> None:
    """A token lacking the scope is refused with 403 naming the scope."""
    reply = upload(api, headers={**AUTH, "Authorization": "Bearer read-only"})
    assert reply.status_code == 403
    assert "attachments:create" in reply.json()["message"]


def test_unknown_conversation_is_404(api: FakeApi) -> None:
    """A send to a conversation that does not exist is refused with 404."""
    attachment_id = upload(api).json()["id"]
    reply = requests.post(
        f"{api.url}/messages",
        headers=AUTH,
        json={"conversation_id": "conv_x", "message_type": "image", "attachments": [attachment_id]},
        timeout=TIMEOUT_S,
    )
    assert reply.status_code == 404


def test_any_conversation_exists_by_default() -> None:
    """Without a conversation list every conversation id exists."""
    with FakeApi() as fake:
        attachment_id = upload(fake).json()["id"]
        assert send(fake, attachment_id).status_code == 201


def test_oversized_image_is_413_and_keeps_the_connection(api: FakeApi) -> None:
    """A 17 MB image part is refused with 413 after being drained; the connection is reused."""
    with requests.Session() as session:
        reply = session.post(
            f"{api.url}/attachments",
            headers={**AUTH, "Content-Type": "multipart/form-data; boundary=xyz"},
            data=multipart(b"xyz", b"image/png", zeros(17 * MB)),
            timeout=TIMEOUT_S,
        )
        assert reply.status_code == 413
        assert upload(api, session=session).status_code == 201
    first, second = api.requests()
    assert first.peer == second.peer
    assert [a.size for a in api.attachments()] == [len(PNG_HEAD) + 6]


def test_document_limit_is_larger_than_image_limit(api: FakeApi) -> None:
    """A 17 MB PDF is within the 100 MB document limit."""
    reply = requests.post(
        f"{api.url}/attachments",
        headers={**AUTH, "Content-Type": "multipart/form-data; boundary=xyz"},
        data=multipart(b"xyz", b"application/pdf", zeros(17 * MB, first=b"%PDF-1.4\n")),
        timeout=TIMEOUT_S,
    )
    assert reply.status_code == 201
    assert reply.json()["file_size"] == 17 * MB


@pytest.mark.parametrize("content_type", ["application/zip", "image/bmp", None])
def test_type_not_allowed_is_415(api: FakeApi, content_type: str | None) -> None:
    """A part whose content type is not allowed (or missing) is refused with 415."""
    assert upload(api, content_type=content_type).status_code == 415


def test_forced_statuses_answer_the_next_requests(api: FakeApi) -> None:
    """force_status answers the next requests in order, then the API behaves again."""
    api.faults.force_status = [503, 500]
    assert [upload(api).status_code for _ in range(3)] == [503, 500, 201]
    assert [r.status for r in api.requests()] == [503, 500, 201]


def test_error_rate_one_answers_only_5xx() -> None:
    """With error_rate 1.0 every request gets 500, 502 or 503 and nothing is stored."""
    with FakeApi(faults=Faults(error_rate=1.0, seed=7)) as fake:
        statuses = {upload(fake).status_code for _ in range(12)}
        assert statuses <= {500, 502, 503}
        assert fake.attachments() == []


def test_rate_limit_every_nth_is_429_with_retry_after(api: FakeApi) -> None:
    """Every Nth request is answered 429 with the configured Retry-After."""
    api.faults.rate_limit_every = 3
    api.faults.retry_after_s = 7
    replies = [upload(api) for _ in range(6)]
    assert [r.status_code for r in replies] == [201, 201, 429, 201, 201, 429]
    assert replies[2].headers["Retry-After"] == "7"


def test_dropped_connection_raises_connection_error(api: FakeApi) -> None:
    """With drop_rate 1.0 the client sees a closed connection and nothing is stored."""
    api.faults.drop_rate = 1.0
    with pytest.raises(requests.ConnectionError):
        upload(api)
    assert api.attachments() == []
    assert [r.status for r in api.requests()] == [0]


def test_forced_drop_hits_one_request_only(api: FakeApi) -> None:
    """A DROP in force_status closes one connection; the next request succeeds."""
    api.force(DROP)
    with pytest.raises(requests.ConnectionError):
        upload(api)
    assert upload(api).status_code == 201


def test_lost_reply_creates_the_message_but_answers_502(api: FakeApi) -> None:
    """With lose_reply_rate 1.0 the message is created and recorded, the client gets 502."""
    attachment_id = upload(api).json()["id"]
    api.faults.lose_reply_rate = 1.0
    key = {**AUTH, "Idempotency-Key": "file-1"}
    assert send(api, attachment_id, headers=key).status_code == 502
    [created] = api.wait_for_messages(1, timeout=5)
    api.faults.lose_reply_rate = 0.0
    retry = send(api, attachment_id, headers=key)
    assert retry.status_code == 201
    assert retry.json()["id"] == created.id
    assert [m.duplicate for m in api.messages()] == [False, True]


def test_repeated_idempotency_key_returns_the_same_message(api: FakeApi) -> None:
    """A repeated Idempotency-Key returns the original message, recorded as a duplicate."""
    attachment_id = upload(api).json()["id"]
    headers = {**AUTH, "Idempotency-Key": "k-1"}
    first, second = (send(api, attachment_id, headers=headers) for _ in range(2))
    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()
    original, repeat = api.messages()
    assert repeat.id == original.id
    assert (original.duplicate, repeat.duplicate) == (False, True)
    assert repeat.idempotency_key == "k-1"
    assert len(api.wait_for_messages(1, timeout=5)) == 1
    assert send(api, attachment_id, headers={**AUTH, "Idempotency-Key": "k-2"}).json()["id"] != (
        original.id
    )


def test_idempotency_can_be_ignored() -> None:
    """With honour_idempotency off, a repeated key creates a second message."""
    with FakeApi(honour_idempotency=False) as fake:
        attachment_id = upload(fake).json()["id"]
        headers = {**AUTH, "Idempotency-Key": "k-1"}
        ids = {send(fake, attachment_id, headers=headers).json()["id"] for _ in range(2)}
        assert len(ids) == 2
        assert not any(m.duplicate for m in fake.messages())


def test_accept_tokens_rotates_the_accepted_token(api: FakeApi) -> None:
    """accept_tokens replaces the accepted set: the new token works, the old one is 401."""
    rotated = {**AUTH, "Authorization": "Bearer rotated"}
    assert upload(api, headers=rotated).status_code == 401
    api.accept_tokens("rotated")
    assert upload(api, headers=rotated).status_code == 201
    assert upload(api).status_code == 401


def test_session_reuses_one_connection(api: FakeApi) -> None:
    """A requests Session sends several requests over one kept-alive connection."""
    with requests.Session() as session:
        session.headers.update(AUTH)
        attachment_id = upload(api, session=session).json()["id"]
        body = {"conversation_id": CONVERSATION, "message_type": "image"}
        for _ in range(3):
            reply = session.post(
                f"{api.url}/messages",
                json={**body, "attachments": [attachment_id]},
                timeout=TIMEOUT_S,
            )
            assert reply.status_code == 201
    records = api.requests()
    assert len(records) == 4
    assert len({r.peer for r in records}) == 1


def test_unknown_path_is_404_and_wrong_method_is_405(api: FakeApi) -> None:
    """An unknown path answers 404 and a GET on an endpoint 405, both as JSON errors."""
    missing = requests.post(f"{api.url}/stickers", headers=AUTH, json={}, timeout=TIMEOUT_S)
    wrong = requests.get(f"{api.url}/messages", headers=AUTH, timeout=TIMEOUT_S)
    assert missing.status_code == 404
    assert wrong.status_code == 405
    assert wrong.headers["Allow"] == "POST"
    assert set(wrong.json()) == {"error", "message"}


def test_health_answers_ok_and_is_not_recorded(api: FakeApi) -> None:
    """GET /health answers 200 {"status": "ok"} without auth, faults or a record."""
    api.faults.force_status = [503]
    reply = requests.get(f"{api.url}/health", timeout=TIMEOUT_S)
    assert (reply.status_code, reply.json()) == (200, {"status": "ok"})
    assert api.requests() == []
    assert api.faults.force_status == [503]


def test_wait_for_messages_returns_what_there_is_on_timeout(api: FakeApi) -> None:
    """wait_for_messages gives up after the timeout and returns the messages so far."""
    assert api.wait_for_messages(1, timeout=0.01) == []


def test_stop_closes_idle_kept_alive_connections() -> None:
    """stop() returns and leaves no handler thread while a client holds a connection open."""
    session = requests.Session()
    fake = FakeApi().start()
    try:
        assert upload(fake, session=session).status_code == 201
        fake.stop()
        alive = [t for t in threading.enumerate() if "process_request" in t.name]
        assert alive == []
    finally:
        session.close()
        fake.stop()


def test_faults_reject_out_of_range_values() -> None:
    """Rates outside 0..1 and negative delays are refused when the knobs are built."""
    with pytest.raises(ValueError, match="error_rate"):
        Faults(error_rate=1.5)
    with pytest.raises(ValueError, match="latency_s"):
        Faults(latency_s=-1)


def test_command_serves_until_sigterm() -> None:
    """`python -m daemon.fake` prints its URL, serves, and exits 0 on SIGTERM."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "daemon.fake",
            "--port",
            "0",
            "--token",
            "cli-token",
            "--tenant-id",
            TENANT,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("fake SendSeven API listening on http://127.0.0.1:")
        url = line.rsplit(" ", 1)[1].strip()
        assert requests.get(f"{url}/health", timeout=TIMEOUT_S).status_code == 200
        reply = requests.post(
            f"{url}/attachments",
            headers={"Authorization": "Bearer cli-token", "X-Tenant-ID": TENANT},
            files={"file": ("a.png", PNG_HEAD, "image/png")},
            timeout=TIMEOUT_S,
        )
        assert reply.status_code == 201
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        process.kill()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()


# -- answering like a deployment mistake -----------------------------------------------


def test_outside_its_prefix_it_answers_a_web_servers_html_404() -> None:
    """A path outside the served prefix gets an HTML 404, never the API's JSON."""
    with FakeApi(prefix="/sendseven/v2") as server:
        assert server.url == f"{server.origin}/sendseven/v2"
        outside = requests.post(f"{server.origin}/api/v1/messages", json={}, timeout=TIMEOUT_S)
        inside = requests.post(f"{server.url}/messages", headers=AUTH, json={}, timeout=TIMEOUT_S)
    assert outside.status_code == 404
    assert outside.headers["Content-Type"] == "text/html"
    assert "<title>404 Not Found</title>" in outside.text
    assert inside.status_code == 400
    assert set(inside.json()) == {"error", "message"}


def test_redirect_mode_points_every_request_elsewhere(api: FakeApi) -> None:
    """redirect_to answers every request with the redirect status and a Location."""
    api.faults.redirect_to = "https://api.example.org"
    api.faults.redirect_status = 308
    reply = requests.post(
        f"{api.url}/attachments", headers=AUTH, allow_redirects=False, timeout=TIMEOUT_S
    )
    assert reply.status_code == 308
    assert reply.headers["Location"] == "https://api.example.org/api/v1/attachments"
    assert api.attachments() == []


@pytest.mark.parametrize("status", [502, 404, 405])
def test_html_status_answers_every_request_with_a_page(api: FakeApi, status: int) -> None:
    """html_status plays a proxy's or web server's error page (text/html, no JSON)."""
    api.faults.html_status = status
    reply = requests.post(f"{api.url}/messages", headers=AUTH, json={}, timeout=TIMEOUT_S)
    assert reply.status_code == status
    assert reply.headers["Content-Type"] == "text/html"
    assert reply.text.startswith("<html>")


def test_force_on_one_endpoint_leaves_the_other_alone(api: FakeApi) -> None:
    """force(..., endpoint="send") answers only the next /messages with that status."""
    api.force(404, endpoint="send")
    attachment = upload(api)
    assert attachment.status_code == 201
    assert send(api, attachment.json()["id"]).status_code == 404
    assert send(api, attachment.json()["id"]).status_code == 201


def test_faults_reject_bad_redirect_and_html_statuses() -> None:
    """A redirect status must be a redirect, an HTML status an error."""
    with pytest.raises(ValueError, match="redirect_status"):
        Faults(redirect_status=200)
    with pytest.raises(ValueError, match="html_status"):
        Faults(html_status=200)


def test_command_serves_https_with_the_given_certificate(tmp_path: Path) -> None:
    """fake-api --tls-cert/--tls-key serves HTTPS that a client trusting the CA accepts."""
    tls = Tls(tmp_path / "tls")
    process = subprocess.Popen(
        [
            COMMAND,
            "fake-api",
            "--port",
            "0",
            "--tls-cert",
            str(tls.cert_pem),
            "--tls-key",
            str(tls.key_pem),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=clean_env(),
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        url = line.rsplit(" ", 1)[-1].strip()
        assert url.startswith("https://127.0.0.1:")
        reply = requests.get(f"{url}/health", verify=str(tls.ca_pem), timeout=TIMEOUT_S)
        assert reply.json() == {"status": "ok"}
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(f"{url}/health", timeout=TIMEOUT_S)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(10)
        if process.stdout is not None:
            process.stdout.close()
