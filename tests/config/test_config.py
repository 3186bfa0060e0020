"""Configuration: loading, expansion, defaults and validation."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from daemon.config import Config, load_config
from daemon.config.caption import render_text
from daemon.config.environment import load_env_file
from daemon.config.model import DEFAULT_API_URL, DEFAULT_IGNORE
from daemon.errors import ConfigError, ConfigErrors

REPO = Path(__file__).resolve().parents[2]
BEARER = "tok-Secret-1234567890"
ENV = {"SENDSEVEN_API_TOKEN": BEARER, "SENDSEVEN_TENANT_ID": "tenant_1"}


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


def load(tmp_path: Path, yaml_text: str, environ: dict[str, str] | None = None) -> Config:
    config_file = write(tmp_path / "config.yaml", yaml_text)
    return load_config(config_file, environ=ENV if environ is None else environ)


def error_of(tmp_path: Path, yaml_text: str, environ: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, yaml_text, environ)
    return caught.value


def problems(error: ConfigError) -> list[str]:
    """Each problem an error names, as the command prints it (without the program name)."""
    return [str(one) for one in (error.errors if isinstance(error, ConfigErrors) else (error,))]


def test_defaults(tmp_path: Path) -> None:
    """A config with only a spool gets every documented default."""
    (tmp_path / "spool").mkdir()
    config = load(tmp_path, "spool: spool\n")
    assert config.source == (tmp_path / "config.yaml").resolve()
    assert config.api.url == DEFAULT_API_URL
    assert config.api.token == BEARER
    assert config.api.tenant_id == "tenant_1"
    assert (config.api.connect_timeout, config.api.read_timeout) == (10.0, 120.0)
    assert config.spool == (tmp_path / "spool").resolve()
    assert config.inboxes == ()
    assert config.text is None
    assert config.state_dir == config.spool / ".state"
    assert config.workers == 4
    assert config.settle_seconds == 2.0
    assert config.observer == "auto"
    assert config.rescan_interval == 60.0
    assert config.ignore == DEFAULT_IGNORE
    assert (config.retry.initial_delay, config.retry.max_delay) == (1.0, 300.0)
    assert config.retry.give_up_after == 86400.0
    assert (config.log.format, config.log.level) == ("json", "info")
    assert config.metrics.listen is None
    assert config.sent_retention_days is None


def test_every_key_is_read(tmp_path: Path) -> None:
    """Explicit values for every key end up in the Config."""
    from_file = "from-file-bearer"
    write(tmp_path / "token", f"{from_file}\n")
    (tmp_path / "scans" / "desk").mkdir(parents=True)
    config = load(
        tmp_path,
        """\
        api:
          url: http://127.0.0.1:8080/api/v1/
          token_file: token
          tenant_id: t_9
          connect_timeout: 3
          read_timeout: 4.5
        inboxes:
          - path: scans/desk
            conversation_id: conv_1
        text: "{filename}"
        state_dir: state
        workers: 8
        settle_seconds: 0
        observer: polling
        rescan_interval: 5
        ignore: ["*.bak"]
        retry: {initial_delay: 0.5, max_delay: 10, give_up_after: 60}
        log: {format: console, level: DEBUG}
        metrics: {listen: "[::1]:9464"}
        sent_retention_days: 30
        """,
    )
    assert config.api.url == "http://127.0.0.1:8080/api/v1"
    assert config.api.token == from_file
    assert config.api.tenant_id == "t_9"
    assert (config.api.connect_timeout, config.api.read_timeout) == (3.0, 4.5)
    assert config.spool is None
    assert config.state_dir == (tmp_path / "state").resolve()
    assert (config.workers, config.settle_seconds, config.rescan_interval) == (8, 0.0, 5.0)
    assert config.observer == "polling"
    assert config.ignore == ("*.bak",)
    assert (config.retry.initial_delay, config.retry.max_delay) == (0.5, 10.0)
    assert config.retry.give_up_after == 60.0
    assert (config.log.format, config.log.level) == ("console", "debug")
    assert config.metrics.listen == ("::1", 9464)
    assert config.sent_retention_days == 30.0


def test_api_defaults_come_from_the_environment(tmp_path: Path) -> None:
    """url, token and tenant default to SENDSEVEN_API_URL, _API_BEARER and _TENANT_ID."""
    environ = {**ENV, "SENDSEVEN_API_URL": "https://eu.example.test/api/v1"}
    config = load(tmp_path, "spool: .\n", environ)
    assert config.api.url == "https://eu.example.test/api/v1"
    assert config.api.token == BEARER
    assert config.api.tenant_id == "tenant_1"


def test_values_in_the_file_win_over_the_environment_defaults(tmp_path: Path) -> None:
    """A key set in the file is used instead of its SENDSEVEN_* default."""
    config = load(
        tmp_path,
        """\
        spool: .
        api: {url: "http://127.0.0.1:9/v1", token: file-token-1, tenant_id: t_file}
        """,
        {**ENV, "SENDSEVEN_API_URL": "https://env.example.test"},
    )
    assert (config.api.url, config.api.token, config.api.tenant_id) == (
        "http://127.0.0.1:9/v1",
        "file-token-1",
        "t_file",
    )


def test_dot_env_in_the_working_directory_is_read(tmp_path: Path) -> None:
    """A .env in the working directory supplies variables the environment lacks."""
    write(Path.cwd() / ".env", "SENDSEVEN_API_TOKEN=dotenv-token-1\nSENDSEVEN_TENANT_ID=t_env\n")
    config = load(tmp_path, "spool: .\n", {})
    assert (config.api.token, config.api.tenant_id) == ("dotenv-token-1", "t_env")


def test_environment_wins_over_dot_env(tmp_path: Path) -> None:
    """A variable already set in the environment is not overridden by .env."""
    write(Path.cwd() / ".env", "SENDSEVEN_API_TOKEN=dotenv-token-1\nSENDSEVEN_TENANT_ID=t_env\n")
    config = load(tmp_path, "spool: .\n", {"SENDSEVEN_TENANT_ID": "t_real"})
    assert (config.api.token, config.api.tenant_id) == ("dotenv-token-1", "t_real")


def test_env_file_option_replaces_the_working_directory_one(tmp_path: Path) -> None:
    """env_file= is read instead of ./.env."""
    write(Path.cwd() / ".env", "SENDSEVEN_TENANT_ID=t_cwd\n")
    env_file = write(tmp_path / "secrets.env", "SENDSEVEN_TENANT_ID=t_option\n")
    config_file = write(tmp_path / "config.yaml", "spool: .\n")
    environ = {"SENDSEVEN_API_TOKEN": BEARER}
    config = load_config(config_file, env_file=env_file, environ=environ)
    assert config.api.tenant_id == "t_option"


def test_missing_env_file_option_is_an_error(tmp_path: Path) -> None:
    """An env_file= that does not exist is a ConfigError naming it."""
    config_file = write(tmp_path / "config.yaml", "spool: .\n")
    with pytest.raises(ConfigError, match=r"nope\.env"):
        load_config(config_file, env_file=tmp_path / "nope.env", environ=ENV)


def test_loading_does_not_touch_os_environ(tmp_path: Path) -> None:
    """Variables from .env are merged privately, never put into os.environ."""
    write(Path.cwd() / ".env", "SSW_TEST_ONLY_FROM_DOTENV=1\n")
    load(tmp_path, "spool: .\n")
    assert "SSW_TEST_ONLY_FROM_DOTENV" not in os.environ


def test_env_file_values(tmp_path: Path) -> None:
    """Each .env value form gives the documented string."""
    env_file = write(
        tmp_path / ".env",
        r"""
        # a comment

        export EXPORTED=yes
        PLAIN = some value   # trailing comment
        HASH=a#b
        SINGLE='$HOME \n raw' # comment
        DOUBLE="line1\nline2 \"quoted\" \\ end"
        EMPTY=
        DOLLAR=$HOME
        """,
    )
    assert load_env_file(env_file) == {
        "EXPORTED": "yes",
        "PLAIN": "some value",
        "HASH": "a#b",
        "SINGLE": r"$HOME \n raw",
        "DOUBLE": 'line1\nline2 "quoted" \\ end',
        "EMPTY": "",
        "DOLLAR": "$HOME",
    }


@pytest.mark.parametrize("line", ["NO_EQUALS", "1BAD=x", 'OPEN="never closed', "A B=c"])
def test_malformed_env_file_line_is_an_error(tmp_path: Path, line: str) -> None:
    """A malformed .env line is a ConfigError naming the file and the line number."""
    env_file = write(tmp_path / "x.env", f"GOOD=1\n{line}\n")
    with pytest.raises(ConfigError, match=r"x\.env: line 2"):
        load_env_file(env_file)


def test_variables_expand_in_every_string(tmp_path: Path) -> None:
    """${NAME}, ${NAME:-default} and $$ expand in nested values and list items."""
    (tmp_path / "spool-dir").mkdir()
    environ = {**ENV, "SPOOL": "spool-dir", "PATTERN": "*.bak", "EMPTY": ""}
    config = load(
        tmp_path,
        """\
        spool: ${SPOOL}
        state_dir: ${STATE:-state}
        text: "costs $$5 ${EMPTY:-fallback} [${EMPTY}] {filename}"
        ignore: ["${PATTERN}", "${OTHER:-*.old}"]
        log: {level: "${LEVEL:-warning}"}
        """,
        environ,
    )
    assert config.spool == (tmp_path / "spool-dir").resolve()
    assert config.state_dir == (tmp_path / "state").resolve()
    assert config.text == "costs $5 fallback [] {filename}"
    assert config.ignore == ("*.bak", "*.old")
    assert config.log.level == "warning"


def test_numbers_may_come_from_variables(tmp_path: Path) -> None:
    """A numeric key accepts an expanded variable that holds a number."""
    config = load(
        tmp_path,
        "spool: .\nworkers: ${WORKERS:-6}\nsettle_seconds: ${SETTLE}\n",
        {**ENV, "SETTLE": "0.5"},
    )
    assert (config.workers, config.settle_seconds) == (6, 0.5)


def test_expanded_values_are_not_expanded_again(tmp_path: Path) -> None:
    """A variable's value is used as it is, even when it contains ${...}."""
    environ = {"SENDSEVEN_API_TOKEN": BEARER, "TENANT": "${HOME}$$"}
    config = load(tmp_path, "spool: .\napi: {tenant_id: '${TENANT}'}\n", environ)
    assert config.api.tenant_id == "${HOME}$$"


