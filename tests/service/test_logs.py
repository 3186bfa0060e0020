"""Log hygiene: every stdout line is one JSON object with the stable fields, even
when something inside the daemon breaks; levels and the console format obey the config."""

from __future__ import annotations

import json
import os
import pty
import re
import signal
import subprocess
from pathlib import Path
from typing import Any

from daemon.fake.api import FakeApi
from tests.helpers import (
    COMMAND,
    TENANT,
    TOKEN,
    Daemon,
    clean_env,
    events,
    inject,
    log_lines,
    run_cli,
    write_config,
)

ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")
LEVELS = {"debug", "info", "warning", "error"}
ANSI = re.compile(r"\x1b\[[0-9;]*m")

#: The stable events and the fields each must carry (besides timestamp, level, event), as
#: the README's Logs table promises them.
STABLE_EVENTS: dict[str, set[str]] = {
    "daemon_started": {"version", "inboxes", "observer"},
    "file_sent": {
        "inbox", "conversation_id", "file", "size", "sha256", "message_type", "content_type",
        "attachment_id", "message_id", "attempts", "duration_ms",
    },
    "file_failed": {
        "inbox", "conversation_id", "file", "size", "message_type", "content_type", "reason",
        "status", "detail", "attempts",
    },
    "retry_scheduled": {"inbox", "file", "attempt", "delay_s"},
    "auth_failed": {"status", "detail"},
    "extension_mismatch": {"file", "extension", "content_type"},
    "config_reloaded": {"changed"},
    "config_invalid": {"key", "error"},
    "daemon_stopping": {"signal"},
}  # fmt: skip


def drop_pdf(inbox: Path, name: str) -> Path:
    """A small PDF written aside and renamed in."""
    inbox.mkdir(parents=True, exist_ok=True)
    temp = inbox / f".{name}.part"
    temp.write_bytes(b"%PDF-1.4\n" + name.encode())
    return temp.rename(inbox / name)


def assert_well_formed(raw_lines: list[str]) -> list[dict[str, Any]]:
    """Every line is one JSON object that starts with timestamp, level and event."""
    lines = []
    for raw in raw_lines:
        line = json.loads(raw)
        assert isinstance(line, dict), raw
        assert list(line)[:3] == ["timestamp", "level", "event"], raw
        assert ISO_UTC.fullmatch(line["timestamp"]), raw
        assert line["level"] in LEVELS, raw
        assert isinstance(line["event"], str) and line["event"], raw
        lines.append(line)
    return lines


