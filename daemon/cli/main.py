"""The command line: argparse subcommands; user errors end here as lines and an exit code.

Exit codes: 0 success; 2 invalid configuration or usage (on stderr, one line per problem,
each naming its key or the file); 3 ``run --once`` stopped because the API refused the
credentials; 1 anything else. ``check-config --probe`` has its own (:mod:`daemon.cli.probe`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from daemon import __version__
from daemon.cli.check import check_config
from daemon.config import Config
from daemon.config.caption import template_problem
from daemon.errors import ConfigError, ConfigErrors, WatchError
from daemon.fake import cli as fake_cli
from daemon.logs import configure, get_logger
from daemon.service.service import ConfigSource, Service
from daemon.states import ExitCode


class _Parser(argparse.ArgumentParser):
    """argparse that exits 2 with one line (its default prints the whole usage)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(ExitCode.USAGE, f"{self.prog}: error: {message}\n")


def _common(parser: argparse.ArgumentParser, *, config: bool) -> None:
    parser.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        default=None,
        help="override log.level from the configuration",
    )
    if config:
        parser.add_argument("-c", "--config", type=Path, required=True, help="the YAML config")
        parser.add_argument(
            "--env-file",
            type=Path,
            default=None,
            help="KEY=VALUE file for ${VARS} (default: ./.env if present)",
        )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sendseven-watch", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="watch and process until SIGTERM/SIGINT")
    _common(run, config=True)
    run.add_argument("--once", action="store_true", help="process what is there, then exit")
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="print what would happen to every file present now (one JSON line each);"
        " claim, move and request nothing",
    )

    check = sub.add_parser("check-config", help="validate the configuration and the folders")
    _common(check, config=True)
    check.add_argument(
        "--probe",
        action="store_true",
        help="also ask the API (creating nothing): exit 2 misconfigured, 3 credentials, "
        "1 unreachable",
    )

    classify = sub.add_parser("classify", help="print how files would be classified")
    _common(classify, config=False)
    classify.add_argument("files", nargs="+", type=Path)

    send = sub.add_parser("send", help="send files once; they stay where they are")
    _common(send, config=True)
    send.add_argument("--conversation", required=True, help="the conversation id")
    send.add_argument("--text", default=None, help="caption template (default: from config)")
    send.add_argument("files", nargs="+", type=Path)

    requeue = sub.add_parser("requeue", help="move failed files back into their inbox")
    _common(requeue, config=True)
    requeue.add_argument("--inbox", default=None, help="only this inbox (folder name)")
    requeue.add_argument("--reason", default=None, help="only files failed for this reason")

    status = sub.add_parser("status", help="per inbox: waiting, in progress, sent, failed")
    _common(status, config=True)
    status.add_argument("--json", action="store_true", help="one JSON document")

    fake = sub.add_parser("fake-api", help="a local SendSeven-compatible server with fault knobs")
    _common(fake, config=False)
    fake_cli.add_arguments(fake)

    demo = sub.add_parser("demo", help="the whole flow against the fake API, no account")
    _common(demo, config=False)
    demo.add_argument("--once", action="store_true", help="stop after the first batch")
    demo.add_argument("--dir", type=Path, default=None, help="spool location (default: temp)")
    return parser


def _load(args: argparse.Namespace) -> tuple[ConfigSource, Config]:
    source = ConfigSource(args.config, args.env_file, args.log_level)
    config = source.load(check_folders=args.command != "status")  # status only reads
    configure(args.log_level or config.log.level, config.log.format)
    return source, config


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(arguments)
    configure(args.log_level or "info")
    try:
        return _dispatch(args)
    except ConfigError as error:
        # One line per problem: a file with three mistakes names all three at once.
        for problem in error.errors if isinstance(error, ConfigErrors) else (error,):
            print(f"sendseven-watch: {problem}", file=sys.stderr)
        return ExitCode.USAGE
    except WatchError as error:
        get_logger().error("command_failed", error=str(error))
        return ExitCode.FAILURE
    except KeyboardInterrupt:
        return 130


def _dispatch(args: argparse.Namespace) -> int:  # noqa: PLR0911 - one branch per command
    command: str = args.command
    if command == "fake-api":
        return fake_cli.run_from_args(args)
    if command == "classify":
        from daemon.media.classify import classify_file  # noqa: PLC0415

        for path in args.files:
            print(json.dumps(classify_file(path).as_json(), ensure_ascii=False), flush=True)
        return ExitCode.OK
    if command == "demo":
        from daemon.cli.demo import run_demo  # noqa: PLC0415

        return run_demo(once=args.once, folder=args.dir, log_level=args.log_level)
    source, config = _load(args)
    if command == "check-config":
        return check_config(config, probe=args.probe)
    if command == "run":
        if args.dry_run:
            from daemon.cli.dryrun import dry_run  # noqa: PLC0415

            return dry_run(config)
        return Service(source, config, once=args.once).run()
    if command == "send":
        from daemon.delivery.oneshot import send_files  # noqa: PLC0415

        problem = None if args.text is None else template_problem(args.text)
        if problem is not None:  # before any upload: nothing half-done at the API
            raise ConfigError("--text", problem)
        return send_files(config, args.conversation, args.files, args.text)
    if command == "requeue":
        from daemon.cli.requeue import requeue  # noqa: PLC0415

        return requeue(config, inbox=args.inbox, reason=args.reason)
    if command == "status":
        from daemon.cli.status import print_status  # noqa: PLC0415

        return print_status(config, as_json=args.json)
    raise AssertionError(command)
