"""Real upload clients into a real inbox watched by the real observer and judged by the real model:
vsftpd + ftplib/curl, Samba's smbd + smbclient, and rsync (temp name, then rename; and --inplace).
Each test starts its own server on 127.0.0.1 with an ephemeral port and bounded waits; it skips only
when the binary is absent, and .ci/run installs them all so CI never skips."""

from __future__ import annotations

import contextlib
import ftplib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from daemon.intake.settle import Arrivals
from daemon.intake.watcher import InboxWatcher
from inspectd.scorer import Model
from tests.conftest import write_image
from tests.hotfolder import Folders, audit, make_folders, make_pipeline, sha

pytestmark = pytest.mark.timeout(180)
SETTLE_S = 0.3  # shorter than the stall in the slow uploads below


@pytest.fixture(scope="module")
def model(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Model:
    loaded = Model(tiny_model, tmp_path_factory.mktemp("ovcache"))
    loaded.score(write_image(tmp_path_factory.mktemp("warmup") / "w.png"))  # as a running daemon is
    return loaded


def binary(name: str) -> str:
    found = shutil.which(name) or next(
        (str(p) for d in ("/usr/sbin", "/sbin") if (p := Path(d) / name).exists()), None
    )
    if found is None:
        if os.environ.get("CI"):  # .ci/run installs it: missing there means the install broke
            pytest.fail(f"{name} is not installed although .ci/run should have installed it")
        pytest.skip(f"{name} is not installed here (.ci/run installs it with apt-get)")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited {proc.returncode}:\n{log.read_text(errors='replace')}")
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(
        f"server did not listen on {port} in {timeout} s:\n{log.read_text(errors='replace')}"
    )


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    """Stop a server we started in its own session, with the children it forked per connection."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # children still serving a session


def judge_while(folders: Folders, model: Model, client: Callable[[], None], expect: int) -> None:
    """Run ``client`` in a thread while the watcher and pipeline work; stop once all are filed."""
    watcher = InboxWatcher(
        folders.inbox,
        extensions=(".png", ".jpg"),
        ignore=(".*", "*.part", "*.tmp"),
        rescan_seconds=2,
        observer="native",
    )
    pipeline = make_pipeline(folders, model)
    pipeline.arrivals = Arrivals(SETTLE_S, expect_close=watcher.reports_close)  # as the daemon does
    pipeline.events = watcher.events
    errors: list[BaseException] = []

    def run_client() -> None:
        try:
            client()
        except BaseException as exc:
            errors.append(exc)

    uploader = threading.Thread(target=run_client, name="test-uploader")
    watcher.start()
    try:
        uploader.start()
        deadline = time.monotonic() + 120
        filed = 0
        while time.monotonic() < deadline:
            pipeline.step(timeout=0.1)
            filed = len([p for p in folders.destination_files() if not p.name.startswith(".")])
            if not uploader.is_alive() and filed >= expect and not pipeline.backlog():
                break
        uploader.join(30)
        assert not errors, errors
        assert filed == expect, f"{filed} of {expect} filed"
    finally:
        watcher.stop()
        pipeline.store.engine.dispose()


def images(folder: Path, names: list[str], size: int = 64) -> dict[str, Path]:
    folder.mkdir(exist_ok=True)
    return {n: write_image(folder / f"src{i}.png", seed=300 + i, size=size) for i, n in enumerate(names)}


# -- FTP -------------------------------------------------------------------------------------------
@pytest.fixture
def vsftpd(tmp_path: Path) -> Iterator[tuple[int, Folders]]:
    exe = binary("vsftpd")
    try:
        ftp_user = pwd.getpwnam("ftp")
    except KeyError:
        pytest.skip("no 'ftp' system user (Debian's vsftpd package creates it)")
    root = tmp_path / "ftproot"
    root.mkdir(mode=0o755)
    folders = make_folders(root)
    os.chown(folders.inbox, ftp_user.pw_uid, ftp_user.pw_gid)  # the upload folder is the inbox
    empty = tmp_path / "empty"
    empty.mkdir(mode=0o755)
    port = free_port()
    conf = tmp_path / "vsftpd.conf"
    conf.write_text(
        "\n".join(
            [
                "listen=YES",
                "listen_ipv6=NO",
                "listen_address=127.0.0.1",
                f"listen_port={port}",
                "background=NO",
                "anonymous_enable=YES",
                "no_anon_password=YES",
                "local_enable=NO",
                "write_enable=YES",
                "anon_upload_enable=YES",
                "anon_other_write_enable=YES",  # rename, as upload-then-rename clients do
                "anon_umask=022",
                f"anon_root={root}",
                f"secure_chroot_dir={empty}",
                "pasv_enable=YES",
                "pasv_address=127.0.0.1",
                "seccomp_sandbox=NO",
                "xferlog_enable=NO",
                "",
            ]
        )
    )
    log = tmp_path / "vsftpd.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [exe, str(conf)], stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        wait_port(port, proc, log)
        yield port, folders
    finally:
        stop_group(proc)


def test_ftp_uploads_into_vsftpd(vsftpd: tuple[int, Folders], model: Model, tmp_path: Path) -> None:
    port, folders = vsftpd
    names = ["plain1.png", "plain2.png", "Prüfung 3.png", "stalled.png", "renamed.png", "curl.png"]
    src = images(tmp_path / "camera", names, size=128)
    originals = {sha(p): n for n, p in src.items()}

    def client() -> None:
        with ftplib.FTP() as ftp:
            ftp.connect("127.0.0.1", port, timeout=15)
            ftp.login()
            ftp.cwd("inbox")
            stalled = {"n": 0}

            def stall(_block: bytes) -> None:  # a network hiccup far longer than settle_ms
                stalled["n"] += 1
                time.sleep(2.0 if stalled["n"] == 1 else 0.0)

            with src["stalled.png"].open("rb") as fh:  # first, while the daemon is idle
                ftp.storbinary("STOR stalled.png", fh, blocksize=8192, callback=stall)
            for name in names[:3]:
                with src[name].open("rb") as fh:
                    ftp.storbinary(f"STOR {name}", fh)
            with src["renamed.png"].open("rb") as fh:  # FileZilla/WinSCP style: temp name, rename
                ftp.storbinary("STOR renamed.png.part", fh)
            ftp.rename("renamed.png.part", "renamed.png")
        curl = shutil.which("curl")
        if curl:
            subprocess.run(
                [curl, "-sS", "-T", str(src["curl.png"]), f"ftp://127.0.0.1:{port}/inbox/curl.png"],
                check=True,
                timeout=30,
            )

    expect = len(names) if shutil.which("curl") else len(names) - 1
    if expect < len(names):
        originals.pop(sha(src["curl.png"]))
    judge_while(folders, model, client, expect)
    assert audit(folders, originals) == {
        "images": expect,
        "rows": expect,
        "lost": 0,
        "duplicated": 0,
        "unknown_files": 0,
    }
    quarantined = list(folders.dests.quarantine.iterdir())
    assert quarantined == []  # the stalled upload was not judged half-written


# -- SMB -------------------------------------------------------------------------------------------
@pytest.fixture
def samba(tmp_path: Path) -> Iterator[tuple[int, Folders, Path]]:
    smbd = binary("smbd")
    binary("smbclient")
    base = tmp_path / "samba"
    dirs = {k: base / k for k in ("private", "lock", "state", "cache", "pid", "ncalrpc", "log")}
    for d in dirs.values():
        d.mkdir(parents=True)
    folders = make_folders(tmp_path / "share")
    port = free_port()
    conf = base / "smb.conf"
    conf.write_text(
        f"""[global]
  workgroup = WORKGROUP
  server role = standalone server
  interfaces = 127.0.0.1
  bind interfaces only = yes
  smb ports = {port}
  disable netbios = yes
  server services = -nbt
  private dir = {dirs["private"]}
  lock directory = {dirs["lock"]}
  state directory = {dirs["state"]}
  cache directory = {dirs["cache"]}
  pid directory = {dirs["pid"]}
  ncalrpc dir = {dirs["ncalrpc"]}
  log file = {dirs["log"]}/log.%m
  map to guest = Bad User
  guest account = root
  load printers = no
  printing = bsd
  printcap name = /dev/null
  disable spoolss = yes
  server min protocol = SMB2
  client min protocol = SMB2
[inbox]
  path = {folders.inbox}
  guest ok = yes
  guest only = yes
  read only = no
  force user = root
"""
    )
    log = base / "smbd.out"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [smbd, "--foreground", "--no-process-group", f"--configfile={conf}", "--debug-stdout"],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_port(port, proc, log)
        yield port, folders, conf
    finally:
        stop_group(proc)


def test_smbclient_puts_into_a_samba_share(
    samba: tuple[int, Folders, Path], model: Model, tmp_path: Path
) -> None:
    port, folders, conf = samba
    names = ["smb1.png", "smb2.png", "Linie 2 – Kamera.png", "via-temp.png"]
    src = images(tmp_path / "camera", names)
    originals = {sha(p): n for n, p in src.items()}
    commands = "; ".join(
        [f'put "{src[n]}" "{n}"' for n in names[:3]]
        + [f'put "{src["via-temp.png"]}" "via-temp.tmp"', 'rename "via-temp.tmp" "via-temp.png"']
    )

    def client() -> None:
        subprocess.run(
            ["smbclient", "//127.0.0.1/inbox", "-p", str(port), "-N", "-s", str(conf), "-c", commands],
            check=True,
            timeout=60,
            capture_output=True,
        )

    judge_while(folders, model, client, len(names))
    assert audit(folders, originals) == {
        "images": len(names),
        "rows": len(names),
        "lost": 0,
        "duplicated": 0,
        "unknown_files": 0,
    }


# -- rsync -----------------------------------------------------------------------------------------
def test_rsync_temp_then_rename_and_inplace(tmp_path: Path, model: Model) -> None:
    rsync = binary("rsync")
    folders = make_folders(tmp_path / "site")
    batch1 = images(tmp_path / "cam1", ["r1.png", "r2.png", "r3.png"], size=128)
    batch2 = {
        n: write_image(tmp_path / f"cam2-{n}", seed=400 + i) for i, n in enumerate(["i1.png", "i2.png"])
    }
    originals = {sha(p): n for n, p in batch1.items()} | {sha(p): n for n, p in batch2.items()}
    staged = tmp_path / "staged"
    staged.mkdir()
    for name, path in batch1.items():
        shutil.copy(path, staged / name)
    inplace = tmp_path / "staged-inplace"
    inplace.mkdir()
    for name, path in batch2.items():
        shutil.copy(path, inplace / name)

    def client() -> None:
        # default: each file written as .name.XXXXXX, then renamed; slowed so the temp file lingers
        subprocess.run(
            [rsync, "-a", "--bwlimit=200", f"{staged}/", f"{folders.inbox}/"], check=True, timeout=60
        )
        subprocess.run([rsync, "-a", "--inplace", f"{inplace}/", f"{folders.inbox}/"], check=True, timeout=60)

    judge_while(folders, model, client, len(originals))
    assert audit(folders, originals) == {
        "images": len(originals),
        "rows": len(originals),
        "lost": 0,
        "duplicated": 0,
        "unknown_files": 0,
    }