def test_a_whole_run_logs_every_spec_event_as_json_lines(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    """Sent, failed, retried, refused, mismatched, reloaded, stopped: all valid JSON lines."""
    with FakeApi(token=TOKEN, tenant_id=TENANT, conversations={"conv_1"}) as api:
        config = write_config(tmp_path, api.url)
        spool = tmp_path / "spool"
        (spool / "conv_1").mkdir()
        daemon = Daemon(config)
        daemons.append(daemon)
        daemon.wait_event("daemon_started")

        drop_pdf(spool / "conv_1", "a.pdf")
        daemon.wait_event("file_sent")
        drop_pdf(spool / "conv_1", "scan.jpg")  # a PDF by its bytes
        daemon.wait_event("file_sent", count=2)
        drop_pdf(spool / "conv_gone", "x.pdf")  # the API knows no conv_gone: 404
        daemon.wait_event("file_failed")
        api.force(503)
        drop_pdf(spool / "conv_1", "b.pdf")
        daemon.wait_event("file_sent", count=3)
        api.accept_tokens("someone-else")
        drop_pdf(spool / "conv_1", "c.pdf")
        daemon.wait_event("auth_failed")
        api.accept_tokens(TOKEN)
        daemon.wait_event("file_sent", count=4)

        write_config(tmp_path, api.url, settle_seconds=0.2)
        daemon.signal(signal.SIGHUP)
        daemon.wait_event("config_reloaded")
        write_config(tmp_path, api.url, bogus=1)
        daemon.signal(signal.SIGHUP)
        daemon.wait_event("config_invalid")
        assert daemon.stop() == 0

    assert daemon.stderr == ""
    lines = assert_well_formed(daemon.raw)
    for name, fields in STABLE_EVENTS.items():
        found = events(lines, name)
        assert found, f"no {name} line"
        for line in found:
            assert fields <= set(line), f"{name} lacks {fields - set(line)}"
    (failed,) = events(lines, "file_failed")
    assert failed["level"] == "warning"
    assert (failed["file"], failed["reason"], failed["status"]) == (
        "x.pdf",
        "conversation_not_found",
        404,
    )
    assert failed["detail"] == "Conversation conv_gone not found"  # the API's own words
    (retry,) = events(lines, "retry_scheduled")
    assert (retry["file"], retry["status"], retry["attempt"]) == ("b.pdf", 503, 1)
    assert events(lines, "auth_failed")[0]["status"] == 401
    (mismatch,) = events(lines, "extension_mismatch")
    assert mismatch["level"] == "warning"
    assert (mismatch["file"], mismatch["content_type"]) == ("scan.jpg", "application/pdf")
    assert events(lines, "config_reloaded")[0]["changed"] == ["settle_seconds"]
    assert events(lines, "config_invalid")[0]["key"] == "bogus"
    assert events(lines, "daemon_stopping")[0]["signal"] == "SIGTERM"
    assert events(lines, "daemon_started")[0]["inboxes"] == [str(spool / "conv_1")]
    assert TOKEN not in "".join(daemon.raw)


def test_an_exception_inside_the_daemon_is_one_json_line_with_a_structured_traceback(
    api: FakeApi, tmp_path: Path, daemons: list[Daemon]
) -> None:
    """A bug while handling a file: one file_error line, traceback as data, nothing on stderr."""
    env = inject(
        tmp_path / "inject",
        "import logging\n"
        "import daemon.media.classify as classify\n"  # before anyone imports it by name
        "real = classify.classify_file\n"
        "def classify_file(path):\n"
        "    if path.name == 'boom.pdf':\n"
        "        logging.getLogger('urllib3').warning('library says %s', 'hello')\n"
        "        raise RuntimeError('injected bug')\n"
        "    return real(path)\n"
        "classify.classify_file = classify_file\n",
    )
    config = write_config(tmp_path, api.url)
    inbox = tmp_path / "spool" / "conv_1"
    drop_pdf(inbox, "boom.pdf")
    daemon = Daemon(config, env=env)
    daemons.append(daemon)
    (error, *_) = daemon.wait_event("file_error")
    drop_pdf(tmp_path / "spool" / "conv_2", "fine.pdf")  # other conversations go on
    daemon.wait_event("file_sent")
    assert daemon.stop() == 0
    assert daemon.stderr == ""
    lines = assert_well_formed(daemon.raw)
    assert (error["level"], error["file"]) == ("error", "boom.pdf")
    (exception,) = error["exception"]
    assert (exception["exc_type"], exception["exc_value"]) == ("RuntimeError", "injected bug")
    assert exception["frames"][-1]["name"] == "classify_file"
    library = events(lines, "library_log")[0]
    assert (library["level"], library["logger"]) == ("warning", "urllib3")
    assert library["message"] == "library says hello"
    # The file is kept, claimed, to be tried again; never lost or failed.
    assert not (inbox / "failed").exists()
    assert not (inbox / "sent" / "boom.pdf").exists()


def test_an_exception_that_escapes_main_is_one_json_line_and_exit_1(
    api: FakeApi, tmp_path: Path
) -> None:
    """Even a crash of the whole command ends as a JSON line, not a stderr dump."""
    env = inject(
        tmp_path / "inject",
        "import daemon.service.service\n"
        "def run(self):\n"
        "    raise RuntimeError('injected crash')\n"
        "daemon.service.service.Service.run = run\n",
    )
    config = write_config(tmp_path, api.url)
    result = run_cli("run", "-c", str(config), env=env)
    assert result.returncode == 1
    assert result.stderr == ""
    (line,) = assert_well_formed(result.stdout.splitlines())
    assert (line["event"], line["level"]) == ("unhandled_exception", "error")
    assert line["exception"][0]["exc_value"] == "injected crash"


def _spool_with_one_sent_and_one_failed(folder: Path, api: FakeApi, **overrides: Any) -> Path:
    folder.mkdir()
    config = write_config(folder, api.url, **overrides)
    drop_pdf(folder / "spool" / "conv_1", "a.pdf")
    (folder / "spool" / "conv_1" / "logo.bmp").write_bytes(b"BM" + bytes(100))
    return config


def test_the_log_level_comes_from_the_config_and_log_level_overrides_it(
    api: FakeApi, tmp_path: Path
) -> None:
    """log.level warning hides file_sent; --log-level info on the same config shows it."""
    config = _spool_with_one_sent_and_one_failed(tmp_path / "one", api, log={"level": "warning"})
    quiet = log_lines(run_cli("run", "-c", str(config), "--once").stdout)
    assert events(quiet, "file_failed")
    assert not events(quiet, "file_sent")
    assert {line["level"] for line in quiet} <= {"warning", "error"}

    config = _spool_with_one_sent_and_one_failed(tmp_path / "two", api, log={"level": "warning"})
    result = run_cli("run", "-c", str(config), "--once", "--log-level", "info")
    loud = log_lines(result.stdout)
    assert events(loud, "file_sent")
    assert events(loud, "file_failed")

    config = _spool_with_one_sent_and_one_failed(tmp_path / "three", api, log={"level": "error"})
    assert log_lines(run_cli("run", "-c", str(config), "--once").stdout) == []


def test_console_format_on_a_pipe_is_plain_readable_text(api: FakeApi, tmp_path: Path) -> None:
    """log.format console: one line per event, level and event first, key=value, no colours."""
    config = _spool_with_one_sent_and_one_failed(tmp_path / "c", api, log={"format": "console"})
    result = run_cli("run", "-c", str(config), "--once")
    assert result.returncode == 0
    assert result.stderr == ""
    assert not ANSI.search(result.stdout)
    sent = next(line for line in result.stdout.splitlines() if "file_sent" in line)
    assert re.match(r"\S+Z \[info\s*\] file_sent\s", sent)
    assert "file=a.pdf" in sent
    assert "message_type=document" in sent
    assert "reason=unsupported_type" in result.stdout
    assert TOKEN not in result.stdout


def run_on_a_tty(args: list[str]) -> tuple[int, str]:
    """Run the installed command with stdout and stderr on a pseudo-terminal."""
    leader, follower = pty.openpty()
    try:
        process = subprocess.Popen(
            [COMMAND, *args],
            stdin=subprocess.DEVNULL,
            stdout=follower,
            stderr=follower,
            env=clean_env(),
        )
    finally:
        os.close(follower)
    chunks = []
    try:
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the command exited and closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(leader)
    return process.wait(60), b"".join(chunks).decode()


def test_console_format_on_a_tty_is_coloured(api: FakeApi, tmp_path: Path) -> None:
    """At a terminal the console renderer colours its lines; the words stay the same."""
    config = _spool_with_one_sent_and_one_failed(tmp_path / "t", api, log={"format": "console"})
    code, output = run_on_a_tty(["run", "-c", str(config), "--once"])
    assert code == 0
    assert ANSI.search(output)
    plain = ANSI.sub("", output).replace("\r", "")
    assert "file_sent" in plain
    assert "file=a.pdf" in plain
    assert "file_failed" in plain
    assert (tmp_path / "t" / "spool" / "conv_1" / "sent" / "a.pdf").exists()


def test_every_event_the_daemon_logs_is_documented_with_an_example_line() -> None:
    """The README's Logs section names each event in its table and shows an example line."""
    root = Path(__file__).parents[2]
    readme = (root / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Logs\n", 1)[1].split("\n## ", 1)[0]
    call = re.compile(r"\.(?:debug|info|warning|error|exception)\(\s*\"([a-z_]+)\"")
    logged = {"library_log"}  # logged through getattr() for the record's level
    for source in (root / "daemon").rglob("*.py"):
        if source.parent.name != "fake" and source.name != "demo.py":  # their own output
            logged |= set(call.findall(source.read_text(encoding="utf-8")))
    assert logged >= set(STABLE_EVENTS)
    examples = {json.loads(line)["event"] for line in section.splitlines() if line.startswith('{"')}
    undocumented = {name for name in logged if f"`{name}`" not in section}
    assert not undocumented, f"not in the README's Logs table: {sorted(undocumented)}"
    assert not logged - examples, f"no example line: {sorted(logged - examples)}"
