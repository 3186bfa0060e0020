"""The shipped systemd files: the unit verifies and keeps the settings the daemon relies on."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SYSTEMD_DIR = Path(__file__).resolve().parents[2] / "systemd"
UNIT = SYSTEMD_DIR / "sendseven-watch.service"
TMPFILES = SYSTEMD_DIR / "sendseven-watch.tmpfiles.conf"
ENV_EXAMPLE = SYSTEMD_DIR / "sendseven-watch.env.example"
SHIPPED_EXEC = "/usr/local/bin/sendseven-watch"


def parse_unit(text: str) -> dict[str, list[tuple[str, str]]]:
    """Sections → (key, value) in order, keeping repeated keys (configparser would merge them)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    pending = ""
    for raw in text.splitlines():
        line = pending + raw.strip()
        pending = ""
        if not line or line.startswith(("#", ";")):
            continue
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not a KEY=VALUE line: {line!r}"
        assert current is not None, f"setting outside a section: {line!r}"
        current.append((key.strip(), value.strip()))
    return sections


def values(section: list[tuple[str, str]], key: str) -> list[str]:
    """Every value given for ``key``, in order."""
    return [value for name, value in section if name == key]


def installed_command() -> str:
    """The installed ``sendseven-watch`` script (the venv's bin first)."""
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    found = shutil.which("sendseven-watch", path=search)
    if found is None:
        pytest.fail("sendseven-watch is not installed (pip install -e .)")
    return found


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    """systemd-analyze verify accepts the unit (ExecStart pointed at the installed command)."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    text = UNIT.read_text()
    assert f"ExecStart={SHIPPED_EXEC} " in text
    copy = tmp_path / UNIT.name
    copy.write_text(text.replace(f"ExecStart={SHIPPED_EXEC} ", f"ExecStart={installed_command()} "))

    result = subprocess.run(
        [analyze, "verify", str(copy)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env={**os.environ, "SYSTEMD_LOG_COLOR": "0"},
    )

    output = result.stdout + result.stderr
    about_our_unit = [line for line in output.splitlines() if UNIT.name in line]
    assert result.returncode == 0, output
    assert about_our_unit == []


def test_unit_keeps_the_settings_the_daemon_relies_on() -> None:
    """Type=notify, restart on failure, a watchdog, SIGHUP reload and the token as a credential."""
    unit = parse_unit(UNIT.read_text())
    service = unit["Service"]

    assert values(service, "Type") == ["notify"]
    assert values(service, "NotifyAccess") == ["main"]
    assert values(service, "Restart") == ["on-failure"]
    assert values(service, "WatchdogSec") == ["30"]
    assert values(service, "ExecReload") == ["/bin/kill -HUP $MAINPID"]
    assert values(service, "LoadCredential") == ["sendseven-token:/etc/sendseven-watch/token"]
    assert values(service, "User") == ["sendseven"]
    assert values(service, "CapabilityBoundingSet") == [""]
    assert values(unit["Install"], "WantedBy") == ["multi-user.target"]


def test_unit_raises_the_descriptor_limit_for_many_inboxes() -> None:
    """LimitNOFILE is raised well past 1024: each inbox holds a lock descriptor for good."""
    service = parse_unit(UNIT.read_text())["Service"]

    limits = values(service, "LimitNOFILE")

    assert len(limits) == 1
    assert int(limits[0]) >= 65536


def test_one_writable_tree_so_renames_stay_on_one_mount() -> None:
    """ReadWritePaths lists one path, so inbox, sent/ and failed/ share one mount (no EXDEV)."""
    service = parse_unit(UNIT.read_text())["Service"]

    entries = values(service, "ReadWritePaths")

    assert values(service, "ProtectSystem") == ["strict"]
    assert len(entries) == 1
    assert len(entries[0].split()) == 1
    assert entries[0] == "/var/spool/sendseven-watch"


def test_tmpfiles_creates_the_writable_tree() -> None:
    """tmpfiles creates the ReadWritePaths directory, setgid and group-writable for droppers."""
    writable = values(parse_unit(UNIT.read_text())["Service"], "ReadWritePaths")[0]
    lines = [
        line.split()
        for line in TMPFILES.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]

    spool = [fields for fields in lines if fields[1] == writable]

    assert spool == [["d", writable, "2770", "sendseven", "scanner", "-"]]


def test_env_example_holds_no_token() -> None:
    """The environment file example sets no token: it goes through LoadCredential."""
    assignments = [
        line.partition("=")[0].strip()
        for line in ENV_EXAMPLE.read_text().splitlines()
        if "=" in line and not line.lstrip().startswith("#")
    ]

    assert "SENDSEVEN_TENANT_ID" in assignments
    assert not [name for name in assignments if "TOKEN" in name]
