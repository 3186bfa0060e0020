"""``python -m daemon.fake``: the fake SendSeven API on its own."""

from daemon.fake.cli import main

raise SystemExit(main())