def test_unset_variable_names_the_key_and_the_variable(tmp_path: Path) -> None:
    """An unset variable without a default is an error naming the key and the variable."""
    error = error_of(tmp_path, "spool: .\napi: {token: '${SENDSEVEN_API_TOKEN}'}\n", {})
    assert problems(error) == [
        "api.token: environment variable SENDSEVEN_API_TOKEN is not set",
        "api.tenant_id: not set: set api.tenant_id or SENDSEVEN_TENANT_ID",
    ]
    error = error_of(tmp_path, "inboxes:\n  - path: .\n    conversation_id: ${CONV}\n")
    assert problems(error) == [
        "state_dir: required when there is no spool (for the journal)",
        "inboxes[0].conversation_id: environment variable CONV is not set",
    ]


def test_malformed_variable_reference_is_an_error(tmp_path: Path) -> None:
    """${NAME-x} and an unclosed ${ are errors naming the key."""
    assert error_of(tmp_path, "spool: .\ntext: ${A-b}\n").key == "text"
    assert error_of(tmp_path, "spool: ${SPOOL\n").key == "spool"


def test_token_file(tmp_path: Path) -> None:
    """api.token_file is read (whitespace stripped), relative to the config file."""
    from_file = "file-bearer-abc"
    write(tmp_path / "secrets" / "token", f"  {from_file}\n\n")
    config = load(
        tmp_path, "spool: .\napi: {token_file: secrets/token}\n", {"SENDSEVEN_TENANT_ID": "t"}
    )
    assert config.api.token == from_file


