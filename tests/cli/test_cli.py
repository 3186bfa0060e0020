"""The command line: each command through the installed console script."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from daemon.fake.api import FakeApi
from tests.helpers import DATA, TOKEN, clean_env, log_lines, run_cli, write_config


def test_classify_prints_one_json_object_per_file() -> None:
    """`classify` reports type, size and verdict for each file, by its bytes."""
    files = [DATA / "misnamed_png.pdf", DATA / "image.bmp", DATA / "empty.txt"]
    result = run_cli("classify", *map(str, files))
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [set(row) for row in rows] == [
        {"file", "message_type", "content_type", "size", "accepted", "reason"}
    ] * 3
    assert (rows[0]["content_type"], rows[0]["accepted"]) == ("image/png", True)
    assert (rows[1]["reason"], rows[1]["accepted"]) == ("unsupported_type", False)
    assert rows[2]["reason"] == "empty_file"


def test_check_config_prints_what_would_be_watched(api: FakeApi, tmp_path: Path) -> None:
    """A valid configuration lists its inboxes and exits 0, without the token."""
    config = write_config(tmp_path, api.url)
    (tmp_path / "spool" / "conv_7").mkdir()
    result = run_cli("check-config", "-c", str(config))
    assert result.returncode == 0, result.stderr
    assert "conv_7" in result.stdout
    assert TOKEN not in result.stdout


def test_a_bad_config_exits_2_with_one_line_naming_the_key(tmp_path: Path) -> None:
    """Unknown keys, unset variables and missing files: exit 2, one line, no traceback."""
    config = write_config(tmp_path, "http://127.0.0.1:9/api/v1", retry={"max_dealy": 3})
    result = run_cli("check-config", "-c", str(config))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "retry.max_dealy" in result.stderr
    data = yaml.safe_load(config.read_text())
    data["retry"] = {}
    data["api"]["token"] = "${NOT_SET_ANYWHERE}"
    config.write_text(yaml.safe_dump(data))
    unset = run_cli("run", "-c", str(config), "--once")
    assert unset.returncode == 2
    assert "api.token" in unset.stderr and "NOT_SET_ANYWHERE" in unset.stderr
    missing = run_cli("run", "-c", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2 and "nope.yaml" in missing.stderr
    assert "Traceback" not in result.stderr + unset.stderr + missing.stderr


def test_usage_errors_exit_2() -> None:
    """A missing required option is a usage error."""
    result = run_cli("run")
    assert result.returncode == 2
    assert "--config" in result.stderr


def test_send_leaves_files_in_place(api: FakeApi, tmp_path: Path) -> None:
    """`send` reports a message id per sent file, a reason otherwise; exit 1 if any failed."""
    config = write_config(tmp_path, api.url)
    pdf = tmp_path / "report.pdf"
    bmp = tmp_path / "logo.bmp"
    shutil.copyfile(DATA / "document.pdf", pdf)
    shutil.copyfile(DATA / "image.bmp", bmp)
    result = run_cli("send", "-c", str(config), "--conversation", "conv_x", str(pdf), str(bmp))
    assert result.returncode == 1
    rows = [json.loads(line) for line in result.stdout.splitlines() if '"file"' in line]
    assert rows[0]["file"] == str(pdf) and rows[0]["message_id"] == api.messages()[0].id
    assert rows[1]["reason"] == "unsupported_type"
    assert pdf.exists() and bmp.exists()
    ok = run_cli("send", "-c", str(config), "--conversation", "conv_x", str(pdf))
    assert ok.returncode == 0
    assert [m.conversation_id for m in api.messages()] == ["conv_x", "conv_x"]


def test_send_names_the_file_it_retries(api: FakeApi, tmp_path: Path) -> None:
    """A retry during `send` is logged with the file it is for, and the file still goes."""
    config = write_config(tmp_path, api.url)
    pdf = tmp_path / "report.pdf"
    shutil.copyfile(DATA / "document.pdf", pdf)
    api.force(503)
    result = run_cli("send", "-c", str(config), "--conversation", "conv_x", str(pdf))
    assert result.returncode == 0, result.stdout
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    (retry,) = [line for line in lines if line.get("event") == "retry_scheduled"]
    assert (retry["file"], retry["attempt"], retry["status"]) == (str(pdf), 1, 503)
    assert [line["message_id"] for line in lines if "message_id" in line] == [api.messages()[0].id]


def test_send_refuses_a_bad_caption_template_before_uploading(api: FakeApi, tmp_path: Path) -> None:
    """A bad --text is a usage error naming --text, and nothing reaches the API."""
    config = write_config(tmp_path, api.url)
    pdf = tmp_path / "report.pdf"
    shutil.copyfile(DATA / "document.pdf", pdf)
    result = run_cli(
        "send", "-c", str(config), "--conversation", "c", "--text", "{bogus}", str(pdf)
    )
    assert result.returncode == 2
    assert result.stderr.startswith("sendseven-watch: --text: ")
    assert "bogus" in result.stderr and len(result.stderr.splitlines()) == 1
    assert api.requests() == []


def test_send_warns_when_a_name_lies_about_the_type(api: FakeApi, tmp_path: Path) -> None:
    """A PDF named .png is sent as the PDF it is, with an extension_mismatch warning."""
    config = write_config(tmp_path, api.url)
    fake_png = tmp_path / "photo.png"
    shutil.copyfile(DATA / "document.pdf", fake_png)
    result = run_cli("send", "-c", str(config), "--conversation", "c", str(fake_png))
    assert result.returncode == 0
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    (warning,) = [line for line in lines if line.get("event") == "extension_mismatch"]
    assert (warning["file"], warning["extension"]) == (str(fake_png), "png")
    assert warning["content_type"] == "application/pdf"
    assert api.messages()[0].message_type == "document"


def test_requeue_moves_failed_files_back(api: FakeApi, tmp_path: Path) -> None:
    """Failed files return to their inbox (optionally by reason) and lose their sidecars."""
    config = write_config(tmp_path, api.url)
    inbox = tmp_path / "spool" / "conv_1"
    inbox.mkdir()
    shutil.copyfile(DATA / "image.bmp", inbox / "logo.bmp")
    shutil.copyfile(DATA / "document.pdf", inbox / "scan.pdf")
    api.force(503)  # scan.pdf: one retry, then conversation_not_found (a 404 from /messages)
    api.force(404, endpoint="send")
    assert run_cli("run", "-c", str(config), "--once").returncode == 0
    failed = inbox / "failed"
    assert sorted(p.name for p in failed.iterdir()) == [
        "logo.bmp",
        "logo.bmp.error.json",
        "scan.pdf",
        "scan.pdf.error.json",
    ]
    by_reason = run_cli("requeue", "-c", str(config), "--reason", "conversation_not_found")
    assert by_reason.returncode == 0, by_reason.stderr
    assert (inbox / "scan.pdf").exists() and not (failed / "scan.pdf.error.json").exists()
    assert (failed / "logo.bmp").exists()
    assert run_cli("run", "-c", str(config), "--once").returncode == 0
    assert (inbox / "sent" / "scan.pdf").exists()
    everything = run_cli("requeue", "-c", str(config), "--inbox", "conv_1")
    assert everything.returncode == 0
    assert (inbox / "logo.bmp").exists() and list(failed.iterdir()) == []
    assert [line["event"] for line in log_lines(everything.stdout)][-1] == "requeue_done"


def test_requeue_names_a_mistyped_inbox_or_reason(api: FakeApi, tmp_path: Path) -> None:
    """A typo in --inbox or --reason is a usage error, not "nothing to requeue"."""
    config = write_config(tmp_path, api.url)
    (tmp_path / "spool" / "conv_1").mkdir()
    inbox = run_cli("requeue", "-c", str(config), "--inbox", "conv_l")
    assert inbox.returncode == 2
    assert inbox.stderr == (
        "sendseven-watch: --inbox: no inbox is named 'conv_l' (inboxes: conv_1)\n"
    )
    reason = run_cli("requeue", "-c", str(config), "--reason", "too_big")
    assert reason.returncode == 2
    assert reason.stderr.startswith("sendseven-watch: --reason: 'too_big' is none of ")


def test_the_demo_runs_the_whole_flow(tmp_path: Path) -> None:
    """`demo --once` sends the samples through the fake API and names the refused one."""
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "sendseven-watch"),
            "demo",
            "--once",
            "--dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=clean_env(),
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("  sent    ") == 4
    assert "old-logo.bmp: unsupported_type" in result.stdout
    assert (tmp_path / "spool" / "conv_invoices" / "failed" / "old-logo.bmp.error.json").exists()


def test_python_dash_m_daemon_is_the_same_command() -> None:
    """`python -m daemon --version` answers like the console script."""
    result = subprocess.run(
        [sys.executable, "-m", "daemon", "--version"],
        capture_output=True,
        text=True,
        check=False,
        env=clean_env(),
        timeout=30,
    )
    assert result.returncode == 0
    assert result.stdout.startswith("sendseven-watch ")
