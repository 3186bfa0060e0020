"""What a person can type: argparse, the commands, and their exit codes."""

from daemon.cli.main import main

__all__ = ["main"]