def test_token_file_through_credentials_directory(tmp_path: Path) -> None:
    """${CREDENTIALS_DIRECTORY}/name works, as with systemd LoadCredential=."""
    credential = "cred-bearer-xyz"
    write(tmp_path / "creds" / "sendseven-token", credential)
    environ = {"CREDENTIALS_DIRECTORY": str(tmp_path / "creds"), "SENDSEVEN_TENANT_ID": "t"}
    yaml_text = "spool: .\napi: {token_file: '${CREDENTIALS_DIRECTORY}/sendseven-token'}\n"
    assert load(tmp_path, yaml_text, environ).api.token == credential


def test_token_file_wins_over_the_environment_token(tmp_path: Path) -> None:
    """An explicit token_file is used even when SENDSEVEN_API_TOKEN is set."""
    from_file = "file-bearer-abc"
    write(tmp_path / "token", from_file)
    assert load(tmp_path, "spool: .\napi: {token_file: token}\n").api.token == from_file


@pytest.mark.parametrize(
    ("yaml_text", "key", "words"),
    [
        ("api: {token: abcd-1234, token_file: t}", "api.token_file", "not both"),
        ("api: {token_file: missing}", "api.token_file", "cannot read"),
        ("api: {token_file: empty}", "api.token_file", "is empty"),
        ("api: {token: 'two words'}", "api.token", "whitespace"),
    ],
)
def test_bad_token_settings(tmp_path: Path, yaml_text: str, key: str, words: str) -> None:
    """Conflicting, unreadable, empty or malformed tokens are errors naming the key."""
    write(tmp_path / "empty", "\n")
    write(tmp_path / "t", "abcd-file")
    error = error_of(tmp_path, f"spool: .\n{yaml_text}\n")
    assert error.key == key
    assert words in error.message


