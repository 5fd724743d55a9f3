"""A real PostgreSQL server for the tests: Debian's ``postgresql`` package, a throw-away cluster in
a temp folder on 127.0.0.1 and a free port, started and stopped by the tests themselves.

initdb refuses to run as root, so the cluster belongs to the ``postgres`` user the package
creates. Skips when the server binaries are absent, except under CI (``.ci/run`` installs them,
so missing there means the install broke).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from contextlib import suppress
from pathlib import Path

import pytest

PASSWORD = "inspectd-test"


def binaries() -> Path | None:
    for root in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (root / "initdb").is_file() and (root / "pg_ctl").is_file():
            return root
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def require_binaries() -> Path:
    root = binaries()
    if root is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL server binaries missing although .ci/run installs them")
        pytest.skip("PostgreSQL is not installed here (.ci/run installs Debian's postgresql package)")
    return root


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """One cluster; ``start``/``stop`` may be called again (the tests restart it on purpose)."""

    def __init__(self) -> None:
        self.bin = require_binaries()
        # Not under pytest's tmp_path: those folders are 0700 root's, and the cluster is postgres'.
        folder = Path(tempfile.mkdtemp(prefix="inspectd-pg-"))
        folder.chmod(0o755)
        self.folder = folder
        self.data = folder / "data"
        self.port = free_port()
        self.user = "postgres" if os.geteuid() == 0 else None
        folder.mkdir(parents=True, exist_ok=True)
        if self.user:
            shutil.chown(folder, self.user)
        pwfile = folder / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if self.user:
            shutil.chown(pwfile, self.user)
        self._run(
            "initdb", "-D", str(self.data), "-U", "inspectd", "--pwfile", str(pwfile), "-A", "scram-sha-256"
        )

    def url(self, database: str = "postgres", password: str = PASSWORD) -> str:
        return f"postgresql+psycopg://inspectd:{password}@127.0.0.1:{self.port}/{database}"

    def _run(self, tool: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin / tool), *args]
        if self.user:
            command = ["runuser", "-u", self.user, "--", *command]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=True)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            "pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.folder / "log"), "-w", "start"
        )

    def stop(self) -> None:
        with suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)

    def create_database(self, name: str) -> str:
        import psycopg

        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(
                    host="127.0.0.1", port=self.port, user="inspectd", password=PASSWORD, dbname="postgres",
                    autocommit=True,
                ) as conn:  # fmt: skip
                    conn.execute(f'CREATE DATABASE "{name}"')
                return self.url(name)
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
