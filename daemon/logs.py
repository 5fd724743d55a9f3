"""loguru set-up: one line per event, no colours unless stderr is a terminal (journald-friendly)."""

from __future__ import annotations

import sys

from loguru import logger

TTY_FORMAT = "<green>{time:HH:mm:ss.SSS}</green> <level>{level: <7}</level> {message}"
PLAIN_FORMAT = "{time:YYYY-MM-DDTHH:mm:ss.SSSZZ} {level: <7} {message}"


def setup_logging(level: str = "INFO") -> None:
    logger.remove()
    tty = sys.stderr.isatty()
    logger.add(
        sys.stderr,
        level=level,
        format=TTY_FORMAT if tty else PLAIN_FORMAT,
        colorize=tty,
        backtrace=False,
        diagnose=False,
    )