def test_missing_token_is_an_error(tmp_path: Path) -> None:
    """No token, token_file or SENDSEVEN_API_TOKEN: ConfigError on api.token."""
    error = error_of(tmp_path, "spool: .\n", {"SENDSEVEN_TENANT_ID": "t"})
    assert error.key == "api.token"
    assert error.message.startswith("not set")


def test_missing_tenant_is_an_error(tmp_path: Path) -> None:
    """An empty or missing tenant is a ConfigError on api.tenant_id."""
    assert error_of(tmp_path, "spool: .\n", {"SENDSEVEN_API_TOKEN": BEARER}).key == "api.tenant_id"
    assert error_of(
        tmp_path, "spool: .\napi: {tenant_id: ''}\n", {"SENDSEVEN_API_TOKEN": BEARER}
    ).key == ("api.tenant_id")


@pytest.mark.parametrize(
    "url", ["ftp://example.test/api", "api.sendseven.com/api/v1", "https://", "http://h:port/x"]
)
def test_url_must_be_http_with_a_host(tmp_path: Path, url: str) -> None:
    """api.url must be an http(s) URL with a host."""
    assert error_of(tmp_path, f"spool: .\napi: {{url: '{url}'}}\n").key == "api.url"


@pytest.mark.parametrize(
    ("yaml_text", "key", "hint"),
    [
        ("spool: .\nretry: {max_dealy: 5}", "retry.max_dealy", "did you mean max_delay?"),
        ("spool: .\nworker: 5", "worker", "did you mean workers?"),
        ("spool: .\napi: {tenant: t}", "api.tenant", "did you mean tenant_id?"),
        ("inboxes:\n  - {path: ., conversation: c}", "inboxes[0].conversation", "conversation_id"),
        ("spool: .\nmetrics: {port: 1}", "metrics.port", ""),
    ],
)
def test_unknown_keys_are_errors(tmp_path: Path, yaml_text: str, key: str, hint: str) -> None:
    """An unknown key anywhere is an error naming its dotted key, with a hint when close."""
    found = error_of(tmp_path, yaml_text + "\n")
    # The inbox case also lacks a state_dir: a second problem, reported with it.
    errors = found.errors if isinstance(found, ConfigErrors) else (found,)
    (error,) = [one for one in errors if one.key.startswith(key)]
    assert error.key == key
    assert error.message.startswith("unknown key")
    assert hint in error.message


