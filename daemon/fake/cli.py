"""The fake SendSeven API's command line: ``sendseven-watch fake-api``.

Also ``python -m daemon.fake``. Serves until SIGINT or
SIGTERM; the options set the fake's address, token, tenant and fault knobs, and can make it
answer like a deployment mistake: a redirect (``--redirect-to``), a proxy's HTML error page
(``--html-status``), the API under another path (``--prefix``), HTTPS (``--tls-cert``).
"""

from __future__ import annotations

import argparse
import os
import signal
import ssl
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from daemon.fake.rules import API_PREFIX, DEFAULT_TENANT, DEFAULT_TOKEN, REDIRECT_STATUSES, Faults


def _rate(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 1")
    return value


def _non_negative(kind: type[int] | type[float]) -> Any:
    def parse(text: str) -> int | float:
        value = kind(text)
        if value < 0:
            raise argparse.ArgumentTypeError(f"{text} is negative")
        return value

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``fake-api`` options to ``parser`` (for :func:`run_from_args`)."""
    env = os.environ
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=_non_negative(int), default=8765, help="0: any free port")
    parser.add_argument(
        "--token",
        default=env.get("SENDSEVEN_API_TOKEN") or DEFAULT_TOKEN,
        help=f"accepted token (default: $SENDSEVEN_API_TOKEN, else {DEFAULT_TOKEN})",
    )
    parser.add_argument(
        "--tenant-id",
        default=env.get("SENDSEVEN_TENANT_ID") or DEFAULT_TENANT,
        help=f"required X-Tenant-ID (default: $SENDSEVEN_TENANT_ID, else {DEFAULT_TENANT})",
    )
    parser.add_argument(
        "--conversation",
        action="append",
        dest="conversations",
        metavar="ID",
        help="a conversation that exists (repeatable; default: every id exists)",
    )
    parser.add_argument("--latency", type=_non_negative(float), default=0.0, metavar="S")
    parser.add_argument("--error-rate", type=_rate, default=0.0, metavar="F", help="share of 5xx")
    parser.add_argument("--drop-rate", type=_rate, default=0.0, metavar="F")
    parser.add_argument("--lose-reply-rate", type=_rate, default=0.0, metavar="F")
    parser.add_argument("--rate-limit-every", type=_non_negative(int), default=0, metavar="N")
    parser.add_argument("--retry-after", type=_non_negative(float), default=1.0, metavar="S")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--no-idempotency", action="store_true", help="ignore Idempotency-Key")
    parser.add_argument("--verbose", action="store_true", help="access log on stderr")
    mistakes = parser.add_argument_group("answer like a deployment mistake")
    mistakes.add_argument(
        "--prefix",
        default=API_PREFIX,
        help=f"the path the API is served under (default {API_PREFIX}); others get an HTML 404",
    )
    mistakes.add_argument(
        "--redirect-to",
        metavar="ORIGIN",
        default=None,
        help="answer every request with a redirect to ORIGIN + path (e.g. https://host:8443)",
    )
    mistakes.add_argument(
        "--redirect-status", type=int, choices=REDIRECT_STATUSES, default=301, metavar="CODE"
    )
    mistakes.add_argument(
        "--html-status",
        type=_html_status,
        default=None,
        metavar="CODE",
        help="answer every request with CODE and an HTML page (a proxy's 502, a server's 404)",
    )
    mistakes.add_argument(
        "--tls-cert", type=Path, default=None, metavar="FILE", help="serve HTTPS with this PEM"
    )
    mistakes.add_argument(
        "--tls-key", type=Path, default=None, metavar="FILE", help="its key (if not in the cert)"
    )


def _html_status(text: str) -> int:
    value = int(text)
    if not 400 <= value <= 599:
        raise argparse.ArgumentTypeError(f"{text} is not an error status (400-599)")
    return value


def run_from_args(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM with the options of :func:`add_arguments`; returns 0."""
    faults = Faults(
        latency_s=args.latency,
        error_rate=args.error_rate,
        drop_rate=args.drop_rate,
        lose_reply_rate=args.lose_reply_rate,
        rate_limit_every=args.rate_limit_every,
        retry_after_s=args.retry_after,
        redirect_to=args.redirect_to,
        redirect_status=args.redirect_status,
        html_status=args.html_status,
        seed=args.seed,
    )
    if args.tls_key is not None and args.tls_cert is None:
        print("fake-api: --tls-key needs --tls-cert", file=sys.stderr)
        return 2
    if not args.prefix.startswith("/"):
        print(f"fake-api: --prefix must start with /, got {args.prefix!r}", file=sys.stderr)
        return 2
    # Here, not at the top: the daemon's command line imports this module on every start
    # (for the arguments of `fake-api`), and the server (http.server and its kin) is only
    # wanted when it runs.
    from daemon.fake.api import FakeApi  # noqa: PLC0415

    try:
        api = FakeApi(
            host=args.host,
            port=args.port,
            token=args.token,
            tenant_id=args.tenant_id,
            conversations=args.conversations,
            faults=faults,
            honour_idempotency=not args.no_idempotency,
            verbose=args.verbose,
            prefix=args.prefix,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
        )
    except (OSError, ssl.SSLError) as exc:
        print(f"fake-api: cannot load --tls-cert/--tls-key: {exc}", file=sys.stderr)
        return 1
    try:
        api.start()
    except OSError as exc:
        print(f"fake-api: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    stop = _Stop()
    try:
        with _stop_on_signals(stop):
            print(f"fake SendSeven API listening on {api.url}", flush=True)
            while not stop.asked:
                time.sleep(0.2)
    finally:
        api.stop()
    return 0


class _Stop:
    """Set by a signal handler. A plain attribute, not a :class:`threading.Event`: a
    handler runs between two instructions of the main thread, and an Event's ``set`` there
    could wait forever for the lock the interrupted ``wait`` holds."""

    asked = False

    def __call__(self, *_: object) -> None:
        self.asked = True


@contextmanager
def _stop_on_signals(stop: _Stop) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield  # signals can only be caught in the main thread; the caller stops us
        return
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m daemon.fake [options]``: the same as ``sendseven-watch fake-api``."""
    parser = argparse.ArgumentParser(
        prog="sendseven-watch fake-api", description="A local SendSeven-compatible API."
    )
    add_arguments(parser)
    parser.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        default=None,
        help="accepted like every command's; the server logs only with --verbose",
    )
    return run_from_args(parser.parse_args(argv))
