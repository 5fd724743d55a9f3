"""The systemd unit for ``inspectd run``, filled in with this machine's absolute paths.

``ExecStart`` runs the virtualenv's interpreter itself (no shell, no wrapper script), so systemd's
SIGTERM/SIGHUP reach the daemon and the process systemd watches is the one sending notifications.
The file system is read-only to the service except the folders its config names; systemd creates
and owns /var/lib/inspectd, /var/cache/inspectd and /var/log/inspectd for it.
"""

from __future__ import annotations

import sys
from pathlib import Path

from daemon.config import Config
from daemon.db.url import sqlite_file

STATE_DIR = Path("/var/lib/inspectd")  # StateDirectory={name}
CACHE_DIR = Path("/var/cache/inspectd")  # CacheDirectory={name}
LOGS_DIR = Path("/var/log/inspectd")  # LogsDirectory={name}
HOME_ROOTS = (Path("/home"), Path("/root"), Path("/run/user"))
PRIVATE_TMP_ROOTS = (Path("/tmp"), Path("/var/tmp"))  # noqa: S108 - compared against, never written

HEADER = """\
# inspectd: visual-inspection daemon. Written by `inspectd install-service`; re-run it after moving
# the folders named in {config_file} (they are the only writable paths below)."""
TEMPLATE_HEADER = """\
# inspectd@NAME: one daemon per /etc/inspectd/NAME.yaml (systemctl enable --now inspectd@NAME).
# Written by `inspectd install-service --template`. Only /srv/inspectd/NAME is writable: keep that
# instance's inbox, destinations and SQLite database under it."""
TEMPLATE = """\
{header}
[Unit]
Description=inspectd visual inspection daemon (inbox {inbox})
# The inbox may be an NFS/SMB mount and the database a PostgreSQL server.
Wants=network-online.target
After=network-online.target local-fs.target remote-fs.target
RequiresMountsFor={mounts}
StartLimitIntervalSec=600
StartLimitBurst=5

[Service]
# READY=1 is sent once the model is loaded, the database migrated and the inbox watched.
Type=notify
NotifyAccess=main
ExecStart={python} -m daemon.cli run --config {config_file}
ExecReload=/bin/kill -HUP $MAINPID
User={user}
Group={group}
UMask=0027
# The processing loop pings the watchdog; a loop stuck for this long is killed and restarted.
WatchdogSec=30
Restart=on-failure
RestartSec=5
# The first start compiles the model into the OpenVINO cache.
TimeoutStartSec=180
# Longer than one inference: SIGTERM lets the current image finish (recorded and moved).
TimeoutStopSec=60
StateDirectory={name}
CacheDirectory={name}
LogsDirectory={name}
WorkingDirectory=%S/{name}
Environment=PYTHONDONTWRITEBYTECODE=1 MPLCONFIGDIR=%C/{name}/matplotlib
SyslogIdentifier={syslog}

# Hardening: nothing but the configured folders is writable; no capabilities at all.
NoNewPrivileges=yes
CapabilityBoundingSet=
AmbientCapabilities=
ProtectSystem=strict
# "-": a folder missing at start is then named by the daemon instead of failing as 226/NAMESPACE.
ReadWritePaths={read_write_paths}
PrivateTmp=yes
PrivateMounts=yes
ProtectHome={protect_home}
PrivateDevices={private_devices}
ProtectProc=invisible
RemoveIPC=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictSUIDSGID=yes
RestrictRealtime=yes
RestrictNamespaces=yes
LockPersonality=yes
SystemCallArchitectures=native
# Checked against an strace of start, judging, metrics, reload and stop (84 distinct calls).
SystemCallFilter=@system-service
SystemCallFilter=~@privileged
SystemCallErrorNumber=EPERM
# AF_UNIX: systemd notify; AF_INET/AF_INET6: metrics listener and a PostgreSQL database.
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
# Not set on purpose: MemoryDenyWriteExecute= (OpenVINO's CPU plugin compiles kernels at run
# time) and ProcSubset=pid (OpenVINO reads /proc/cpuinfo to pick its kernels).

[Install]
WantedBy=multi-user.target
"""


