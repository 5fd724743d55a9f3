"""Log set-up as journald and an operator see it: priorities on the journal stream, a rotating file,
bad rotation settings named at start-up."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.errors import ConfigError
from daemon.run.logs import setup_logging

SCRIPT = """
import sys
from pathlib import Path
from loguru import logger
from daemon.run.logs import setup_logging
setup_logging("INFO", Path(sys.argv[1]) if len(sys.argv) > 1 else None, rotation="200 B")
logger.debug("hidden")
logger.info("#7 part.png accepted score=0.1000")
logger.warning("#8 torn.png quarantined: truncated file")
for i in range(10):
    logger.info("filler line {} to make the file rotate", i)
"""


def run_script(tmp_path: Path, journal: bool, *args: str) -> str:
    err = tmp_path / "stderr.txt"
    with err.open("wb") as fh:
        st = os.fstat(fh.fileno())
        env = {**os.environ, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}" if journal else ""}
        subprocess.run(
            [sys.executable, "-c", SCRIPT, *args], stderr=fh, env=env, check=True, timeout=60, cwd=tmp_path
        )
    return err.read_text()


def test_journal_stream_gets_syslog_priorities_and_no_timestamps(tmp_path: Path) -> None:
    lines = run_script(tmp_path, journal=True).splitlines()
    assert lines[0] == "<6>INFO    #7 part.png accepted score=0.1000"
    assert lines[1] == "<4>WARNING #8 torn.png quarantined: truncated file"
    assert not any("hidden" in line for line in lines)


def test_plain_stderr_and_a_rotating_file(tmp_path: Path) -> None:
    log_file = tmp_path / "logs" / "inspectd.log"
    lines = run_script(tmp_path, False, str(log_file)).splitlines()
    assert lines[0].endswith(" INFO    #7 part.png accepted score=0.1000") and lines[0][:4].isdigit()
    files = sorted((tmp_path / "logs").iterdir())
    assert len(files) > 1  # rotated at 200 bytes
    assert "filler line 9" in log_file.read_text()


def test_bad_rotation_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"log\.rotation"):
        setup_logging("INFO", tmp_path / "x.log", rotation="every full moon")
    setup_logging("INFO")
