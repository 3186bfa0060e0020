"""The schema is the dataclasses: allowed keys, defaults and the reload diff come from them;
every problem of a file is reported in one run."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest

from daemon.api.client import ApiClient
from daemon.config import load_config
from daemon.config.model import (
    ApiConfig,
    ArchiveLayout,
    Config,
    Duplicates,
    InboxConfig,
    IntakeSettings,
    LogConfig,
    MetricsConfig,
    RetryConfig,
    changed_keys,
    default_of,
    file_keys,
    restart_keys,
)
from daemon.errors import AuthError, ConfigError, ConfigErrors, TransportError
from daemon.fake.api import FakeApi
from daemon.fake.rules import Faults
from tests.helpers import TENANT, TOKEN, clean_env, run_cli

ENV = {"SENDSEVEN_API_TOKEN": "tok-Schema-1234567890", "SENDSEVEN_TENANT_ID": "tenant_1"}
THREE_MISTAKES = """\
    api: {url: "ftp://nowhere", token: tok-three-1234, tenant_id: t}
    spool: spool
    workers: 0
    bogus: 1
    """


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


def problems_of(tmp_path: Path, yaml_text: str, environ: dict[str, str] | None = None) -> list[str]:
    """Every problem load_config finds in ``yaml_text``, one "key: message" string each."""
    (tmp_path / "spool").mkdir(exist_ok=True)
    config_file = write(tmp_path / "config.yaml", yaml_text)
    with pytest.raises(ConfigError) as caught:
        load_config(config_file, environ=ENV if environ is None else environ)
    error = caught.value
    return [str(one) for one in (error.errors if isinstance(error, ConfigErrors) else (error,))]


# --- every problem in one run -----------------------------------------------------------


def test_check_config_names_every_problem_in_one_run(tmp_path: Path) -> None:
    """A bad URL, `workers: 0` and an unknown key: three lines naming each key, exit 2."""
    (tmp_path / "spool").mkdir()
    config = write(tmp_path / "config.yaml", THREE_MISTAKES)
    for command in (["check-config"], ["run", "--once"], ["run"]):
        result = run_cli(*command, "-c", str(config), env=clean_env())
        assert result.returncode == 2, (command, result.stderr)
        assert result.stdout == ""
        assert result.stderr.splitlines() == [
            "sendseven-watch: api.url: expected an http(s) URL with a host, got 'ftp://nowhere'",
            "sendseven-watch: workers: must be between 1 and 256, got 0",
            "sendseven-watch: bogus: unknown key",
        ]


def test_all_problems_travel_in_one_error(tmp_path: Path) -> None:
    """ConfigErrors carries every problem; its key (for config_invalid) is the first one's."""
    (tmp_path / "spool").mkdir()
    config_file = write(tmp_path / "config.yaml", THREE_MISTAKES)
    with pytest.raises(ConfigErrors) as caught:
        load_config(config_file, environ={})
    error = caught.value
    assert [one.key for one in error.errors] == ["api.url", "workers", "bogus"]
    assert error.key == "api.url"
    assert str(error) == "; ".join(str(one) for one in error.errors)


def test_problems_in_every_section_are_all_reported(tmp_path: Path) -> None:
    """One mistake per section: each one is named, in the order of the file."""
    assert problems_of(
        tmp_path,
        """\
        spool: spool
        api: {connect_timeout: -1, tenant: t}
        inboxes:
          - {path: a, conversation_id: c, text: "{nope}"}
          - {path: b}
        observer: fsevents
        ignore: ["", "*.bak"]
        retry: {initial_delay: 0}
        log: {format: xml, level: loud}
        metrics: {listen: localhost}
        sent_retention_days: -2
        unset: ${NOT_SET_ANYWHERE}
        """,
    ) == [
        "api.tenant: unknown key (did you mean tenant_id?)",
        "api.connect_timeout: must be > 0, got -1",
        "inboxes[0].text: unknown placeholder {nope}; known: filename, stem, ext, "
        "message_type, content_type, size, inbox, date, time, subfolder",
        "inboxes[1].conversation_id: required (a non-empty string)",
        "observer: 'fsevents' is not one of auto, inotify, polling",
        "ignore[0]: expected a non-empty string (a file name pattern)",
        "retry.initial_delay: must be > 0, got 0",
        "log.format: 'xml' is not one of json, console",
        "log.level: 'loud' is not one of debug, info, warning, error",
        "metrics.listen: expected host:port (e.g. 127.0.0.1:9464 or [::1]:9464), got 'localhost'",
        "sent_retention_days: must be > 0, got -2",
        "unset: environment variable NOT_SET_ANYWHERE is not set",
        "unset: unknown key",
    ]


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        # A misspelt key is not reported missing as well.
        (
            "state_dir: s\ninboxes:\n  - {path: spool, conversation: c}\n",
            ["inboxes[0].conversation: unknown key (did you mean conversation_id?)"],
        ),
        # A spool of the wrong type is not "no spool" (set spool or inboxes, state_dir).
        ("spool: 5\n", ["spool: expected a string, got an integer (quote it)"]),
        # A spool that does not exist does not make its state_dir a second problem.
        ("spool: nowhere\n", ["spool: {tmp}/nowhere does not exist"]),
        # max_delay is compared with a valid initial_delay only.
        ("spool: spool\nretry: {initial_delay: x, max_delay: 0.5}\n", ["retry.initial_delay: "]),
        # A token that cannot be expanded is not also "not set".
        ("spool: spool\napi: {token: '${NO_SUCH_TOKEN}'}\n", ["api.token: environment var"]),
        # An api that is not a mapping does not also lack a tenant.
        ("spool: spool\napi: [1]\n", ["api: expected a mapping, got a list"]),
    ],
)
def test_one_mistake_is_reported_once(tmp_path: Path, yaml_text: str, expected: list[str]) -> None:
    """What follows from a problem already named is not reported again as another one."""
    environ = {"SENDSEVEN_API_TOKEN": "tok-once-12345", "SENDSEVEN_TENANT_ID": "t"}
    found = problems_of(tmp_path, yaml_text, environ)
    assert len(found) == len(expected), found
    for line, start in zip(found, expected, strict=True):
        assert line.startswith(start.format(tmp=tmp_path.resolve())), line


