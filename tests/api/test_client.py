"""The API client over real HTTP against the fake API: streamed uploads, typed errors."""

from __future__ import annotations

import hashlib
import http.client
import http.server
import subprocess
import sys
import textwrap
import threading
import urllib.parse
from pathlib import Path
from typing import ClassVar

import pytest

from daemon.api.body import MultipartBody
from daemon.api.client import ApiClient
from daemon.api.replies import parse_retry_after
from daemon.errors import (
    ApiMisconfigured,
    AuthError,
    RequestRejected,
    ServerBusy,
    TransportError,
)
from daemon.fake.api import FakeApi
from daemon.fake.rules import Faults
from tests.helpers import TENANT, TOKEN

MB = 1024 * 1024


def _client(api: FakeApi, token: str = TOKEN) -> ApiClient:
    return ApiClient(api.url, token, TENANT, connect_timeout=5, read_timeout=10)


def _pdf(tmp_path: Path, name: str = "scan.pdf", size: int = 2000) -> Path:
    path = tmp_path / name
    path.write_bytes(b"%PDF-1.4\n" + bytes(range(256)) * (size // 256))
    return path


def test_upload_then_send(api: FakeApi, tmp_path: Path) -> None:
    """An upload streams the file whole; the send carries the Idempotency-Key."""
    path = _pdf(tmp_path)
    client = _client(api)
    attachment = client.upload(path, "scan.pdf", "application/pdf")
    message = client.send("conv_1", "document", [attachment.id], "hello", "sw-key-1")
    client.close()
    [received] = api.attachments()
    assert received.sha256 == hashlib.sha256(path.read_bytes()).hexdigest() == attachment.sha256
    assert (received.filename, received.content_type) == ("scan.pdf", "application/pdf")
    [sent] = api.messages()
    assert sent.id == message.id
    assert (sent.conversation_id, sent.text, sent.idempotency_key) == (
        "conv_1",
        "hello",
        "sw-key-1",
    )
    assert sent.attachment_ids == (attachment.id,)


def test_a_session_reuses_its_connection(api: FakeApi, tmp_path: Path) -> None:
    """Several requests from one client come over one keep-alive connection."""
    path = _pdf(tmp_path)
    client = _client(api)
    for _ in range(3):
        client.upload(path, "scan.pdf", "application/pdf")
    client.close()
    assert len({record.peer for record in api.requests()}) == 1


def test_unusual_names_survive_the_multipart_header(api: FakeApi, tmp_path: Path) -> None:
    """Spaces, quotes and unicode in a name arrive as they were."""
    path = _pdf(tmp_path, 'Rechnung "März" 2026.pdf')
    client = _client(api)
    client.upload(path, path.name, "application/pdf")
    client.close()
    assert api.attachments()[0].filename in (path.name, path.name.replace('"', "%22"))


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (401, AuthError),
        (403, AuthError),
        (400, RequestRejected),
        (404, ApiMisconfigured),  # from /attachments: a wrong path, never a conversation
        (405, ApiMisconfigured),
        (413, RequestRejected),
        (415, RequestRejected),
        (500, ServerBusy),
        (502, ServerBusy),
        (503, ServerBusy),
        (429, ServerBusy),
    ],
)
def test_status_codes_become_typed_errors(
    api: FakeApi, tmp_path: Path, status: int, error: type[Exception]
) -> None:
    """Each error status maps to the error the pipeline acts on."""
    api.force(status)
    client = _client(api)
    with pytest.raises(error) as raised:
        client.upload(_pdf(tmp_path), "scan.pdf", "application/pdf")
    client.close()
    assert getattr(raised.value, "status", None) == status


def test_rejections_carry_their_sidecar_reason(api: FakeApi, tmp_path: Path) -> None:
    """404 → conversation_not_found, 415 → unsupported_type, 413 → too_large."""
    client = _client(api)
    attachment = client.upload(_pdf(tmp_path), "scan.pdf", "application/pdf")
    api_404 = FakeApi(token=TOKEN, tenant_id=TENANT, conversations={"known"}).start()
    other = _client(api_404)
    att = other.upload(_pdf(tmp_path), "scan.pdf", "application/pdf")
    with pytest.raises(RequestRejected) as raised:
        other.send("unknown", "document", [att.id], None, "k")
    assert raised.value.reason == "conversation_not_found"
    other.close()
    api_404.stop()
    with pytest.raises(RequestRejected) as bad_type:
        client.upload(_pdf(tmp_path), "x.bin", "application/x-msdownload")
    assert bad_type.value.reason == "unsupported_type"
    del attachment
    client.close()


def test_wrong_token_is_an_auth_error_without_the_token(api: FakeApi, tmp_path: Path) -> None:
    """401 is an AuthError whose text never contains the token."""
    client = _client(api, token="wrong-token-abc")
    with pytest.raises(AuthError) as raised:
        client.upload(_pdf(tmp_path), "scan.pdf", "application/pdf")
    client.close()
    assert raised.value.status == 401
    assert "wrong-token-abc" not in str(raised.value)


def test_429_carries_retry_after(api: FakeApi, tmp_path: Path) -> None:
    """Retry-After from a 429 reaches the retry policy."""
    api.faults = Faults(rate_limit_every=1, retry_after_s=7)
    client = _client(api)
    with pytest.raises(ServerBusy) as raised:
        client.upload(_pdf(tmp_path), "scan.pdf", "application/pdf")
    client.close()
    assert raised.value.retry_after == 7


