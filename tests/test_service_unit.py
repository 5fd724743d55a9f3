"""The systemd unit: what ``inspectd install-service`` writes, checked by systemd's own tools."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.cli import main
from daemon.cli.service_unit import render_unit, writable_paths
from daemon.config import load_config
from tests.conftest import make_config

REPO = Path(__file__).resolve().parents[1]
COMMITTED_UNIT = REPO / "systemd" / "inspectd.service"
COMMITTED_CONFIG = REPO / "systemd" / "config.yaml"
REFERENCE_PYTHON = Path("/opt/inspectd/.venv/bin/python")
REFERENCE_CONFIG = Path("/etc/inspectd/config.yaml")

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None,
    reason="systemd-analyze not installed (Debian package 'systemd'; .ci/run installs it)",
)


def directives(unit: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in unit.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


def verify(unit_file: Path) -> subprocess.CompletedProcess[str]:
    assert SYSTEMD_ANALYZE is not None
    return subprocess.run(
        [SYSTEMD_ANALYZE, "verify", str(unit_file)], capture_output=True, text=True, timeout=60, check=False
    )


def test_committed_unit_is_what_install_service_writes_for_the_reference_layout() -> None:
    config = load_config(COMMITTED_CONFIG)
    expected = render_unit(config, config_file=REFERENCE_CONFIG, user="inspectd", python=REFERENCE_PYTHON)
    assert COMMITTED_UNIT.read_text() == expected, "regenerate systemd/inspectd.service from daemon/unit.py"


def test_unit_has_the_service_contract() -> None:
    d = directives(COMMITTED_UNIT.read_text())
    assert d["Type"] == ["notify"] and d["NotifyAccess"] == ["main"]
    assert d["ExecStart"] == [f"{REFERENCE_PYTHON} -m daemon.cli run --config {REFERENCE_CONFIG}"]
    assert d["Restart"] == ["on-failure"] and int(d["WatchdogSec"][0]) > 0
    assert int(d["TimeoutStopSec"][0]) >= 30  # one inference plus the move, with room to spare
    assert d["User"] == ["inspectd"] and d["NoNewPrivileges"] == ["yes"]
    assert d["CapabilityBoundingSet"] == [""] and d["AmbientCapabilities"] == [""]
    assert d["ProtectSystem"] == ["strict"] and d["PrivateTmp"] == ["yes"] and d["ProtectHome"] == ["yes"]
    assert d["StateDirectory"] == ["inspectd"] and d["CacheDirectory"] == ["inspectd"]
    assert d["ReadWritePaths"] == [
        "-/srv/inspectd/accepted -/srv/inspectd/inbox -/srv/inspectd/quarantine -/srv/inspectd/rejected"
    ]  # the database and the OpenVINO cache live in the State/CacheDirectory; the model stays read-only
    assert d["ExecReload"] == ["/bin/kill -HUP $MAINPID"]


@needs_systemd_analyze
def test_systemd_analyze_verifies_the_committed_unit(tmp_path: Path) -> None:
    # The reference interpreter (/opt/inspectd/...) does not exist here and verify checks it.
    unit = tmp_path / "inspectd.service"
    unit.write_text(COMMITTED_UNIT.read_text().replace(str(REFERENCE_PYTHON), sys.executable))
    result = verify(unit)
    assert result.returncode == 0 and result.stdout + result.stderr == "", result.stderr
    security = subprocess.run(
        [SYSTEMD_ANALYZE or "", "security", "--offline=yes", "--threshold=20", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert security.returncode == 0, security.stdout[-400:]  # exposure at most 2.0 of 10 ("OK")


COMMITTED_TEMPLATE = REPO / "systemd" / "inspectd@.service"


def test_committed_template_is_what_install_service_writes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["install-service", "--template", "--python", str(REFERENCE_PYTHON)]) == 0
    assert capsys.readouterr().out == COMMITTED_TEMPLATE.read_text()
    d = directives(COMMITTED_TEMPLATE.read_text())
    assert d["ExecStart"] == [f"{REFERENCE_PYTHON} -m daemon.cli run --config /etc/inspectd/%i.yaml"]
    assert d["StateDirectory"] == ["inspectd/%i"] and d["ReadWritePaths"] == ["-/srv/inspectd/%i"]
    # the example instance config keeps everything it writes where the template allows it
    config = load_config(REPO / "systemd" / "lineA.yaml")
    allowed = (
        Path("/srv/inspectd/lineA"),
        Path("/var/lib/inspectd/lineA"),
        Path("/var/cache/inspectd/lineA"),
    )
    line = config.lines[0]
    for folder in (line.paths.inbox, line.paths.accepted, line.paths.rejected, line.paths.quarantine):
        assert any(folder.is_relative_to(root) for root in allowed), folder
    assert config.paths.state.is_relative_to(allowed[1])


@needs_systemd_analyze
def test_systemd_analyze_verifies_the_template(tmp_path: Path) -> None:
    unit = tmp_path / "inspectd@lineA.service"
    unit.write_text(COMMITTED_TEMPLATE.read_text().replace(str(REFERENCE_PYTHON), sys.executable))
    result = verify(unit)
    assert result.returncode == 0 and result.stdout + result.stderr == "", result.stderr


@needs_systemd_analyze
def test_install_service_writes_a_unit_for_this_machine(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "model"
    model.mkdir()
    config_path = make_config(tmp_path, model, database__url="sqlite:///db/inspectd.db")
    out = tmp_path / "inspectd.service"
    assert (
        main(["install-service", "--config", str(config_path), "--user", "vision", "--output", str(out)]) == 0
    )
    err = capsys.readouterr().err
    assert "private /tmp" in err  # pytest's folders are under /tmp: the service would not see them
    unit = out.read_text()
    d = directives(unit)
    assert d["ExecStart"] == [f"{sys.executable} -m daemon.cli run --config {config_path}"]
    assert d["User"] == ["vision"] and d["Group"] == ["vision"]
    rw = d["ReadWritePaths"][0].split()
    for folder in ("inbox", "accepted", "rejected", "quarantine", "state"):
        assert f"-{tmp_path / folder}" in rw
    assert f"-{tmp_path / 'db'}" in rw  # the SQLite file's folder, for its -wal and -shm files
    assert len(rw) == 6 and str(model) not in d["ReadWritePaths"][0]
    result = verify(out)
    assert result.returncode == 0 and result.stdout + result.stderr == "", result.stderr

    assert main(["install-service", "--config", str(config_path)]) == 0  # stdout by default
    assert "User=inspectd" in capsys.readouterr().out


def test_writable_paths_are_only_the_configured_folders(tmp_path: Path) -> None:
    config = load_config(
        make_config(
            tmp_path,
            tmp_path / "model",
            paths__state="/var/lib/inspectd",
            paths__cache="/var/cache/inspectd/ov",
            database__url="sqlite:////data/results/inspectd.db",
            log__file="/var/log/inspectd/inspectd.log",
        )
    )
    paths = writable_paths(config)
    assert Path("/data/results") in paths
    assert not any(
        str(p).startswith(("/var/lib/inspectd", "/var/cache/inspectd", "/var/log/inspectd")) for p in paths
    )
    assert tmp_path / "inbox" in paths and tmp_path / "model" not in paths
    # Folders under a home directory: /home must be visible (read-only) for them to be reachable.
    line = config.lines[0]
    home_line = line.model_copy(
        update={"paths": line.paths.model_copy(update={"inbox": Path("/home/ftp/camera1")})}
    )
    home_config = config.model_copy(update={"lines": (home_line,)})
    unit = render_unit(home_config, config_file=tmp_path / "config.yaml", user="inspectd")
    assert directives(unit)["ProtectHome"] == ["read-only"]
    assert "-/home/ftp/camera1" in directives(unit)["ReadWritePaths"][0]
