"""``check-config``'s description of a configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.cli.check import describe
from daemon.config import load_config
from daemon.config.model import DEFAULT_API_URL

BEARER = "tok-Secret-1234567890"
ENV = {"SENDSEVEN_API_TOKEN": BEARER, "SENDSEVEN_TENANT_ID": "tenant_1"}


@pytest.fixture(autouse=True)
def _no_stray_env_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run every test in an empty working directory, so no ./.env is picked up by accident."""
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)


def test_describe_never_shows_the_token(tmp_path: Path) -> None:
    """check-config's description lists url, tenant, state_dir and inboxes but not the token."""
    (tmp_path / "spool" / "conv_1").mkdir(parents=True)
    (tmp_path / "config.yaml").write_text("spool: spool\n", encoding="utf-8")
    config = load_config(tmp_path / "config.yaml", environ=ENV)
    lines = describe(config)
    text = "\n".join(lines)
    assert BEARER not in text
    assert BEARER not in repr(config)
    assert DEFAULT_API_URL in text
    assert "tenant_1" in text
    assert str(config.state_dir) in text
    assert f"{config.spool}/conv_1 -> conv_1" in text
