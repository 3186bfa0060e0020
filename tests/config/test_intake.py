"""Per-inbox intake settings: top-level defaults that an inbox may override, validated with
the key named, and shown by check-config as each inbox's effective values."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from daemon.config import load_config
from daemon.config.model import DEFAULT_IGNORE, ArchiveLayout, Duplicates
from daemon.errors import ConfigError, ConfigErrors
from daemon.watch.inboxes import all_inboxes
from tests.helpers import clean_env, run_cli

ENV = {"SENDSEVEN_API_TOKEN": "tok-Intake-1234567890", "SENDSEVEN_TENANT_ID": "tenant_1"}

TWO_DROPPERS = """\
    api: {token: tok-Intake-1234567890, tenant_id: tenant_1}
    spool: spool
    text: "{filename}"
    settle_seconds: 2
    archive_layout: monthly
    route: '^(?P<conversation_id>conv_[0-9]+)__'
    done_marker: "{name}.done"
    inboxes:
      - path: scanner            # a slow SMB scanner
        conversation_id: conv_scans
        settle_seconds: 10
        ignore: ["*.tmp"]
        text: "Scan: {filename}"
        archive_layout: daily
        route: null              # switched off here
        done_marker: null
      - path: erp                # keeps every top-level setting
        conversation_id: conv_erp
        recursive: true
        max_depth: 2
        include: ["*.pdf", "*.xml"]
        duplicates: send
        duplicate_window: 600
    """


@pytest.fixture(autouse=True)
def _no_stray_env_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run every test in an empty working directory, so no ./.env is picked up by accident."""
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)


def write(folder: Path, text: str, *inboxes: str) -> Path:
    for name in ("spool", *inboxes):
        (folder / name).mkdir(parents=True, exist_ok=True)
    path = folder / "config.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problems_of(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text, "a", "b"), environ=ENV)
    error = caught.value
    return [str(one) for one in (error.errors if isinstance(error, ConfigErrors) else (error,))]


def test_an_inbox_overrides_what_it_sets_and_inherits_the_rest(tmp_path: Path) -> None:
    """Each inbox carries its effective settings: its own where set (null switches
    route/done_marker off), else the top level's; a spool folder has the top level's."""
    (tmp_path / "spool" / "conv_9").mkdir(parents=True)
    config = load_config(write(tmp_path, TWO_DROPPERS, "scanner", "erp"), environ=ENV)
    by_name = {inbox.name: inbox for inbox in all_inboxes(config)}
    scanner, erp, spooled = by_name["scanner"], by_name["erp"], by_name["conv_9"]

    assert (scanner.settle_seconds, scanner.ignore, scanner.text) == (
        10.0,
        ("*.tmp",),
        "Scan: {filename}",
    )
    assert (scanner.archive_layout, scanner.route, scanner.done_marker) == (
        ArchiveLayout.DAILY, None, None,
    )  # fmt: skip
    assert (erp.settle_seconds, erp.ignore, erp.text) == (2.0, DEFAULT_IGNORE, "{filename}")
    assert (erp.archive_layout, erp.done_marker) == (ArchiveLayout.MONTHLY, "{name}.done")
    assert erp.route == config.route == "^(?P<conversation_id>conv_[0-9]+)__"
    assert (erp.recursive, erp.max_depth, erp.include) == (True, 2, ("*.pdf", "*.xml"))
    assert (erp.duplicates, erp.duplicate_window) == (Duplicates.SEND, 600.0)
    assert (scanner.recursive, scanner.max_depth, scanner.include) == (False, 8, ())
    assert (scanner.duplicates, scanner.duplicate_window) == (Duplicates.SKIP, 86400.0)
    for name in ("settle_seconds", "ignore", "archive_layout", "route", "done_marker", "text"):
        assert getattr(spooled, name) == getattr(config, name), name


def test_every_bad_intake_setting_is_named_by_its_key(tmp_path: Path) -> None:
    """Types and ranges of each setting are checked, at the top level and per inbox, and
    each problem names its key (inboxes[1].route, inboxes[0].include[1], ...)."""
    found = problems_of(
        tmp_path,
        """\
        spool: spool
        recursive: 3
        max_depth: 0
        include: "*.pdf"
        done_marker: "a/b.done"
        duplicates: maybe
        duplicate_window: 0
        archive_layout: weekly
        route: "(?P<conversation_id>unclosed"
        inboxes:
          - {path: a, conversation_id: c, include: ["*.pdf", 5], done_marker: "",
             settle_seconds: -1, max_depth: 2000, ignore: "*.tmp"}
          - {path: b, conversation_id: d, route: "^(?P<customer>[0-9]+)__", done_marker: "{nam}.ok",
             archive_layout: Daily, recursive: "yes"}
        """,
    )
    assert found == [
        "recursive: expected true or false, got an integer",
        "max_depth: must be between 1 and 1024, got 0",
        "include: expected a list of globs, got a string",
        "done_marker: must be a file name, without '/', got 'a/b.done'",
        "duplicates: 'maybe' is not one of skip, send",
        "duplicate_window: must be > 0, got 0",
        "archive_layout: 'weekly' is not one of flat, daily, monthly",
        "route: does not compile: missing ), unterminated subpattern at position 0",
        "inboxes[0].settle_seconds: must be >= 0, got -1",
        "inboxes[0].ignore: expected a list of patterns, got a string",
        "inboxes[0].max_depth: must be between 1 and 1024, got 2000",
        "inboxes[0].include[1]: expected a non-empty string (a file name pattern)",
        "inboxes[0].done_marker: must be a file name (null: no marker)",
        "inboxes[1].recursive: expected true or false, got a string",
        "inboxes[1].done_marker: unknown placeholder {nam}; known: name, stem",
        "inboxes[1].route: needs a named group (?P<conversation_id>...), "
        "e.g. '^(?P<conversation_id>conv_[0-9]+)__'",
    ]


