"""The fake SendSeven API: a local server that answers like the real one, with fault knobs.

For the demo, the tests and the benchmark. It imports nothing from the rest of the product
(an import-linter contract in ``pyproject.toml`` checks it), so it can never agree with the
daemon by sharing its code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from daemon.fake.rules import Faults

if TYPE_CHECKING:
    from daemon.fake.api import FakeApi

__all__ = ["FakeApi", "Faults"]


def __getattr__(name: str) -> object:
    """``FakeApi`` on first use: the daemon's command line imports ``daemon.fake.cli`` on
    every start, and the server's own imports (http.server and its kin) cost start-up time
    that only ``fake-api``, ``demo``, the tests and the benchmark need."""
    if name == "FakeApi":
        from daemon.fake.api import FakeApi  # noqa: PLC0415

        return FakeApi
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
