"""loguru set-up: one line per event, no colours unless stderr is a terminal (journald-friendly).

Under systemd (stderr connected to the journal, ``$JOURNAL_STREAM``) each line starts with a
``<N>`` syslog priority instead of a timestamp, so ``journalctl -p warning`` filters by level and
the journal's own timestamps are not doubled. An optional rotating file gets the plain format.
"""

from __future__ import annotations

import os
import sys
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loguru import logger

from daemon.errors import ConfigError

if TYPE_CHECKING:
    from daemon.config import LogConfig

TTY_FORMAT = "<green>{time:HH:mm:ss.SSS}</green> <level>{level: <7}</level> {message}"
PLAIN_FORMAT = "{time:YYYY-MM-DDTHH:mm:ss.SSSZZ} {level: <7} {message}"
JOURNAL_FORMAT = "{level: <7} {message}"
SYSLOG_PRIORITY = {"TRACE": 7, "DEBUG": 7, "INFO": 6, "SUCCESS": 5, "WARNING": 4, "ERROR": 3, "CRITICAL": 2}
_ours: list[int] = [0]  # loguru's default stderr sink, then the sinks added here


def setup_logging(
    level: str = "INFO",
    file: Path | None = None,
    rotation: str = "50 MB",
    retention: str = "14 days",
) -> None:
    """(Re)configure inspectd's sinks; called again on SIGHUP. Sinks others added are left alone."""
    while _ours:
        with suppress(ValueError):
            logger.remove(_ours.pop())
    common: dict[str, Any] = {"level": level, "backtrace": False, "diagnose": False}
    tty = sys.stderr.isatty()
    if stderr_is_journal():
        _ours.append(logger.add(_journal_line, format=JOURNAL_FORMAT, colorize=False, **common))
    else:
        _ours.append(
            logger.add(sys.stderr, format=TTY_FORMAT if tty else PLAIN_FORMAT, colorize=tty, **common)
        )
    if file is not None:
        try:
            file.parent.mkdir(parents=True, exist_ok=True)
            handler = logger.add(
                file,
                format=PLAIN_FORMAT,
                colorize=False,
                rotation=rotation,
                retention=retention,
                encoding="utf-8",
                **common,
            )
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"log.rotation / log.retention: {exc}") from None
        except OSError as exc:
            raise ConfigError(f"log.file: cannot write {file}: {exc.strerror or exc}") from None
        _ours.append(handler)


def apply_log_config(log: LogConfig) -> None:
    setup_logging(log.level, log.file, log.rotation, log.retention)


def stderr_is_journal() -> bool:
    """True when stderr is the journal stream systemd handed us (not a redirect made later)."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    device, _, inode = stream.partition(":")
    if not device.isdigit() or not inode.isdigit():
        return False
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return st.st_dev == int(device) and st.st_ino == int(inode)


def _journal_line(message: Any) -> None:
    priority = SYSLOG_PRIORITY.get(message.record["level"].name, 6)
    sys.stderr.write(f"<{priority}>{message}")
    sys.stderr.flush()
