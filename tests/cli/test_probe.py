"""``check-config --probe`` through the installed command: one line per endpoint, and an
exit code per kind of mistake (0 fine, 2 misconfigured, 3 credentials, 1 unreachable)."""

from __future__ import annotations

from pathlib import Path

from daemon.fake import FakeApi, Faults
from tests.helpers import TENANT, TOKEN, Tls, clean_env, run_cli, write_config


def _probe(config: Path, env: dict[str, str] | None = None) -> tuple[int, list[str]]:
    result = run_cli("check-config", "-c", str(config), "--probe", env=env)
    lines = [line for line in result.stdout.splitlines() if line.startswith("probe")]
    return result.returncode, lines


def test_a_right_configuration_probes_fine_and_creates_nothing(
    api: FakeApi, tmp_path: Path
) -> None:
    """Both endpoints answer 400 to the empty requests: exit 0, nothing created."""
    code, lines = _probe(write_config(tmp_path, api.url))
    assert code == 0, lines
    assert [line.split(":")[0] for line in lines] == [
        "probe attachments",
        "probe messages",
        "probe",
    ]
    assert all(": ok: " in line for line in lines[:2])
    assert api.attachments() == [] and api.messages() == []
    assert [r.status for r in api.requests()] == [400, 400]


def test_check_config_without_probe_stays_offline(api: FakeApi, tmp_path: Path) -> None:
    """Plain check-config never talks to the API."""
    result = run_cli("check-config", "-c", str(write_config(tmp_path, api.url)))
    assert result.returncode == 0, result.stderr
    assert api.requests() == []
    assert "probe" not in result.stdout


def test_a_url_without_the_api_path_exits_2(api: FakeApi, tmp_path: Path) -> None:
    """api.url missing /api/v1: exit 2, the hint on the attachments line."""
    code, lines = _probe(write_config(tmp_path, api.origin))
    assert code == 2
    assert lines[0] == (
        f"probe attachments: api_misconfigured: an upload without a file to "
        f"{api.origin}/attachments got HTTP 404; do: api.url should end in /api/v1"
    )
    assert lines[1].startswith("probe messages: api_misconfigured: ")


def test_a_redirect_exits_2_and_names_the_new_url(api: FakeApi, tmp_path: Path) -> None:
    """An http -> https redirect: exit 2, the line says which api.url to set."""
    api.faults = Faults(redirect_to="https://api.example.org")
    code, lines = _probe(write_config(tmp_path, api.url))
    assert code == 2
    assert lines[0].endswith("set api.url to https://api.example.org/api/v1")
    assert "got HTTP 301" in lines[0]


def test_an_untrusted_certificate_exits_2_until_ca_bundle_names_the_ca(tmp_path: Path) -> None:
    """HTTPS with a private CA: exit 2 with a TLS hint, then 0 with api.ca_bundle set."""
    tls = Tls(tmp_path / "tls")
    env = {k: v for k, v in clean_env().items() if "CA_BUNDLE" not in k and "SSL_CERT" not in k}
    with FakeApi(token=TOKEN, tenant_id=TENANT, tls=tls.server) as server:
        code, lines = _probe(write_config(tmp_path, server.url), env)
        assert code == 2
        assert "certificate" in lines[0] and "set api.ca_bundle" in lines[0]
        trusted = write_config(tmp_path, server.url, api={"ca_bundle": str(tls.ca_pem)})
        code, lines = _probe(trusted, env)
        assert code == 0, lines


def test_refused_credentials_exit_3(api: FakeApi, tmp_path: Path) -> None:
    """A token the API refuses: exit 3, the line names api.token."""
    api.accept_tokens("another-token")
    code, lines = _probe(write_config(tmp_path, api.url))
    assert code == 3
    assert lines[0].startswith("probe attachments: credentials refused: ")
    assert "HTTP 401" in lines[0] and "api.token" in lines[0]


def test_nobody_listening_exits_1(tmp_path: Path) -> None:
    """A host that does not answer: exit 1, unreachable."""
    config = write_config(tmp_path, "http://127.0.0.1:9/api/v1", api={"connect_timeout": 2})
    code, lines = _probe(config)
    assert code == 1
    assert lines[0].startswith("probe attachments: unreachable: ")


def test_a_proxy_502_page_exits_1(api: FakeApi, tmp_path: Path) -> None:
    """A proxy's HTML 502: the API is not reachable now (exit 1), not misconfigured."""
    api.faults = Faults(html_status=502)
    code, lines = _probe(write_config(tmp_path, api.url))
    assert code == 1
    assert "HTTP 502 (a text/html page: 502 Bad Gateway)" in lines[0]


def test_a_misconfiguration_wins_over_refused_credentials(api: FakeApi, tmp_path: Path) -> None:
    """One endpoint misconfigured, the other refusing the token: exit 2 (fix the URL first)."""
    api.accept_tokens("another-token")
    api.force(404, endpoint="upload")
    code, lines = _probe(write_config(tmp_path, api.url))
    assert code == 2
    assert "api_misconfigured" in lines[0] and "credentials refused" in lines[1]


def test_a_bad_ca_bundle_is_a_config_error(api: FakeApi, tmp_path: Path) -> None:
    """api.ca_bundle naming nothing is refused by check-config, naming the key."""
    config = write_config(tmp_path, api.url, api={"ca_bundle": str(tmp_path / "nope.pem")})
    result = run_cli("check-config", "-c", str(config))
    assert result.returncode == 2
    assert result.stderr.startswith("sendseven-watch: api.ca_bundle: ")
