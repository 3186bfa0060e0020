"""Deployment mistakes at the client: each one is ApiMisconfigured with a hint, over real
HTTP(S) against the fake API, with real certificates (trustme) and a real CONNECT proxy."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.api.client import ApiClient
from daemon.errors import ApiMisconfigured, AuthError, RequestRejected, ServerBusy
from daemon.fake import FakeApi, Faults
from tests.helpers import TENANT, TOKEN, ConnectProxy, Tls

_TRUST_ENV = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR")
_PROXY_ENV = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


@pytest.fixture(autouse=True)
def _plain_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No CA bundle or proxy from the developer's shell."""
    for name in (*_TRUST_ENV, *_PROXY_ENV):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.fixture
def tls(tmp_path: Path) -> Tls:
    return Tls(tmp_path / "tls")


@pytest.fixture
def https_api(tls: Tls) -> Iterator[FakeApi]:
    """The fake API over HTTPS, its certificate signed by the private CA of ``tls``."""
    with FakeApi(token=TOKEN, tenant_id=TENANT, tls=tls.server) as server:
        yield server


def _pdf(tmp_path: Path) -> Path:
    path = tmp_path / "scan.pdf"
    path.write_bytes(b"%PDF-1.4\n" + bytes(range(256)) * 8)
    return path


def _deliver(client: ApiClient, tmp_path: Path) -> str:
    attachment = client.upload(_pdf(tmp_path), "scan.pdf", "application/pdf")
    message = client.send("conv_1", "document", [attachment.id], None, "sw-key-tls")
    client.close()
    return message.id


def _client(url: str, **kwargs: object) -> ApiClient:
    return ApiClient(url, TOKEN, TENANT, connect_timeout=5, read_timeout=10, **kwargs)  # type: ignore[arg-type]


def _misconfigured(client: ApiClient, tmp_path: Path, endpoint: str) -> ApiMisconfigured:
    with pytest.raises(ApiMisconfigured) as raised:
        if endpoint == "attachments":
            client.upload(_pdf(tmp_path), "scan.pdf", "application/pdf")
        else:
            client.send("conv_1", "document", ["att_x"], None, "sw-key-x")
    client.close()
    return raised.value


# -- TLS -----------------------------------------------------------------------------------


def test_https_with_ca_bundle_sends(https_api: FakeApi, tls: Tls, tmp_path: Path) -> None:
    """A private CA named by ca_bundle is trusted: upload and send go through over HTTPS."""
    assert https_api.url.startswith("https://")
    _deliver(_client(https_api.url, ca_bundle=tls.ca_pem), tmp_path)
    assert [m.idempotency_key for m in https_api.messages()] == ["sw-key-tls"]


def test_an_untrusted_certificate_is_misconfigured_with_a_tls_hint(
    https_api: FakeApi, tmp_path: Path
) -> None:
    """Without the CA, the certificate fails verification: ApiMisconfigured naming
    the verification error and api.ca_bundle, no status, and nothing reached the API."""
    error = _misconfigured(_client(https_api.url), tmp_path, "attachments")
    assert error.status is None
    assert error.error is not None and "certificate" in error.error
    assert "api.ca_bundle" in error.hint
    assert "unable to get local issuer certificate" in error.hint
    assert error.fields() == {
        "endpoint": "attachments",
        "url": f"{https_api.url}/attachments",
        "error": error.error,
        "hint": error.hint,
    }
    assert https_api.requests() == []


def test_a_certificate_for_another_host_is_misconfigured(tmp_path: Path) -> None:
    """A trusted CA but a certificate for another name: a TLS hint, not a transient error."""
    other = Tls(tmp_path / "tls", "api.example.org")
    with FakeApi(token=TOKEN, tenant_id=TENANT, tls=other.server) as server:
        error = _misconfigured(_client(server.url, ca_bundle=other.ca_pem), tmp_path, "messages")
    assert error.error is not None and "api.ca_bundle" in error.hint
    assert "127.0.0.1" in error.hint  # OpenSSL names the host it did not find


def test_https_to_a_plain_http_port_is_misconfigured(api: FakeApi, tmp_path: Path) -> None:
    """An https:// URL to a server without TLS says so instead of retrying forever."""
    url = api.url.replace("http://", "https://")
    error = _misconfigured(_client(url), tmp_path, "attachments")
    assert "does not speak TLS" in error.hint


