"""``python -m daemon.cli``: what the systemd unit runs."""

import sys

from daemon.cli import main

sys.exit(main())