def test_a_dropped_connection_is_a_transport_error(api: FakeApi, tmp_path: Path) -> None:
    """A connection closed without a reply is retried as a transport error."""
    api.faults = Faults(drop_rate=1.0)
    client = _client(api)
    with pytest.raises(TransportError):
        client.upload(_pdf(tmp_path), "scan.pdf", "application/pdf")
    client.close()


def test_nobody_listening_is_a_transport_error(tmp_path: Path) -> None:
    """Connection refused is transient, not a crash."""
    client = ApiClient("http://127.0.0.1:9/api/v1", TOKEN, TENANT, connect_timeout=1)
    with pytest.raises(TransportError):
        client.upload(_pdf(tmp_path), "scan.pdf", "application/pdf")
    client.close()


def test_retry_after_parses_seconds_and_dates() -> None:
    """Both forms of Retry-After are understood."""
    assert parse_retry_after("12") == 12
    assert parse_retry_after("Thu, 01 Jan 1970 00:01:40 GMT", now=40.0) == 60
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_the_body_has_the_announced_length(tmp_path: Path) -> None:
    """The streamed body is exactly Content-Length bytes and ends with the boundary."""
    path = _pdf(tmp_path, size=CHUNK_TEST_BYTES)
    with MultipartBody(path, "scan.pdf", "application/pdf", deadline=1e18) as body:
        chunks = []
        while chunk := body.read(8192):
            chunks.append(chunk)
        data = b"".join(chunks)
    assert len(data) == body.length
    assert data.endswith(f"--{body.boundary}--\r\n".encode())
    assert body.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


CHUNK_TEST_BYTES = 3 * MB + 17


def test_a_95_mb_upload_stays_small_in_memory(api: FakeApi, tmp_path: Path) -> None:
    """Uploading 95 MB costs the client process a small fraction of that in memory."""
    path = tmp_path / "big.pdf"
    with path.open("wb") as handle:
        handle.write(b"%PDF-1.7\n")
        handle.truncate(95 * MB)
    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from daemon.api import ApiClient
        client = ApiClient({api.url!r}, {TOKEN!r}, {TENANT!r})
        client.upload(Path({str(path)!r}), "big.pdf", "application/pdf")
        # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the forked parent
        # (the whole pytest process) across exec.
        status = Path("/proc/self/status").read_text()
        print(next(int(l.split()[1]) for l in status.splitlines() if l.startswith("VmHWM")) // 1024)
    """)
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    peak_mb = int(result.stdout.strip())
    assert api.attachments()[0].size == 95 * MB
    assert peak_mb < 60, f"peak RSS {peak_mb} MB for a 95 MB upload"


def test_an_upload_past_its_deadline_is_abandoned(tmp_path: Path) -> None:
    """The body refuses to go on once the upload's wall-clock deadline has passed."""
    from daemon.errors import UploadDeadline

    path = _pdf(tmp_path, size=CHUNK_TEST_BYTES)
    with (
        MultipartBody(path, "scan.pdf", "application/pdf", deadline=0.0) as body,
        pytest.raises(UploadDeadline),
    ):
        body.read(8192)


def test_a_slow_upload_ends_as_a_transport_error(api: FakeApi, tmp_path: Path) -> None:
    """A server that stalls past the read timeout is a (retryable) transport error."""
    api.faults = Faults(upload_latency_s=2.0)
    client = ApiClient(api.url, TOKEN, TENANT, connect_timeout=1, read_timeout=0.3)
    with pytest.raises(TransportError):
        client.upload(_pdf(tmp_path), "scan.pdf", "application/pdf")
    client.close()


class _ForwardingProxy(http.server.BaseHTTPRequestHandler):
    """A plain HTTP proxy: notes each request line and forwards the request."""

    seen: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        self.seen.append(self.requestline)
        target = urllib.parse.urlsplit(self.path)  # a proxy is asked for absolute URLs
        body = self.rfile.read(int(self.headers["Content-Length"]))
        upstream = http.client.HTTPConnection(target.hostname, target.port, timeout=10)
        headers = {k: v for k, v in self.headers.items() if k.lower() != "proxy-connection"}
        upstream.request("POST", target.path, body=body, headers=headers)
        reply = upstream.getresponse()
        data = reply.read()
        upstream.close()
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.getheader("Content-Type", "application/json"))
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_requests_go_through_the_proxy_of_the_environment(
    api: FakeApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTP_PROXY is honoured as requests would: absolute URLs to the proxy, same replies."""
    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ForwardingProxy)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        for name in ("NO_PROXY", "no_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.server_address[1]}")
        client = _client(api)
        attachment = client.upload(_pdf(tmp_path), "scan.pdf", "application/pdf")
        client.send("conv_1", "document", [attachment.id], None, "sw-key-proxy")
        client.close()
    finally:
        proxy.shutdown()
        proxy.server_close()
        thread.join()
    assert _ForwardingProxy.seen == [
        f"POST {api.url}/attachments HTTP/1.1",
        f"POST {api.url}/messages HTTP/1.1",
    ]
    assert [m.idempotency_key for m in api.messages()] == ["sw-key-proxy"]
