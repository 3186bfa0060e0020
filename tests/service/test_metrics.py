"""``/metrics`` and ``/healthz``: scraped with a real HTTP client while the daemon runs."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from daemon.config import InboxConfig
from daemon.delivery.outcomes import FailedFile, Outcomes, SentFile
from daemon.fake.api import FakeApi
from daemon.fake.rules import Faults
from daemon.service.metrics import Metrics, MetricsServer, Probes
from daemon.states import Reason
from daemon.store.journal import Entry
from tests.helpers import (
    TENANT,
    TOKEN,
    Daemon,
    copy_sample,
    events,
    run_cli,
    wait_until,
    write_config,
)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def free_port() -> int:
    """A loopback port nobody listens on (bound to port 0, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def scrape(base: str) -> Samples:
    """Every sample of ``/metrics``, parsed by prometheus_client's own parser."""
    response = requests.get(f"{base}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; a series not exported yet counts as 0."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def failed_total(samples: Samples, inbox: str, reason: str, **labels: str) -> float:
    """Files failed in ``inbox`` for ``reason``, summed over the other labels."""
    wanted = {("inbox", inbox), ("reason", reason), *labels.items()}
    return sum(
        count
        for (name, have), count in samples.items()
        if name == "sendseven_files_failed_total" and wanted <= have
    )


def health(base: str) -> tuple[int, dict[str, object]]:
    response = requests.get(f"{base}/healthz", timeout=10)
    assert response.headers["Content-Type"] == "application/json"
    body: dict[str, object] = response.json()
    return response.status_code, body


def drop_pdf(inbox: Path, name: str, body: bytes = b"hello") -> Path:
    """A small PDF written aside and renamed in, as a careful writer does."""
    inbox.mkdir(parents=True, exist_ok=True)
    temp = inbox / f".{name}.part"
    temp.write_bytes(b"%PDF-1.4\n" + body)
    temp.rename(inbox / name)
    return inbox / name


@pytest.fixture
def metered(
    api: FakeApi, tmp_path: Path, daemons: list[Daemon]
) -> Iterator[tuple[Daemon, str, Path]]:
    """A daemon serving metrics on a free loopback port: (daemon, base URL, inbox)."""
    port = free_port()
    config = write_config(tmp_path, api.url, metrics={"listen": f"127.0.0.1:{port}"})
    inbox = tmp_path / "spool" / "conv_1"
    inbox.mkdir()
    daemon = Daemon(config)
    daemons.append(daemon)
    daemon.wait_event("daemon_started")
    yield daemon, f"http://127.0.0.1:{port}", inbox
    assert daemon.stop() == 0


def docs_sent(samples: Samples) -> float:
    return value(samples, "sendseven_files_sent_total", inbox="conv_1", message_type="document")


def requests_seen(samples: Samples, endpoint: str, status: str) -> float:
    return value(samples, "sendseven_api_requests_total", endpoint=endpoint, status=status)


def test_counters_move_as_files_are_sent_and_fail(
    api: FakeApi, metered: tuple[Daemon, str, Path]
) -> None:
    """Sent, failed, retried files, bytes, API requests and durations show in /metrics."""
    daemon, base, inbox = metered
    before = scrape(base)
    assert docs_sent(before) == 0
    assert value(before, "sendseven_inboxes") == 1
    assert value(before, "sendseven_observer_alive") == 1
    assert value(before, "sendseven_auth_ok") == 1

    size = drop_pdf(inbox, "a.pdf", b"x" * 1000).stat().st_size
    daemon.wait_event("file_sent")
    after_sent = scrape(base)
    assert docs_sent(after_sent) == 1
    assert value(after_sent, "sendseven_uploaded_bytes_total", inbox="conv_1") == size
    assert requests_seen(after_sent, "attachments", "201") == 1
    assert requests_seen(after_sent, "messages", "201") == 1
    assert value(after_sent, "sendseven_upload_duration_seconds_count") == 1
    assert value(after_sent, "sendseven_send_duration_seconds_count") == 1
    assert value(after_sent, "sendseven_drop_to_sent_seconds_count") == 1
    assert value(after_sent, "sendseven_last_sent_timestamp_seconds") > 0
    assert value(after_sent, "sendseven_files_in_progress", inbox="conv_1") == 0

    (inbox / "logo.bmp").write_bytes(b"BM" + bytes(100))
    daemon.wait_event("file_failed")
    after_failed = scrape(base)
    failed = {"inbox": "conv_1", "message_type": "unknown", "reason": "unsupported_type"}
    assert value(after_failed, "sendseven_files_failed_total", **failed) == 1
    assert docs_sent(after_failed) == 1

    api.force(503)
    drop_pdf(inbox, "b.pdf")
    daemon.wait_event("file_sent", count=2)
    after_retry = scrape(base)
    assert value(after_retry, "sendseven_retries_total", inbox="conv_1") == 1
    assert requests_seen(after_retry, "attachments", "503") == 1
    assert docs_sent(after_retry) == 2
    assert value(after_retry, "sendseven_files_queued_total", inbox="conv_1") == 3


def test_api_rejections_are_counted_by_reason(tmp_path: Path, daemons: list[Daemon]) -> None:
    """A 404 from the API counts as conversation_not_found, with its message type."""
    with FakeApi(token=TOKEN, tenant_id=TENANT, conversations={"conv_1"}) as api:
        port = free_port()
        config = write_config(tmp_path, api.url, metrics={"listen": f"127.0.0.1:{port}"})
        daemon = Daemon(config)
        daemons.append(daemon)
        daemon.wait_event("daemon_started")
        drop_pdf(tmp_path / "spool" / "conv_gone", "x.pdf")
        daemon.wait_event("file_failed")
        samples = scrape(f"http://127.0.0.1:{port}")
        assert daemon.stop() == 0
    assert failed_total(samples, "conv_gone", "conversation_not_found") == 1
    assert value(samples, "sendseven_api_requests_total", endpoint="messages", status="404") == 1


def test_healthz_turns_503_under_wrong_credentials_and_back_to_200(
    api: FakeApi, metered: tuple[Daemon, str, Path]
) -> None:
    """A refused token: 503 naming the credentials, the file held in progress; then 200."""
    daemon, base, inbox = metered
    healthy = {"status": "ok", "observer_alive": True, "credentials_accepted": True, "api_ok": True}
    assert health(base) == (200, healthy)

    api.accept_tokens("other")
    drop_pdf(inbox, "a.pdf")
    daemon.wait_event("auth_failed")
    status, body = health(base)
    assert status == 503
    assert body["status"] == "unhealthy"
    assert body["credentials_accepted"] is False
    assert body["observer_alive"] is True
    assert "credentials" in str(body["reason"]) and "401" in str(body["reason"])
    samples = scrape(base)
    assert value(samples, "sendseven_auth_ok") == 0
    assert value(samples, "sendseven_files_in_progress", inbox="conv_1") == 1
    assert value(samples, "sendseven_api_requests_total", endpoint="attachments", status="401") >= 1

    api.accept_tokens(TOKEN)
    daemon.wait_event("file_sent")
    wait_until(lambda: health(base)[0] == 200)
    samples = scrape(base)
    assert value(samples, "sendseven_auth_ok") == 1
    assert value(samples, "sendseven_files_in_progress", inbox="conv_1") == 0
    assert (
        value(samples, "sendseven_files_sent_total", inbox="conv_1", message_type="document") == 1
    )


def test_files_waiting_counts_a_file_still_settling(
    api: FakeApi, tmp_path: Path, daemons: list[Daemon]
) -> None:
    """A file dropped into an inbox is counted as waiting until it is taken."""
    port = free_port()
    config = write_config(
        tmp_path, api.url, settle_seconds=600, metrics={"listen": f"127.0.0.1:{port}"}
    )
    inbox = tmp_path / "spool" / "conv_1"
    (inbox / "sent").mkdir(parents=True)
    daemon = Daemon(config)
    daemons.append(daemon)
    daemon.wait_event("daemon_started")
    base = f"http://127.0.0.1:{port}"
    (inbox / "scan.pdf").write_bytes(b"%PDF-1.4\nstill being written")
    (inbox / "scan.pdf.part").write_bytes(b"ignored")
    wait_until(lambda: value(scrape(base), "sendseven_files_waiting", inbox="conv_1") == 1)
    assert value(scrape(base), "sendseven_files_in_progress", inbox="conv_1") == 0
    assert daemon.stop() == 0
    assert (inbox / "scan.pdf").exists()


def test_a_metrics_port_already_taken_stops_the_start_before_any_file_is_claimed(
    api: FakeApi, tmp_path: Path
) -> None:
    """Exit 1 with one JSON line naming metrics.listen; the dropped file stays put."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(tmp_path, api.url, metrics={"listen": f"127.0.0.1:{port}"})
        pdf = drop_pdf(tmp_path / "spool" / "conv_1", "a.pdf")
        result = run_cli("run", "-c", str(config))
    assert result.returncode == 1
    assert result.stderr == ""
    (line,) = [line for line in result.stdout.splitlines() if line.strip()]
    assert '"event": "command_failed"' in line
    assert f"metrics.listen 127.0.0.1:{port}" in line
    assert pdf.exists()
    assert api.requests() == []


def test_unknown_paths_are_404_and_other_requests_leave_the_daemon_running(
    metered: tuple[Daemon, str, Path],
) -> None:
    """/, a typo and a raw garbage request: the endpoint keeps answering."""
    daemon, base, _ = metered
    assert requests.get(f"{base}/", timeout=10).status_code == 200
    assert requests.get(f"{base}/metricz", timeout=10).status_code == 404
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"\x00\x01garbage\r\n\r\n")
        sock.recv(1024)
    assert health(base)[0] == 200
    assert not events(daemon.lines, "metrics_request_failed")


def _entry(name: str, size: int, arrived_ns: int, message_type: str = "image") -> Entry:
    now = time.time()
    return Entry(
        claim_id=f"sw-{name}", inbox="/x", conversation_id="conv_1", name=name, stage="archived",
        arrived_ns=arrived_ns, claimed_at=now, updated_at=now, size=size,
        message_type=message_type, content_type="image/png",
    )  # fmt: skip


def test_scrape_time_gauges_and_an_unhealthy_observer_in_process(tmp_path: Path) -> None:
    """Gauges come from the probes at scrape time; a dead observer makes /healthz 503."""
    inboxes = [
        InboxConfig(tmp_path / "a" / "front", "conv_a", None, "front"),
        InboxConfig(tmp_path / "b" / "front", "conv_b", None, "front"),
        InboxConfig(tmp_path / "back", "conv_c", None, "back"),
    ]
    alive = [True]
    outcomes = Outcomes()
    probes = Probes(
        inboxes=lambda: inboxes,
        waiting=lambda inbox: 2 if inbox.name == "front" else 0,
        in_progress=lambda: {str(tmp_path / "back"): 3},
        auth_refused=lambda: None,
        observer_alive=lambda: alive[0],
    )
    server = MetricsServer(Metrics(outcomes, probes), ("127.0.0.1", 0))
    server.start()
    try:
        base = f"http://127.0.0.1:{server.address[1]}"
        sent = _entry("p.png", 2048, time.time_ns() - 5_000_000_000)
        outcomes.sent(
            SentFile(inbox=inboxes[2], entry=sent, size=2048, archived_as="p.png", duration_ms=5)
        )
        too_large = _entry("v.mp4", 10**10, time.time_ns(), message_type="video")
        outcomes.failed(
            FailedFile(
                inbox=inboxes[2], entry=too_large, size=10**10, archived_as="v.mp4",
                reason=Reason.TOO_LARGE, status=None, detail="too large",
            )
        )  # fmt: skip
        samples = scrape(base)
        # Two inboxes named "front" (different folders) are one series, summed.
        assert value(samples, "sendseven_files_waiting", inbox="front") == 4
        assert value(samples, "sendseven_files_in_progress", inbox="back") == 3
        assert value(samples, "sendseven_files_sent_total", inbox="back", message_type="image") == 1
        assert value(samples, "sendseven_uploaded_bytes_total", inbox="back") == 2048
        assert value(samples, "sendseven_drop_to_sent_seconds_bucket", le="2.5") == 0
        assert value(samples, "sendseven_drop_to_sent_seconds_bucket", le="10.0") == 1
        assert failed_total(samples, "back", "too_large", message_type="video") == 1
        assert health(base)[0] == 200
        alive[0] = False
        status, body = health(base)
        assert status == 503
        assert body["observer_alive"] is False
        assert "observer" in str(body["reason"])
    finally:
        server.stop()
    server.stop()  # a second stop is harmless


def test_each_metrics_instance_has_its_own_registry() -> None:
    """Two exporters in one process never see each other's numbers."""
    inbox = InboxConfig(Path(os.sep, "x"), "conv_1", None, "x")
    probes = Probes(
        inboxes=lambda: [inbox],
        waiting=lambda _: 0,
        in_progress=dict,
        auth_refused=lambda: "HTTP 401: Invalid or expired token",
        observer_alive=lambda: True,
    )
    first_outcomes, second_outcomes = Outcomes(), Outcomes()
    first, second = Metrics(first_outcomes, probes), Metrics(second_outcomes, probes)
    first_outcomes.retried(inbox)
    assert b'sendseven_retries_total{inbox="x"} 1.0' in first.exposition()
    assert b"sendseven_retries_total{" not in second.exposition()
    assert b"sendseven_auth_ok 0.0" in second.exposition()
    healthy, body = second.health()
    assert not healthy
    assert "401" in str(body["reason"])


def test_a_file_failed_behind_a_retrying_one_is_no_longer_in_progress(
    api: FakeApi, metered: tuple[Daemon, str, Path]
) -> None:
    """files_in_progress counts what is not yet in sent/ or failed/, also out of order."""
    daemon, base, inbox = metered
    api.faults = Faults(error_rate=1.0)  # the older file keeps retrying
    copy_sample("document.pdf", inbox, "a.pdf")
    daemon.wait_event("retry_scheduled")
    copy_sample("image.bmp", inbox, "b.bmp")  # refused locally, behind a.pdf
    daemon.wait_event("file_failed")
    assert value(scrape(base), "sendseven_files_in_progress", inbox="conv_1") == 1
    api.faults = Faults()
    daemon.wait_event("file_sent")
