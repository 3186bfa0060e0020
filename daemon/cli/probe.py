"""``check-config --probe``: are the URL, the TLS trust and the credentials right?

Asks each endpoint something the API must refuse with 400 and that creates nothing: an
upload without a file part, and an empty message. A 400 means the endpoint is there, speaks
the API's JSON and took the token (the API checks credentials first). Anything else is
named with what to do, one line per endpoint, and sets the exit code:

- 0: both endpoints answered as the API does;
- 2: a deployment mistake (``api_misconfigured``: wrong URL or path, a redirect, a page
  from something else than the API, an untrusted TLS certificate);
- 3: the credentials were refused (401/403);
- 1: the API could not be reached (or answered 5xx/429: try again later).

When endpoints disagree, the first of 2, 3, 1 wins: a wrong URL hides whether the token is
right, and so does an unreachable host.
"""

from __future__ import annotations

from collections.abc import Callable

from daemon.api import ApiClient
from daemon.api.replies import public_url
from daemon.config import Config
from daemon.errors import (
    ApiError,
    ApiMisconfigured,
    AuthError,
    ServerBusy,
    TransportError,
)
from daemon.states import ExitCode

#: Which exit code wins when the endpoints disagree (earlier wins).
_PRECEDENCE = (ExitCode.USAGE, ExitCode.AUTH, ExitCode.FAILURE, ExitCode.OK)
_ASKED = {
    "attachments": "an upload without a file",
    "messages": "an empty message",
}


def probe(config: Config, say: Callable[[str], None] = print) -> int:
    """Probe both endpoints, saying one line each and a verdict; returns the exit code."""
    client = ApiClient.from_config(config.api)
    try:
        via = f" via proxy {client.proxy}" if client.proxy else ""
        codes = [_probe_one(client, endpoint, via, say) for endpoint in _ASKED]
    finally:
        client.close()
    code = min(codes, key=_PRECEDENCE.index)
    verdicts = {
        ExitCode.OK: "the API answers as it should: credentials and both endpoints are fine",
        ExitCode.USAGE: "api_misconfigured: fix api.url / api.ca_bundle (see above)",
        ExitCode.AUTH: "credentials refused: fix api.token / api.tenant_id (see above)",
        ExitCode.FAILURE: "the API could not be reached: nothing was checked beyond that",
    }
    say(f"probe: {verdicts[code]}")
    return code


def _probe_one(  # noqa: PLR0911 - one return per kind of answer
    client: ApiClient, endpoint: str, via: str, say: Callable[[str], None]
) -> ExitCode:
    asked = f"{_ASKED[endpoint]} to {public_url(client.endpoint_url(endpoint))}{via}"
    try:
        refused = client.probe(endpoint)
    except ApiMisconfigured as error:
        what = f"HTTP {error.status}" if error.status is not None else error.error
        say(f"probe {endpoint}: api_misconfigured: {asked} got {what}; do: {error.hint}")
        return ExitCode.USAGE
    except AuthError as error:
        say(
            f"probe {endpoint}: credentials refused: {asked} got HTTP {error.status} "
            f"({error.detail}); do: check api.token (or api.token_file) and api.tenant_id, "
            "and that the token may create attachments and messages"
        )
        return ExitCode.AUTH
    except ServerBusy as error:
        say(
            f"probe {endpoint}: API busy: {asked} got HTTP {error.status} ({error.detail}); "
            "do: try again later; files would be retried meanwhile"
        )
        return ExitCode.FAILURE
    except TransportError as error:
        say(
            f"probe {endpoint}: unreachable: {asked} failed ({error.detail}); do: check the "
            "host and port in api.url, the network, and $HTTPS_PROXY / $NO_PROXY"
        )
        return ExitCode.FAILURE
    except ApiError as error:  # not raised today; named rather than crashing the probe
        say(f"probe {endpoint}: unexpected: {asked} failed ({error}); do: check api.url")
        return ExitCode.USAGE
    if refused.status != 400:
        say(
            f"probe {endpoint}: api_misconfigured: {asked} got HTTP {refused.status} "
            f"({refused.detail}) where the API answers 400; do: api.url should end in /api/v1"
        )
        return ExitCode.USAGE
    say(
        f"probe {endpoint}: ok: {asked} was refused with 400 as it should "
        "(the endpoint is there and took the token)"
    )
    return ExitCode.OK
