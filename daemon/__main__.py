"""``python -m daemon`` runs the command-line interface."""

import sys

from daemon.cli.main import main

sys.exit(main())