def test_a_folder_problem_names_its_own_inbox(tmp_path: Path) -> None:
    """After a bad inboxes[0], the missing folder of inboxes[1] is still inboxes[1].path."""
    found = problems_of(
        tmp_path,
        """\
        spool: spool
        inboxes:
          - {path: spool/x}
          - {path: gone, conversation_id: c}
        """,
    )
    assert found == [
        "inboxes[0].conversation_id: required (a non-empty string)",
        f"inboxes[1].path: {tmp_path.resolve() / 'gone'} does not exist",
    ]


def test_the_token_is_in_no_problem(tmp_path: Path) -> None:
    """With several problems, the token is redacted from each, even one found before it."""
    token = f"tok-several-{tmp_path.name}"
    found = problems_of(
        tmp_path,
        f"""\
        spool: ./{token}
        observer: "{token}"
        api: {{token: "{token}", url: "ftp://h/{token}"}}
        inboxes: [{{path: "in-{token}", conversation_id: c}}]
        metrics: {{listen: "{token}"}}
        log: {{level: "${{TOKEN_AGAIN}}x"}}
        """,
        {"SENDSEVEN_TENANT_ID": "t", "TOKEN_AGAIN": token},
    )
    assert len(found) == 6, found
    assert all("[REDACTED]" in line for line in found[:-1]), found
    assert not any(token in line for line in found)


# --- the schema ---------------------------------------------------------------------------


def test_allowed_keys_are_the_dataclass_fields() -> None:
    """Each mapping allows its dataclass's fields, token_file besides token, no derived ones."""
    assert file_keys(ApiConfig) == (
        "url", "token", "token_file", "tenant_id", "connect_timeout", "read_timeout", "ca_bundle",
    )  # fmt: skip
    intake = (
        "settle_seconds", "ignore", "recursive", "max_depth", "include", "done_marker",
        "duplicates", "duplicate_window", "route", "archive_layout",
    )  # fmt: skip
    assert file_keys(IntakeSettings) == intake
    assert file_keys(InboxConfig) == (*intake, "path", "conversation_id", "text")
    assert file_keys(RetryConfig) == ("initial_delay", "max_delay", "give_up_after")
    assert file_keys(LogConfig) == ("format", "level")
    assert file_keys(MetricsConfig) == ("listen",)
    top = [one.name for one in dataclasses.fields(Config) if one.name != "source"]
    assert list(file_keys(Config)) == top


@pytest.mark.parametrize(
    ("schema", "prefix", "yaml_text"),
    [
        (Config, "", "spool: spool\n{key}: 1\n"),
        (ApiConfig, "api.", "spool: spool\napi: {{{key}: 1}}\n"),
        (RetryConfig, "retry.", "spool: spool\nretry: {{{key}: 1}}\n"),
        (LogConfig, "log.", "spool: spool\nlog: {{{key}: 1}}\n"),
        (MetricsConfig, "metrics.", "spool: spool\nmetrics: {{{key}: 1}}\n"),
        (InboxConfig, "inboxes[0].", "spool: spool\ninboxes: [{{{key}: 1}}]\n"),
    ],
)
def test_the_unknown_key_check_follows_the_schema(
    tmp_path: Path, schema: type[Config], prefix: str, yaml_text: str
) -> None:
    """A key one letter off any field is refused with that field as the suggestion."""
    for key in file_keys(schema):
        found = problems_of(tmp_path, yaml_text.format(key=key + "x"))
        assert f"{prefix}{key}x: unknown key (did you mean {key}?)" in found