@pytest.mark.parametrize(
    ("yaml_text", "key", "expected"),
    [
        ("workers: true", "workers", "expected an integer"),
        ("workers: 2.5", "workers", "expected an integer"),
        ("workers: '4'", "workers", "expected an integer"),
        ("settle_seconds: yes", "settle_seconds", "expected a number"),
        ("rescan_interval: [1]", "rescan_interval", "expected a number"),
        ("retry: {max_delay: fast}", "retry.max_delay", "expected a number"),
        ("retry: 5", "retry", "expected a mapping"),
        ("api: [1]", "api", "expected a mapping"),
        ("api: {tenant_id: 12345}", "api.tenant_id", "expected a string"),
        ("ignore: '*.tmp'", "ignore", "expected a list"),
        ("ignore: ['*.tmp', 3]", "ignore[1]", "expected a non-empty string"),
        ("ignore: ['']", "ignore[0]", "expected a non-empty string"),
        ("inboxes: {path: .}", "inboxes", "expected a list"),
        ("inboxes: [x]", "inboxes[0]", "expected a mapping"),
        ("sent_retention_days: .inf", "sent_retention_days", "finite"),
        ("metrics: {listen: [9464]}", "metrics.listen", "expected a string"),
    ],
)
def test_wrong_types_name_the_key_and_the_type(
    tmp_path: Path, yaml_text: str, key: str, expected: str
) -> None:
    """A value of the wrong type is an error naming the key and the expected type."""
    error = error_of(tmp_path, f"spool: .\n{yaml_text}\n")
    assert error.key == key
    assert expected in error.message


def test_integers_are_accepted_where_numbers_are_expected(tmp_path: Path) -> None:
    """An integer is a fine value for a float key, and is stored as a float."""
    config = load(tmp_path, "spool: .\nsettle_seconds: 3\nretry: {give_up_after: 10}\n")
    assert config.settle_seconds == 3.0
    assert isinstance(config.settle_seconds, float)
    assert config.retry.give_up_after == 10.0


@pytest.mark.parametrize(
    ("yaml_text", "key"),
    [
        ("workers: 0", "workers"),
        ("workers: 257", "workers"),
        ("settle_seconds: -1", "settle_seconds"),
        ("rescan_interval: 0", "rescan_interval"),
        ("api: {connect_timeout: 0}", "api.connect_timeout"),
        ("api: {read_timeout: -5}", "api.read_timeout"),
        ("retry: {initial_delay: 0}", "retry.initial_delay"),
        ("retry: {initial_delay: 10, max_delay: 5}", "retry.max_delay"),
        ("retry: {give_up_after: 0}", "retry.give_up_after"),
        ("sent_retention_days: 0", "sent_retention_days"),
        ("observer: fsevents", "observer"),
        ("log: {format: xml}", "log.format"),
        ("log: {level: trace}", "log.level"),
        ("metrics: {listen: localhost}", "metrics.listen"),
        ("metrics: {listen: '::1:9464'}", "metrics.listen"),
        ("metrics: {listen: '127.0.0.1:70000'}", "metrics.listen"),
    ],
)
def test_out_of_range_values_are_errors(tmp_path: Path, yaml_text: str, key: str) -> None:
    """Values outside their range or set are errors naming the key."""
    assert error_of(tmp_path, f"spool: .\n{yaml_text}\n").key == key


def test_range_edges_are_accepted(tmp_path: Path) -> None:
    """workers 1 and 256, settle_seconds 0 and max_delay == initial_delay are valid."""
    yaml_text = (
        "spool: .\nworkers: 256\nsettle_seconds: 0\nretry: {initial_delay: 5, max_delay: 5}\n"
    )
    config = load(tmp_path, yaml_text)
    assert (config.workers, config.settle_seconds, config.retry.max_delay) == (256, 0.0, 5.0)
    assert load(tmp_path, "spool: .\nworkers: 1\n").workers == 1


def test_metrics_listen_forms(tmp_path: Path) -> None:
    """metrics.listen takes host:port and [ipv6]:port."""
    assert load(tmp_path, "spool: .\nmetrics: {listen: '127.0.0.1:9464'}\n").metrics.listen == (
        "127.0.0.1",
        9464,
    )
    assert load(tmp_path, "spool: .\nmetrics: {listen: '[::]:1'}\n").metrics.listen == ("::", 1)


