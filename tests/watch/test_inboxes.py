"""Which folders are inboxes right now: explicit ones plus the spool's subfolders."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from daemon.config import Config, load_config
from daemon.watch.inboxes import all_inboxes, spool_inbox

ENV = {"SENDSEVEN_API_TOKEN": "tok-Secret-1234567890", "SENDSEVEN_TENANT_ID": "tenant_1"}


@pytest.fixture(autouse=True)
def _no_stray_env_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run every test in an empty working directory, so no ./.env is picked up by accident."""
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load(tmp_path: Path, yaml_text: str) -> Config:
    return load_config(write(tmp_path / "config.yaml", yaml_text), environ=ENV)


def test_all_inboxes_discovers_spool_subfolders(tmp_path: Path) -> None:
    """Real, non-hidden spool subfolders are inboxes; files, hidden and symlinked ones are not."""
    spool = tmp_path / "spool"
    for name in ("conv_b", "conv_a", ".state", ".hidden", "desk"):
        (spool / name).mkdir(parents=True)
    write(spool / "stray.pdf", "x")
    (tmp_path / "elsewhere").mkdir()
    (spool / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    config = load(
        tmp_path,
        """\
        spool: spool
        text: "{filename}"
        inboxes:
          - {path: spool/desk, conversation_id: conv_desk, text: "desk"}
        """,
    )
    inboxes = all_inboxes(config)
    assert [(i.name, i.conversation_id, i.from_spool) for i in inboxes] == [
        ("conv_a", "conv_a", True),
        ("conv_b", "conv_b", True),
        ("desk", "conv_desk", False),
    ]
    assert inboxes[0].path == spool.resolve() / "conv_a"
    assert inboxes[0].text == "{filename}"
    assert inboxes[2].text == "desk"


def test_all_inboxes_sees_folders_created_later(tmp_path: Path) -> None:
    """A spool subfolder created after loading shows up in the next all_inboxes()."""
    (tmp_path / "spool").mkdir()
    config = load(tmp_path, "spool: spool\n")
    assert all_inboxes(config) == []
    (tmp_path / "spool" / "conv_new").mkdir()
    assert [inbox.conversation_id for inbox in all_inboxes(config)] == ["conv_new"]


def test_a_state_dir_inside_the_spool_is_not_an_inbox(tmp_path: Path) -> None:
    """A non-hidden state_dir under the spool is not taken for a conversation."""
    (tmp_path / "spool" / "journal").mkdir(parents=True)
    config = load(tmp_path, "spool: spool\nstate_dir: spool/journal\n")
    assert all_inboxes(config) == []


def test_spool_inbox(tmp_path: Path) -> None:
    """spool_inbox maps a spool subfolder to its inbox and refuses anything else."""
    spool = tmp_path / "spool"
    for name in ("conv_1", ".hidden", "desk", "conv_1/deeper"):
        (spool / name).mkdir(parents=True)
    config = load(tmp_path, "spool: spool\ninboxes:\n  - {path: spool/desk, conversation_id: d}\n")
    inbox = spool_inbox(config, spool / "conv_1")
    assert inbox is not None
    assert (inbox.conversation_id, inbox.name, inbox.from_spool) == ("conv_1", "conv_1", True)
    assert spool_inbox(config, spool / ".hidden") is None
    assert spool_inbox(config, spool / "conv_1" / "deeper") is None
    assert spool_inbox(config, tmp_path) is None
    assert spool_inbox(config, spool / "never-created") is None
    explicit = spool_inbox(config, spool / "desk")
    assert explicit is not None
    assert (explicit.conversation_id, explicit.from_spool) == ("d", False)