def _under(path: Path, roots: tuple[Path, ...]) -> bool:
    return any(path == root or root in path.parents for root in roots)


def writable_paths(config: Config) -> list[Path]:
    """Folders the daemon writes besides the ones systemd creates for it, outermost first."""
    p = config.paths
    wanted: list[Path] = [p.state]
    for line in config.lines:
        wanted += [line.paths.inbox, line.paths.accepted, line.paths.rejected, line.paths.quarantine]
    if p.cache is not None:
        wanted.append(p.cache)
    db = sqlite_file(config.database.url)
    if db is not None:
        wanted.append(db.parent)  # SQLite's -wal and -shm files live beside the database
    if config.log.file is not None:
        wanted.append(config.log.file.parent)
    managed = (STATE_DIR, CACHE_DIR, LOGS_DIR)
    unique = sorted({w for w in wanted if not _under(w, managed)}, key=lambda w: (len(w.parts), str(w)))
    kept: list[Path] = []
    for path in unique:
        if not _under(path, tuple(kept)):
            kept.append(path)
    return kept


def render_unit(
    config: Config, *, config_file: Path, user: str, group: str | None = None, python: Path | None = None
) -> str:
    python = python or Path(sys.executable)
    paths = writable_paths(config)
    models = [line.model.path for line in config.lines]
    seen = [python, config_file, *models, *paths]
    return TEMPLATE.format(
        python=python,
        config_file=config_file,
        inbox=", ".join(str(line.paths.inbox) for line in config.lines),
        user=user,
        group=group or user,
        read_write_paths=" ".join(f"-{path}" for path in paths),
        mounts=" ".join(str(path) for path in (*paths, *models)),
        protect_home="read-only" if any(_under(path, HOME_ROOTS) for path in seen) else "yes",
        private_devices="yes" if all(line.model.device.upper() == "CPU" for line in config.lines) else "no",
        name="inspectd",
        syslog="inspectd",
        header=HEADER.format(config_file=config_file),
    )


TEMPLATE_CONFIG = "/etc/inspectd/%i.yaml"
TEMPLATE_FOLDERS = "/srv/inspectd/%i"


def render_template_unit(*, user: str, group: str | None = None, python: Path | None = None) -> str:
    """``inspectd@.service``: one daemon per config file, ``systemctl enable --now inspectd@NAME``
    runs ``/etc/inspectd/NAME.yaml``. A template cannot know each config's folders, so it makes
    ``/srv/inspectd/NAME`` writable: keep each instance's inbox, destinations, model and (SQLite)
    database under it. State, cache and logs get their own folders per instance, so each instance
    has its own instance id."""
    python = python or Path(sys.executable)
    return TEMPLATE.format(
        python=python,
        config_file=TEMPLATE_CONFIG,
        inbox=f"{TEMPLATE_FOLDERS}/inbox",
        user=user,
        group=group or user,
        read_write_paths=f"-{TEMPLATE_FOLDERS}",
        mounts=TEMPLATE_FOLDERS,
        protect_home="yes",
        private_devices="yes",
        name="inspectd/%i",
        syslog="inspectd-%i",
        header=TEMPLATE_HEADER,
    )


def warnings_for(config: Config, python: Path | None = None) -> list[str]:
    """Things that will stop the service, said before systemd says them less clearly."""
    python = python or Path(sys.executable)
    notes = []
    for path in writable_paths(config):
        if _under(path, PRIVATE_TMP_ROOTS):
            notes.append(f"{path} is under /tmp: the service gets a private /tmp and will not see it")
        elif not path.is_dir():
            notes.append(f"{path} does not exist yet: create it and give the service user write access")
    if sys.prefix == sys.base_prefix and python == Path(sys.executable):
        notes.append(f"{python} is not a virtualenv's interpreter: pass the venv's python explicitly")
    return notes