def test_null_means_the_default(tmp_path: Path) -> None:
    """A key set to null (or an empty section) takes its default."""
    config = load(tmp_path, "spool: .\nworkers: null\nretry:\nlog: {level: null}\ntext: null\n")
    assert (config.workers, config.retry.max_delay, config.log.level) == (4, 300.0, "info")
    assert config.text is None


def test_broken_yaml_names_the_file_and_the_line(tmp_path: Path) -> None:
    """Broken YAML is a ConfigError naming the file and the line."""
    error = error_of(tmp_path, "spool: .\nworkers: 4\napi: {url: [\n")
    assert error.key.endswith("config.yaml")
    assert error.message.startswith("line ")
    error = error_of(tmp_path, "spool: .\nworkers: 4\n  bad: indentation\n")
    assert error.message.startswith("line 3: ")


def test_broken_yaml_error_does_not_quote_the_line(tmp_path: Path) -> None:
    """A YAML error never shows the offending line, which could hold the token."""
    error = error_of(tmp_path, "spool: .\napi:\n  token: abc-SECRET-xyz: oops\n", {})
    assert "SECRET" not in str(error)
    assert error.message.startswith("line 3: ")


def test_duplicate_keys_are_errors(tmp_path: Path) -> None:
    """A key given twice in one mapping is an error, not a silent overwrite."""
    error = error_of(tmp_path, "spool: .\nworkers: 2\nworkers: 3\n")
    assert error.message == "line 3: found the key 'workers' twice"


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    """A missing configuration file is a ConfigError naming it."""
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "absent.yaml", environ=ENV)
    assert "absent.yaml" in caught.value.key


@pytest.mark.parametrize("yaml_text", ["", "- a\n- b\n", "just text\n"])
def test_top_level_must_be_a_mapping(tmp_path: Path, yaml_text: str) -> None:
    """An empty file, a list or a scalar at the top level is an error naming the file."""
    error = error_of(tmp_path, yaml_text)
    assert error.key.endswith("config.yaml")
    assert "mapping" in error.message


def test_spool_or_inboxes_is_required(tmp_path: Path) -> None:
    """Without spool and inboxes there is nothing to watch: an error on spool."""
    error = error_of(tmp_path, "workers: 2\n")
    assert str(error) == "spool: set spool or inboxes (or both)"
    assert error_of(tmp_path, "inboxes: []\n").key == "spool"


def test_state_dir_is_required_without_a_spool(tmp_path: Path) -> None:
    """With only explicit inboxes, state_dir must be given."""
    error = error_of(tmp_path, "inboxes:\n  - {path: a, conversation_id: c}\n")
    assert error.key == "state_dir"


def test_a_state_dir_that_cannot_be_made_is_an_error(tmp_path: Path) -> None:
    """state_dir below a file: check-config says so, instead of run failing later."""
    (tmp_path / "spool").mkdir()
    (tmp_path / "afile").write_text("not a folder", encoding="utf-8")
    error = error_of(tmp_path, "spool: spool\nstate_dir: afile/state\n")
    assert error.key == "state_dir"
    assert str(error) == f"state_dir: {tmp_path / 'afile'} is not a directory (to create " + (
        f"{tmp_path / 'afile' / 'state'})"
    )
    fresh = load(tmp_path, "spool: spool\nstate_dir: new/deeper/state\n")
    assert fresh.state_dir == (tmp_path / "new" / "deeper" / "state").resolve()


def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    """spool, state_dir and inbox paths resolve against the config file's folder."""
    config_file = write(
        tmp_path / "etc" / "config.yaml",
        """\
        spool: ../spool
        state_dir: state
        inboxes:
          - {path: /abs/inbox, conversation_id: c1}
          - {path: inbox, conversation_id: c2}
        """,
    )
    config = load_config(config_file, environ=ENV, check_folders=False)
    assert config.spool == (tmp_path / "spool").resolve()
    assert config.state_dir == (tmp_path / "etc" / "state").resolve()
    assert [inbox.path for inbox in config.inboxes] == [
        Path("/abs/inbox"),
        (tmp_path / "etc" / "inbox").resolve(),
    ]