def test_defaults_are_the_dataclass_defaults(tmp_path: Path) -> None:
    """A config with only a spool gets each field's own default, for every section."""
    (tmp_path / "spool").mkdir()
    config = load_config(write(tmp_path / "config.yaml", "spool: spool\n"), environ=ENV)
    sections = [
        (config, Config), (config.api, ApiConfig), (config.retry, RetryConfig),
        (config.log, LogConfig), (config.metrics, MetricsConfig),
    ]  # fmt: skip
    # Intake settings are Config's fields too: counted there, 10 of them.
    checked = 0
    for value, schema in sections:
        for one in dataclasses.fields(schema):
            if (
                one.default is not dataclasses.MISSING
                or one.default_factory is not dataclasses.MISSING
            ):
                assert getattr(value, one.name) == default_of(schema, one.name), one.name
                checked += 1
    assert checked == 27
    assert ApiClient.__init__.__kwdefaults__ is not None
    assert ApiClient.__init__.__kwdefaults__["connect_timeout"] == default_of(
        ApiConfig, "connect_timeout"
    )
    assert ApiClient.__init__.__kwdefaults__["read_timeout"] == default_of(
        ApiConfig, "read_timeout"
    )


def test_reload_diff_names_each_changed_key(tmp_path: Path) -> None:
    """Each top-level key of the file, changed alone, is the one change reported."""
    (tmp_path / "spool").mkdir()
    old = load_config(write(tmp_path / "config.yaml", "spool: spool\n"), environ=ENV)
    other = {
        "api": dataclasses.replace(old.api, token="tok-another-123"),
        "spool": tmp_path,
        "inboxes": (InboxConfig(tmp_path / "in", "c", None, "in"),),
        "text": "{filename}",
        "state_dir": tmp_path / "state",
        "workers": 5,
        "settle_seconds": 3.0,
        "max_write_pause": 60.0,
        "observer": "polling",
        "rescan_interval": 9.0,
        "ignore": ("*.bak",),
        "retry": RetryConfig(max_delay=7.0),
        "log": LogConfig(level="debug"),
        "metrics": MetricsConfig(("127.0.0.1", 9464)),
        "sent_retention_days": 3.0,
        "recursive": True,
        "max_depth": 2,
        "include": ("*.pdf",),
        "done_marker": "{name}.done",
        "duplicates": Duplicates.SEND,
        "duplicate_window": 60.0,
        "route": "(?P<conversation_id>.+)__",
        "archive_layout": ArchiveLayout.DAILY,
    }
    assert set(other) == set(file_keys(Config))
    for key, value in other.items():
        assert changed_keys(old, dataclasses.replace(old, **{key: value})) == {key}  # type: ignore[arg-type]
    assert changed_keys(old, dataclasses.replace(old, source=tmp_path / "elsewhere.yaml")) == set()
    everything = dataclasses.replace(old, **other)  # type: ignore[arg-type]
    assert changed_keys(old, everything) == set(other)
    assert restart_keys(changed_keys(old, everything)) == [
        "state_dir", "workers", "observer", "metrics",
    ]  # fmt: skip
    assert restart_keys({"text", "retry"}) == []


# --- the API client from the configuration -------------------------------------------------


def test_api_client_from_config(api: FakeApi, tmp_path: Path) -> None:
    """from_config uses the configured URL, token, tenant and read timeout."""
    pdf = tmp_path / "scan.pdf"
    pdf.write_bytes(b"%PDF-1.4\n" + bytes(range(256)) * 8)
    settings = ApiConfig(api.url, TOKEN, TENANT, connect_timeout=2, read_timeout=5)
    client = ApiClient.from_config(settings)
    attachment = client.upload(pdf, "scan.pdf", "application/pdf")
    client.send("conv_1", "document", [attachment.id], None, "sw-from-config")
    client.close()
    assert [m.conversation_id for m in api.messages()] == ["conv_1"]

    other_tenant = ApiClient.from_config(dataclasses.replace(settings, tenant_id="t_other"))
    with pytest.raises(AuthError):
        other_tenant.upload(pdf, "scan.pdf", "application/pdf")
    other_tenant.close()

    api.faults = Faults(upload_latency_s=2.0)
    seen: list[tuple[str, int | None]] = []
    impatient = ApiClient.from_config(
        dataclasses.replace(settings, read_timeout=0.3),
        on_request=lambda endpoint, status, _: seen.append((endpoint, status)),
    )
    with pytest.raises(TransportError):
        impatient.upload(pdf, "scan.pdf", "application/pdf")
    impatient.close()
    assert [status for _, status in seen] == [None]