@pytest.mark.parametrize("variable", ["REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE"])
def test_the_ca_bundle_of_the_environment_is_trusted(
    https_api: FakeApi, tls: Tls, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    """$REQUESTS_CA_BUNDLE / $CURL_CA_BUNDLE (requests' own) and $SSL_CERT_FILE (OpenSSL's
    store) are honoured on the client's direct urllib3 path."""
    monkeypatch.setenv(variable, str(tls.ca_pem))
    _deliver(_client(https_api.url), tmp_path)
    assert len(https_api.messages()) == 1


def test_ca_bundle_wins_over_the_environment(
    https_api: FakeApi, tls: Tls, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """api.ca_bundle is used even when $REQUESTS_CA_BUNDLE names another CA."""
    stranger = Tls(tmp_path / "stranger")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(stranger.ca_pem))
    with pytest.raises(ApiMisconfigured):
        _deliver(_client(https_api.url), tmp_path)
    _deliver(_client(https_api.url, ca_bundle=tls.ca_pem), tmp_path)


# -- proxies -------------------------------------------------------------------------------


def test_https_goes_through_the_connect_proxy_of_the_environment(
    https_api: FakeApi, tls: Tls, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """$HTTPS_PROXY is honoured: the client tunnels with CONNECT and verifies the API's
    certificate end to end through the tunnel."""
    with ConnectProxy() as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        client = _client(https_api.url, ca_bundle=tls.ca_pem)
        assert client.proxy == proxy.url
        _deliver(client, tmp_path)
    host = https_api.url.split("/")[2]
    assert proxy.seen and all(line.startswith(f"CONNECT {host} HTTP/") for line in proxy.seen)
    assert len(https_api.messages()) == 1


def test_an_untrusted_certificate_through_the_proxy_is_misconfigured(
    https_api: FakeApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through a CONNECT tunnel an unknown CA is the same deployment mistake."""
    with ConnectProxy() as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        error = _misconfigured(_client(https_api.url), tmp_path, "attachments")
    assert "api.ca_bundle" in error.hint


def test_no_proxy_bypasses_the_proxy(
    api: FakeApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """$NO_PROXY wins over $HTTP_PROXY: a proxy that does not exist is never asked."""
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    client = _client(api.url)
    assert client.proxy is None
    _deliver(client, tmp_path)


# -- replies that are not the API's ------------------------------------------------------


@pytest.mark.parametrize("endpoint", ["attachments", "messages"])
@pytest.mark.parametrize("status", [301, 308])
def test_a_redirect_is_misconfigured_and_names_its_location(
    api: FakeApi, tmp_path: Path, endpoint: str, status: int
) -> None:
    """An http -> https style redirect from either endpoint: the hint says where to point."""
    api.faults = Faults(redirect_to="https://api.example.org", redirect_status=status)
    error = _misconfigured(_client(api.url), tmp_path, endpoint)
    assert error.status == status
    assert error.hint == (
        f"the server redirects to https://api.example.org/api/v1/{endpoint}: "
        "set api.url to https://api.example.org/api/v1"
    )
    assert api.attachments() == [] and api.messages() == []


@pytest.mark.parametrize("endpoint", ["attachments", "messages"])
def test_a_url_without_the_api_path_is_misconfigured(
    api: FakeApi, tmp_path: Path, endpoint: str
) -> None:
    """api.url without /api/v1 meets the web server's HTML 404 on both endpoints."""
    error = _misconfigured(_client(api.origin), tmp_path, endpoint)
    assert error.status == 404
    assert "api.url should end in /api/v1" in error.hint
    assert error.url == f"{api.origin}/{endpoint}"


def test_a_404_from_attachments_is_misconfigured_even_as_json(api: FakeApi, tmp_path: Path) -> None:
    """The upload names no conversation: its 404 is a wrong path, whatever the body."""
    api.force(404, endpoint="upload")
    error = _misconfigured(_client(api.url), tmp_path, "attachments")
    assert (
        error.hint
        == "api.url should end in /api/v1 on the API's host (it does: is the host right?)"
    )


def test_a_404_from_messages_with_the_api_json_is_conversation_not_found(
    tmp_path: Path,
) -> None:
    """Only the API's own JSON 404 from /messages means an unknown conversation."""
    with FakeApi(token=TOKEN, tenant_id=TENANT, conversations={"known"}) as server:
        client = _client(server.url)
        attachment = client.upload(_pdf(tmp_path), "scan.pdf", "application/pdf")
        with pytest.raises(RequestRejected) as raised:
            client.send("unknown", "document", [attachment.id], None, "k")
        client.close()
    assert (raised.value.status, raised.value.reason) == (404, "conversation_not_found")


@pytest.mark.parametrize("status", [404, 405, 400, 403])
def test_an_html_4xx_from_messages_is_misconfigured(
    api: FakeApi, tmp_path: Path, status: int
) -> None:
    """A 4xx page that is not the API's JSON error (a web server, a proxy, a firewall)
    is a deployment mistake, never a verdict on the file or the token."""
    api.faults = Faults(html_status=status)
    error = _misconfigured(_client(api.url), tmp_path, "messages")
    assert error.status == status
    assert not isinstance(error, RequestRejected | AuthError)
    assert "text/html" in error.hint or status == 405


def test_a_json_403_is_still_an_auth_error(api: FakeApi, tmp_path: Path) -> None:
    """The API's own 401/403 stays a credentials problem."""
    client = ApiClient(api.url, TOKEN, "another-tenant", connect_timeout=5)
    with pytest.raises(AuthError):
        client.upload(_pdf(tmp_path), "scan.pdf", "application/pdf")
    client.close()


@pytest.mark.parametrize("endpoint", ["attachments", "messages"])
def test_a_proxy_html_502_page_is_a_busy_server(
    api: FakeApi, tmp_path: Path, endpoint: str
) -> None:
    """A proxy's HTML 502 passes (the API behind it restarts): retried, with the page's
    title as its detail instead of the markup."""
    api.faults = Faults(html_status=502)
    client = _client(api.url)
    with pytest.raises(ServerBusy) as raised:
        if endpoint == "attachments":
            client.upload(_pdf(tmp_path), "scan.pdf", "application/pdf")
        else:
            client.send("conv_1", "document", ["att_x"], None, "k")
    client.close()
    assert raised.value.status == 502
    assert raised.value.detail == "a text/html page: 502 Bad Gateway"


def test_the_url_shown_has_no_credentials(api: FakeApi, tmp_path: Path) -> None:
    """user:password in api.url never reaches the error's url or hint."""
    url = api.origin.replace("http://", "http://user:pa55word@")
    error = _misconfigured(_client(url), tmp_path, "attachments")
    assert "pa55word" not in str(error.fields())
    assert error.url == f"{api.origin}/attachments"


def test_probe_requests_create_nothing(api: FakeApi) -> None:
    """The probe's upload without a file and empty message are each refused with 400."""
    client = _client(api.url)
    assert client.probe("attachments").status == 400
    assert client.probe("messages").status == 400
    client.close()
    assert api.attachments() == [] and api.messages() == []
    assert [r.status for r in api.requests()] == [400, 400]