def test_inboxes(tmp_path: Path) -> None:
    """Explicit inboxes carry their conversation, name and caption (own, default or none)."""
    for name in ("front", "back", "side"):
        (tmp_path / name).mkdir()
    config = load(
        tmp_path,
        """\
        state_dir: state
        text: "default {filename}"
        inboxes:
          - {path: front, conversation_id: conv_1, text: "front {stem}"}
          - {path: back, conversation_id: conv_1}
          - {path: side, conversation_id: conv_2, text: ""}
        """,
    )
    front, back, side = config.inboxes
    assert (front.conversation_id, front.name, front.text) == ("conv_1", "front", "front {stem}")
    assert (back.conversation_id, back.text) == ("conv_1", "default {filename}")
    assert (side.conversation_id, side.text) == ("conv_2", None)
    assert not any(inbox.from_spool for inbox in config.inboxes)


@pytest.mark.parametrize(
    ("inboxes", "key"),
    [
        ("- {conversation_id: c}", "inboxes[0].path"),
        ("- {path: a}", "inboxes[0].conversation_id"),
        ("- {path: a, conversation_id: ''}", "inboxes[0].conversation_id"),
        ("- {path: a, conversation_id: 123}", "inboxes[0].conversation_id"),
        ("- {path: a, conversation_id: c}\n- {path: ./a/, conversation_id: d}", "inboxes[1].path"),
        ("- {path: spool, conversation_id: c}", "inboxes[0].path"),
    ],
)
def test_bad_inboxes(tmp_path: Path, inboxes: str, key: str) -> None:
    """A missing path or conversation, a duplicate folder or the spool itself are errors."""
    yaml_text = "spool: spool\ninboxes:\n" + textwrap.indent(inboxes, "  ") + "\n"
    config_file = write(tmp_path / "config.yaml", yaml_text)
    with pytest.raises(ConfigError) as caught:
        load_config(config_file, environ=ENV, check_folders=False)
    assert caught.value.key == key


def test_two_inboxes_may_share_a_conversation(tmp_path: Path) -> None:
    """Two folders feeding one conversation are allowed."""
    yaml_text = """\
        state_dir: s
        inboxes:
          - {path: a, conversation_id: c}
          - {path: b, conversation_id: c}
        """
    config_file = write(tmp_path / "config.yaml", yaml_text)
    config = load_config(config_file, environ=ENV, check_folders=False)
    assert [inbox.conversation_id for inbox in config.inboxes] == ["c", "c"]


def test_check_folders(tmp_path: Path) -> None:
    """A missing spool or inbox folder is an error unless check_folders=False."""
    assert error_of(tmp_path, "spool: nowhere\n").key == "spool"
    write(tmp_path / "a-file", "x")
    assert error_of(tmp_path, "spool: a-file\n").message.endswith("is not a directory")
    yaml_text = "spool: .\ninboxes:\n  - {path: gone, conversation_id: c}\n"
    assert error_of(tmp_path, yaml_text).key == "inboxes[0].path"
    config_file = write(tmp_path / "config.yaml", yaml_text)
    config = load_config(config_file, environ=ENV, check_folders=False)
    assert config.inboxes[0].path == (tmp_path / "gone").resolve()


@pytest.mark.parametrize(
    "template",
    [
        "{filename}",
        "Scan {stem}.{ext} ({size:,} bytes, {message_type}/{content_type}) {inbox} {date} {time}",
        "literal {{braces}} and {filename!r:>20}",
        "no placeholders at all",
    ],
)
def test_valid_templates(tmp_path: Path, template: str) -> None:
    """Templates using only the documented placeholders load."""
    config = load(tmp_path, f"spool: .\ntext: '{template}'\n")
    assert config.text == template


@pytest.mark.parametrize(
    ("template", "words"),
    [
        ("{file}", "unknown placeholder {file} (did you mean {filename}?)"),
        ("{}", "positional"),
        ("{0}", "positional"),
        ("{filename.upper}", "attribute"),
        ("{filename[0]}", "index"),
        ("{filename", "malformed braces"),
        ("oops }", "malformed braces"),
        ("{size:{width}}", "invalid format"),
        ("{filename:d}", "invalid format"),
        ("{filename!x}", "invalid format"),
    ],
)
def test_invalid_templates(tmp_path: Path, template: str, words: str) -> None:
    """Unknown, positional, attribute/index placeholders and bad braces are errors on the key."""
    for yaml_text, key in [
        (f"spool: .\ntext: '{template}'\n", "text"),
        (
            f"spool: .\ninboxes:\n  - {{path: in, conversation_id: c, text: '{template}'}}\n",
            "inboxes[0].text",
        ),
    ]:
        error = error_of(tmp_path, yaml_text)
        assert error.key == key
        assert words in error.message


