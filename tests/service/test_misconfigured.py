"""Deployment mistakes, through the installed command against the fake API: a redirect, a
wrong path, an untrusted certificate and a web page where ``/messages`` should be hold
every file (nothing failed, one ``api_misconfigured`` line, ``/healthz`` 503) until the API
answers properly or a reload fixes them, and ``run --once`` exits 2 with the files kept;
a proxy's HTML 502 page is retried as a busy server; the API's own 404 from ``/messages``
fails the file as ``conversation_not_found``."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from daemon.fake.api import FakeApi
from daemon.fake.rules import Faults
from tests.helpers import (
    TENANT,
    TOKEN,
    Daemon,
    Tls,
    events,
    log_lines,
    run_cli,
    wait_until,
    write_config,
)

#: The files each test drops: two conversations, so that more than one lane is held.
FILES = {"conv_a": ("a1.pdf", "a2.pdf"), "conv_b": ("b1.pdf",)}
COUNT = sum(len(names) for names in FILES.values())
#: A backoff long enough that only a reload can explain a prompt resumption, in seconds.
SLOW_RETRY = {"initial_delay": 30, "max_delay": 60, "give_up_after": 600}
#: Events that must never appear while the files are held.
NOT_WHILE_HELD = ("file_failed", "file_error", "retry_scheduled", "file_sent")


# -- helpers --------------------------------------------------------------------------


def free_port() -> int:
    """A loopback port nobody listens on (bound to port 0, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def metered_config(folder: Path, url: str, **overrides: Any) -> tuple[Path, str]:
    """A config serving /metrics and /healthz on a free loopback port: (path, base URL)."""
    port = free_port()
    config = write_config(folder, url, metrics={"listen": f"127.0.0.1:{port}"}, **overrides)
    return config, f"http://127.0.0.1:{port}"


def drop_files(folder: Path) -> None:
    """FILES as small PDFs, each written aside and renamed in."""
    for conversation, names in FILES.items():
        inbox = folder / "spool" / conversation
        inbox.mkdir(parents=True, exist_ok=True)
        for name in names:
            temp = inbox / f".{name}.part"
            temp.write_bytes(b"%PDF-1.4\n" + name.encode())
            temp.rename(inbox / name)


def start(config: Path, daemons: list[Daemon]) -> Daemon:
    daemon = Daemon(config)
    daemons.append(daemon)
    daemon.wait_event("daemon_started")
    return daemon


def status_totals(config: Path) -> dict[str, int]:
    """``status --json`` summed over the inboxes: waiting, in_progress, sent, failed."""
    result = run_cli("status", "-c", str(config), "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)["inboxes"]
    keys = ("waiting", "in_progress", "sent", "failed")
    return {key: sum(row[key] for row in rows) for key in keys}


def inbox_status(config: Path, inbox: str) -> dict[str, Any]:
    result = run_cli("status", "-c", str(config), "--json")
    assert result.returncode == 0, result.stderr
    [row] = [row for row in json.loads(result.stdout)["inboxes"] if row["inbox"] == inbox]
    found: dict[str, Any] = row
    return found


def health(base: str) -> tuple[int, dict[str, Any]]:
    response = requests.get(f"{base}/healthz", timeout=10)
    body: dict[str, Any] = response.json()
    return response.status_code, body


def gauge(base: str, name: str) -> float:
    """One unlabelled gauge of /metrics."""
    text = requests.get(f"{base}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return sample.value
    raise AssertionError(f"{name} not exported")


def requests_to(base: str, endpoint: str) -> float:
    """API requests the daemon made to ``endpoint``, whatever their status."""
    text = requests.get(f"{base}/metrics", timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "sendseven_api_requests_total" and sample.labels["endpoint"] == endpoint
    )


def check_line(line: dict[str, Any], expected: dict[str, Any], hint: str) -> None:
    """An api_misconfigured line: the fields, the hint, no token."""
    assert line["level"] == "error"
    for key, value in expected.items():
        assert line[key] == value, (key, line)
    assert "status" in line or "error" in line
    assert hint in line["hint"], line
    assert TOKEN not in json.dumps(line)


def assert_held(
    daemon: Daemon,
    base: str,
    config: Path,
    expected: dict[str, Any],
    hint: str,
    *,
    probes: int = 4,
) -> dict[str, Any]:
    """Every file held: one api_misconfigured line however many probes, nothing failed,
    /healthz 503 with the reason, sendseven_api_ok 0, ``status`` shows them in progress."""
    [line] = daemon.wait_event("api_misconfigured")
    check_line(line, expected, hint)
    endpoint = expected["endpoint"]
    wait_until(lambda: requests_to(base, endpoint) >= probes, timeout=30)
    assert len(events(daemon.lines, "api_misconfigured")) == 1
    for name in NOT_WHILE_HELD:
        assert events(daemon.lines, name) == [], name
    code, body = health(base)
    assert code == 503
    assert body["api_ok"] is False
    assert body["credentials_accepted"] is True
    assert body["reason"].startswith("api_misconfigured: ")
    assert line["hint"] in body["reason"]
    assert gauge(base, "sendseven_api_ok") == 0
    assert gauge(base, "sendseven_auth_ok") == 1
    totals = status_totals(config)
    assert totals == {"waiting": 0, "in_progress": COUNT, "sent": 0, "failed": 0}
    return line


def assert_resumed(daemon: Daemon, base: str, config: Path) -> None:
    """Every held file sent, nothing failed, api_restored said once, /healthz 200."""
    daemon.wait_event("file_sent", COUNT)
    daemon.wait_event("api_restored")
    assert events(daemon.lines, "file_failed") == []
    assert events(daemon.lines, "file_error") == []
    assert len(events(daemon.lines, "api_restored")) == 1
    wait_until(lambda: health(base)[0] == 200)
    assert health(base)[1]["api_ok"] is True
    assert gauge(base, "sendseven_api_ok") == 1
    assert status_totals(config) == {"waiting": 0, "in_progress": 0, "sent": COUNT, "failed": 0}
    assert daemon.stop() == 0


def run_once(config: Path) -> tuple[int, list[dict[str, Any]]]:
    result = run_cli("run", "-c", str(config), "--once", timeout=120)
    assert TOKEN not in result.stdout + result.stderr
    return result.returncode, log_lines(result.stdout)


def assert_held_once(config: Path, expected: dict[str, Any], hint: str) -> dict[str, Any]:
    """``run --once``: exit 2, one api_misconfigured line, no file failed or sent, every
    file still there for the next run (claimed, or not yet taken)."""
    code, lines = run_once(config)
    assert code == 2, lines
    [line] = events(lines, "api_misconfigured")
    check_line(line, expected, hint)
    for name in ("file_failed", "file_error", "file_sent"):
        assert events(lines, name) == [], name
    totals = status_totals(config)
    assert totals["waiting"] + totals["in_progress"] == COUNT
    assert totals["in_progress"] >= 1
    assert (totals["sent"], totals["failed"]) == (0, 0)
    return line


def assert_sent_once(config: Path) -> None:
    """The next ``run --once``, with the mistake fixed: every file sent, exit 0."""
    code, lines = run_once(config)
    assert code == 0, lines
    assert len(events(lines, "file_sent")) == COUNT
    assert events(lines, "api_misconfigured") == []
    assert status_totals(config) == {"waiting": 0, "in_progress": 0, "sent": COUNT, "failed": 0}


class PageForMessages:
    """A reverse proxy in front of the fake API that routes only ``/attachments``: while
    ``blocking`` is set, ``/messages`` gets the web server's own HTML 404 page."""

    def __init__(self, upstream: FakeApi) -> None:
        self.blocking = threading.Event()
        self.blocking.set()
        target = urlsplit(upstream.origin)
        host, port = target.hostname or "127.0.0.1", target.port or 80
        blocking = self.blocking

        class Front(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # the stdlib names it so
                """Quiet."""

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if blocking.is_set() and self.path.rstrip("/").endswith("/messages"):
                    page = b"<html><head><title>404 Not Found</title></head><body>nginx</body>"
                    self._answer(404, page, [("Content-Type", "text/html")])
                    return
                upstream_call = http.client.HTTPConnection(host, port, timeout=30)
                try:
                    skip = {"host", "connection"}
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
                    upstream_call.request("POST", self.path, body=body, headers=headers)
                    reply = upstream_call.getresponse()
                    data = reply.read()
                    kept = [(k, v) for k, v in reply.getheaders() if k.lower() == "content-type"]
                    self._answer(reply.status, data, kept)
                finally:
                    upstream_call.close()

            def _answer(self, status: int, data: bytes, headers: list[tuple[str, str]]) -> None:
                self.send_response(status)
                for key, value in headers:
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Front)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}{upstream.prefix}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> PageForMessages:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


@pytest.fixture
def front(api: FakeApi) -> Iterator[PageForMessages]:
    with PageForMessages(api) as proxy:
        yield proxy


@pytest.fixture
def tls_api(tmp_path: Path) -> Iterator[tuple[FakeApi, Tls]]:
    """The fake API over HTTPS, its certificate signed by a private CA nobody trusts."""
    tls = Tls(tmp_path / "tls")
    with FakeApi(token=TOKEN, tenant_id=TENANT, tls=tls.server) as server:
        yield server, tls


# -- a redirect: held until the API answers properly again ------------------------------

REDIRECT_TO = "https://api.example.invalid"
REDIRECT_HINT = f"the server redirects to {REDIRECT_TO}/api/v1/attachments: set api.url to"


def test_a_redirect_holds_every_file_until_the_api_answers_again(
    api: FakeApi, tmp_path: Path, daemons: list[Daemon]
) -> None:
    """A 301 from /attachments: held, said once, /healthz 503; when the redirect goes
    away the prober finds it out by itself and every file is sent, nothing failed."""
    api.faults = Faults(redirect_to=REDIRECT_TO)
    config, base = metered_config(tmp_path, api.url)
    daemon = start(config, daemons)
    drop_files(tmp_path)
    expected = {"endpoint": "attachments", "url": f"{api.url}/attachments", "status": 301}
    assert_held(daemon, base, config, expected, REDIRECT_HINT)
    api.faults = Faults()
    assert_resumed(daemon, base, config)


def test_run_once_exits_2_on_a_redirect_and_keeps_the_files(api: FakeApi, tmp_path: Path) -> None:
    """--once: a redirect stops the run with exit 2, the files wait for the next run."""
    api.faults = Faults(redirect_to=REDIRECT_TO)
    config = write_config(tmp_path, api.url)
    drop_files(tmp_path)
    expected = {"endpoint": "attachments", "url": f"{api.url}/attachments", "status": 301}
    assert_held_once(config, expected, REDIRECT_HINT)
    api.faults = Faults()
    assert_sent_once(config)


# -- a wrong path: held until a reload fixes api.url ------------------------------------

WRONG_PATH_HINT = "api.url should end in /api/v1"


def test_a_url_without_its_path_holds_every_file_until_a_reload_fixes_it(
    api: FakeApi, tmp_path: Path, daemons: list[Daemon]
) -> None:
    """api.url without /api/v1: the web server's 404 from /attachments holds every file;
    a reload with the right URL sends them at once (not after the prober's backoff)."""
    config, base = metered_config(tmp_path, api.origin, retry=SLOW_RETRY)
    daemon = start(config, daemons)
    drop_files(tmp_path)
    expected = {"endpoint": "attachments", "url": f"{api.origin}/attachments", "status": 404}
    assert_held(daemon, base, config, expected, WRONG_PATH_HINT, probes=1)
    listen = {"listen": base.removeprefix("http://")}
    write_config(tmp_path, api.url, metrics=listen, retry=SLOW_RETRY)
    daemon.signal(signal.SIGHUP)
    daemon.wait_event("config_reloaded")
    daemon.wait_event("file_sent", COUNT, timeout=10)  # the backoff alone: 15 s at least
    assert_resumed(daemon, base, config)


def test_run_once_exits_2_on_a_wrong_path_and_keeps_the_files(api: FakeApi, tmp_path: Path) -> None:
    """--once with api.url without /api/v1: exit 2, nothing failed; fixed, all sent."""
    config = write_config(tmp_path, api.origin)
    drop_files(tmp_path)
    expected = {"endpoint": "attachments", "url": f"{api.origin}/attachments", "status": 404}
    assert_held_once(config, expected, WRONG_PATH_HINT)
    write_config(tmp_path, api.url)
    assert_sent_once(config)


# -- a proxy's HTML 502 page: a busy server, retried, never held -----------------------


def test_a_proxys_502_page_is_retried_not_held(
    api: FakeApi, tmp_path: Path, daemons: list[Daemon]
) -> None:
    """An HTML 502 page is what a proxy says while the API restarts: retry_scheduled,
    /healthz stays 200, ``status`` says retrying; sent once the API is back."""
    api.faults = Faults(html_status=502)
    config, base = metered_config(tmp_path, api.url)
    daemon = start(config, daemons)
    drop_files(tmp_path)
    [retry, *_] = daemon.wait_event("retry_scheduled", COUNT * 2)
    assert retry["status"] == 502
    assert events(daemon.lines, "api_misconfigured") == []
    code, body = health(base)
    assert (code, body["api_ok"]) == (200, True)
    assert gauge(base, "sendseven_api_ok") == 1
    row = inbox_status(config, "conv_a")
    assert row["in_progress"] == 2 and row["failed"] == 0
    assert row["last_error"]["retrying"] is True
    assert row["last_error"]["status"] == 502
    assert "502 Bad Gateway" in row["last_error"]["detail"]
    api.faults = Faults()
    daemon.wait_event("file_sent", COUNT)
    assert events(daemon.lines, "file_failed") == []
    assert events(daemon.lines, "api_restored") == []  # nothing was held
    assert daemon.stop() == 0


def test_run_once_retries_a_proxys_502_page_until_give_up_after(
    api: FakeApi, tmp_path: Path
) -> None:
    """--once: a 502 page is charged as a busy server (the files fail as
    retries_exhausted after give_up_after, exit 0), never held as a deployment mistake."""
    api.faults = Faults(html_status=502)
    config = write_config(tmp_path, api.url, retry={"give_up_after": 1})
    drop_files(tmp_path)
    code, lines = run_once(config)
    assert code == 0, lines
    assert events(lines, "api_misconfigured") == []
    assert events(lines, "retry_scheduled")
    failed = events(lines, "file_failed")
    assert len(failed) == COUNT
    assert {(line["reason"], line["status"]) for line in failed} == {("retries_exhausted", 502)}
    assert status_totals(config) == {"waiting": 0, "in_progress": 0, "sent": 0, "failed": COUNT}


# -- 404 from /messages: the API's JSON fails the file, a web page holds it -------------


def test_the_apis_own_404_from_messages_fails_only_that_file(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    """A 404 with the API's JSON error is conversation_not_found, for that file alone:
    nothing held, /healthz 200, ``status`` names the reason."""
    with FakeApi(token=TOKEN, tenant_id=TENANT, conversations={"conv_a"}) as api:
        config, base = metered_config(tmp_path, api.url)
        daemon = start(config, daemons)
        drop_files(tmp_path)
        daemon.wait_event("file_sent", 2)
        [failed] = daemon.wait_event("file_failed")
        assert (failed["file"], failed["reason"], failed["status"]) == (
            "b1.pdf",
            "conversation_not_found",
            404,
        )
        assert events(daemon.lines, "api_misconfigured") == []
        code, body = health(base)
        assert (code, body["api_ok"]) == (200, True)
        row = inbox_status(config, "conv_b")
        assert (row["failed"], row["in_progress"]) == (1, 0)
        assert row["last_error"]["reason"] == "conversation_not_found"
        assert daemon.stop() == 0


def test_run_once_fails_a_file_on_the_apis_own_404_from_messages(tmp_path: Path) -> None:
    """--once: the API's JSON 404 fails that file and the run ends normally (exit 0)."""
    with FakeApi(token=TOKEN, tenant_id=TENANT, conversations={"conv_a"}) as api:
        config = write_config(tmp_path, api.url)
        drop_files(tmp_path)
        code, lines = run_once(config)
    assert code == 0, lines
    assert events(lines, "api_misconfigured") == []
    [failed] = events(lines, "file_failed")
    assert failed["reason"] == "conversation_not_found"
    assert len(events(lines, "file_sent")) == 2
    assert status_totals(config) == {"waiting": 0, "in_progress": 0, "sent": 2, "failed": 1}


PAGE_HINT = "not the API's JSON error"


def test_a_web_pages_404_from_messages_holds_every_file(
    api: FakeApi, front: PageForMessages, tmp_path: Path, daemons: list[Daemon]
) -> None:
    """A 404 page from /messages (a proxy that routes only part of the API) is no
    conversation's fault: the uploaded files are held, then sent once it routes both."""
    config, base = metered_config(tmp_path, front.url)
    daemon = start(config, daemons)
    drop_files(tmp_path)
    expected = {"endpoint": "messages", "url": f"{front.url}/messages", "status": 404}
    assert_held(daemon, base, config, expected, PAGE_HINT)
    assert api.attachments() and api.messages() == []  # uploads behind the gate wait too
    front.blocking.clear()
    assert_resumed(daemon, base, config)
    names = sorted(attachment.filename for attachment in api.attachments())
    assert names == sorted(n for ns in FILES.values() for n in ns)  # none uploaded twice


def test_run_once_exits_2_on_a_web_pages_404_from_messages(
    api: FakeApi, front: PageForMessages, tmp_path: Path
) -> None:
    """--once: a 404 page from /messages exits 2; the next run sends the files it kept,
    without uploading them again."""
    config = write_config(tmp_path, front.url)
    drop_files(tmp_path)
    expected = {"endpoint": "messages", "url": f"{front.url}/messages", "status": 404}
    assert_held_once(config, expected, PAGE_HINT)
    assert api.messages() == []
    assert api.attachments()
    write_config(tmp_path, api.url)
    assert_sent_once(config)
    names = sorted(attachment.filename for attachment in api.attachments())
    assert names == sorted(n for ns in FILES.values() for n in ns)  # none uploaded twice


# -- TLS: an untrusted certificate is held; a reload with api.ca_bundle sends -----------

TLS_HINT = "set api.ca_bundle to that CA's PEM file"


def test_an_untrusted_certificate_holds_every_file_until_a_reload_brings_the_ca(
    tls_api: tuple[FakeApi, Tls], tmp_path: Path, daemons: list[Daemon]
) -> None:
    """HTTPS with a private CA the daemon does not trust: held with api_misconfigured;
    a SIGHUP with the right api.ca_bundle sends every file at once, nothing failed."""
    api, tls = tls_api
    config, base = metered_config(tmp_path, api.url, retry=SLOW_RETRY)
    daemon = start(config, daemons)
    drop_files(tmp_path)
    expected = {"endpoint": "attachments", "url": f"{api.url}/attachments"}
    line = assert_held(daemon, base, config, expected, TLS_HINT, probes=1)
    assert line["error"].startswith("certificate: ")
    assert "status" not in line
    assert api.attachments() == []
    listen = {"listen": base.removeprefix("http://")}
    trusted = {"ca_bundle": str(tls.ca_pem)}
    write_config(tmp_path, api.url, metrics=listen, retry=SLOW_RETRY, api=trusted)
    daemon.signal(signal.SIGHUP)
    daemon.wait_event("config_reloaded")
    daemon.wait_event("file_sent", COUNT, timeout=10)  # the backoff alone: 15 s at least
    assert_resumed(daemon, base, config)


def test_run_once_exits_2_on_an_untrusted_certificate_and_sends_with_the_ca(
    tls_api: tuple[FakeApi, Tls], tmp_path: Path
) -> None:
    """--once over HTTPS without the CA: exit 2, files kept; with api.ca_bundle: sent."""
    api, tls = tls_api
    config = write_config(tmp_path, api.url)
    drop_files(tmp_path)
    expected = {"endpoint": "attachments", "url": f"{api.url}/attachments"}
    line = assert_held_once(config, expected, TLS_HINT)
    assert line["error"].startswith("certificate: ")
    write_config(tmp_path, api.url, api={"ca_bundle": str(tls.ca_pem)})
    assert_sent_once(config)
