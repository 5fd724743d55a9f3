"""Command line: argument parsing, error messages and exit codes; no inspection logic here.

Sub-commands from other parts of inspectd (``train``, ``evaluate``, ``demo``) arrive through the
``inspectd.commands`` entry-point group, so the daemon never imports the training code.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points

from daemon.errors import ConfigError
from inspectd import __version__
from inspectd.errors import InspectdError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="inspectd",
        description=(
            "Visual inspection daemon: watches a camera inbox, judges every image with an "
            "EfficientAD model exported to OpenVINO, records the verdict in a database and moves "
            "the image to accepted/, rejected/ or quarantine/."
        ),
        epilog="Run `inspectd COMMAND --help` for the options of one command.",
    )
    parser.add_argument("--version", action="version", version=f"inspectd {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    from daemon.cli import commands as daemon_commands

    daemon_commands.register(commands)
    for entry in sorted(entry_points(group="inspectd.commands"), key=lambda e: e.name):
        try:
            entry.load()(commands)
        except ImportError as exc:  # e.g. a daemon-only install without the training extras
            print(f"inspectd: note: {entry.name} commands unavailable: {exc}", file=sys.stderr)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except ConfigError as exc:
        print(f"inspectd: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except InspectdError as exc:
        print(f"inspectd: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("inspectd: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