def test_render_text() -> None:
    """render_text fills the placeholders, keeps literal braces and never fails on a value."""
    values = {"filename": "scan.pdf", "size": 1234567, "date": "2024-05-01"}
    assert render_text("{filename} {size:,} {{x}}", values) == "scan.pdf 1,234,567 {x}"
    assert render_text("[{inbox}]", values) == "[]"
    assert render_text("{size:,}", {"size": "not a number"}) == "not a number"
    with pytest.raises(ValueError, match="unknown placeholder"):
        render_text("{nope}", values)


@pytest.mark.parametrize(
    "yaml_text",
    [
        "spool: .\nobserver: ${SENDSEVEN_API_TOKEN}\n",
        "spool: ./${SENDSEVEN_API_TOKEN}\n",
        "spool: .\napi: {url: 'ftp://h/${SENDSEVEN_API_TOKEN}'}\n",
        "spool: .\nmetrics: {listen: '${SENDSEVEN_API_TOKEN}'}\n",
    ],
)
def test_errors_never_contain_the_token(tmp_path: Path, yaml_text: str) -> None:
    """A ConfigError never shows the token, even when a bad value contains it."""
    unique = f"bearer-never-seen-{tmp_path.name}"  # not registered by an earlier test
    environ = {"SENDSEVEN_API_TOKEN": unique, "SENDSEVEN_TENANT_ID": "t"}
    error = error_of(tmp_path, yaml_text, environ)
    assert unique not in str(error)
    assert "[REDACTED]" in str(error)


def test_example_config_loads(tmp_path: Path) -> None:
    """config.example.yaml loads when its variables are set."""
    config = load_config(REPO / "config.example.yaml", environ=ENV, check_folders=False)
    assert config.api.url == DEFAULT_API_URL
    assert config.api.token == BEARER
    assert config.spool == Path("/var/spool/sendseven-watch")
    assert [(i.path, i.conversation_id) for i in config.inboxes] == [
        (Path("/srv/scans/front-desk"), "conv_123"),
        (Path("/srv/erp/out"), "conv_erp"),
    ]
    assert config.ignore == DEFAULT_IGNORE
    (front_desk, erp) = config.inboxes
    assert erp.route is not None and "(?P<conversation_id>" in erp.route
    assert (front_desk.settle_seconds, front_desk.archive_layout) == (10.0, "daily")
    assert (config.settle_seconds, config.archive_layout) == (2.0, "flat")


def test_example_config_documents_every_key() -> None:
    """Every key of the configuration appears in config.example.yaml."""
    example = (REPO / "config.example.yaml").read_text(encoding="utf-8")
    for key in (
        "url", "token", "token_file", "tenant_id", "connect_timeout", "read_timeout",
        "spool", "inboxes", "path", "conversation_id", "text", "state_dir", "workers",
        "settle_seconds", "observer", "rescan_interval", "ignore", "retry", "initial_delay",
        "max_delay", "give_up_after", "log", "format", "level", "metrics", "listen",
        "sent_retention_days", "LoadCredential", "CREDENTIALS_DIRECTORY", "archive_layout",
    ):  # fmt: skip
        assert f"{key}:" in example or f"{key}=" in example or f"{{{key}}}" in example, key


def test_metrics_listen_with_only_a_port_stays_on_loopback(tmp_path: Path) -> None:
    """`listen: 9464` and `listen: ":9464"` bind 127.0.0.1, never every interface."""
    for value in ("9464", "':9464'"):
        path = tmp_path / "c.yaml"
        path.write_text(
            "api: {url: 'http://127.0.0.1:1/api/v1', token: tok-123456, tenant_id: t}\n"
            f"spool: {tmp_path}\nmetrics: {{listen: {value}}}\n"
        )
        assert load_config(path).metrics.listen == ("127.0.0.1", 9464)