@pytest.mark.parametrize(
    ("marker", "problem"),
    [
        ("{name}", "is the file's own name; add a suffix, e.g. {name}.done"),
        ("{name:>5}.ok", "unknown placeholder {name}; known: name, stem"),
        ("..", "must be a file name, without '/', got '..'"),
        ("{stem", "not a valid template: expected '}' before end of string"),
    ],
)
def test_a_done_marker_is_a_file_name_template(tmp_path: Path, marker: str, problem: str) -> None:
    """A marker is a name in the same folder, with {name}/{stem} only, never the file itself."""
    found = problems_of(tmp_path, f"spool: spool\ndone_marker: '{marker}'\n")
    assert found == [f"done_marker: {problem}"]


def test_valid_markers_and_a_case_insensitive_layout_are_taken(tmp_path: Path) -> None:
    """Per-file and per-batch markers load as written; choices ignore case; a boolean may
    come from the environment."""
    text = """\
        spool: spool
        recursive: ${RECURSE:-yes}
        archive_layout: Daily
        inboxes:
          - {path: a, conversation_id: c, done_marker: "{stem}.ok"}
          - {path: b, conversation_id: d, done_marker: READY}
        """
    config = load_config(write(tmp_path, text, "a", "b"), environ=ENV)
    assert [inbox.done_marker for inbox in config.inboxes] == ["{stem}.ok", "READY"]
    assert config.archive_layout is ArchiveLayout.DAILY and config.recursive is True


def test_check_config_prints_each_inboxs_effective_settings(tmp_path: Path) -> None:
    """The installed check-config lists every inbox with every intake setting in force."""
    (tmp_path / "spool" / "conv_9").mkdir(parents=True)
    config = write(tmp_path, TWO_DROPPERS, "scanner", "erp")
    result = run_cli("check-config", "-c", str(config), env=clean_env())
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    settings = {
        lines[n - 1].split(" -> ")[0].strip(): line.strip()
        for n, line in enumerate(lines)
        if line.startswith("    settle_seconds=")
    }
    base = tmp_path.resolve()
    assert settings[str(base / "scanner")] == (
        'settle_seconds=10 ignore=["*.tmp"] recursive=false max_depth=8 include=[] '
        "done_marker=null duplicates=skip duplicate_window=86400 route=null "
        "archive_layout=daily"
    )
    assert settings[str(base / "erp")] == (
        'settle_seconds=2 ignore=[".*", "*~", "*.tmp", "*.part", "*.crdownload", "~$*", '
        '"Thumbs.db", "desktop.ini"] recursive=true max_depth=2 include=["*.pdf", "*.xml"] '
        'done_marker="{name}.done" duplicates=send duplicate_window=600 '
        'route="^(?P<conversation_id>conv_[0-9]+)__" archive_layout=monthly'
    )
    spooled = settings[str(base / "spool" / "conv_9")]
    assert spooled.startswith("settle_seconds=2 ") and spooled.endswith(" archive_layout=monthly")
    assert "text='Scan: {filename}'" in result.stdout


def test_check_config_refuses_a_route_without_the_group_naming_the_key(tmp_path: Path) -> None:
    """A route without (?P<conversation_id>...) is refused by the installed command: exit 2,
    one line naming inboxes[1].route."""
    config = write(
        tmp_path,
        """\
        api: {token: tok-Intake-1234567890, tenant_id: tenant_1}
        spool: spool
        inboxes:
          - {path: a, conversation_id: c}
          - {path: b, conversation_id: d, route: '^(?P<customer>[0-9]+)__'}
        """,
        "a",
        "b",
    )
    result = run_cli("check-config", "-c", str(config), env=clean_env())
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "sendseven-watch: inboxes[1].route: needs a named group (?P<conversation_id>...), "
        "e.g. '^(?P<conversation_id>conv_[0-9]+)__'"
    ]
