"""The fake SendSeven API: a local server that answers like the real one, with fault knobs.

For the demo, the tests and the benchmark. It imports nothing from the rest of the product
(an import-linter contract in ``pyproject.toml`` checks it), so it can never agree with the
daemon by sharing its code.
"""

from daemon.fake.api import FakeApi
from daemon.fake.rules import Faults

__all__ = ["FakeApi", "Faults"]
