"""Start-up checks that stop the daemon with a message naming the key, before it takes a file."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from loguru import logger

from daemon.config import LINE_PATHS, Config
from daemon.errors import ConfigError
from daemon.fs import same_filesystem
from inspectd.errors import ModelError
from inspectd.export import locate_xml


def check_models(config: Config) -> None:
    """Cheap first: an export must be there before any folder is created for it."""
    for index, line in enumerate(config.lines):
        try:
            locate_xml(line.model.path)
        except ModelError as exc:
            raise ConfigError(f"{config.key(index, 'model.path')}: {exc}") from None


def prepare_folders(config: Config) -> None:
    """Create the configured folders and prove each is writable, naming the key that is wrong."""
    folders: list[tuple[str, Path]] = [("paths.state", config.paths.state)]
    for index, line in enumerate(config.lines):
        folders += [(config.key(index, f"paths.{key}"), getattr(line.paths, key)) for key in LINE_PATHS]
        if config.outputs.heatmaps != "off" and line.paths.heatmaps is not None:
            folders.append((config.key(index, "paths.heatmaps"), line.paths.heatmaps))
        if config.drift.action == "hold" and line.paths.review is not None:
            folders.append((config.key(index, "paths.review"), line.paths.review))
    for key, folder in folders:
        _writable_folder(key, folder)
    for index, line in enumerate(config.lines):
        for key in ("accepted", "rejected", "quarantine"):
            if not same_filesystem(line.paths.inbox, getattr(line.paths, key)):
                logger.warning(
                    "{} is on another file system than {}: files are copied, synced and then "
                    "removed from the inbox (slower than a rename)",
                    config.key(index, f"paths.{key}"),
                    config.key(index, "paths.inbox"),
                )


def _writable_folder(key: str, folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{key}: cannot create {folder}: {exc.strerror}") from None
    if not folder.is_dir():
        raise ConfigError(f"{key}: {folder} exists but is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(
            f"{key}: {folder} is not writable by this user; fix its permissions "
            "or point the key at another folder"
        )


INSTANCE_FILE = "instance-id"


def instance_id(state: Path) -> str:
    """This daemon's id, kept in its state folder so that it survives restarts: with the host it
    owns rows and claims, so a daemon sharing the database or the inbox never touches them."""
    path = state / INSTANCE_FILE
    try:
        value = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        value = ""
    if not value:
        value = uuid.uuid4().hex[:12]
        tmp = path.with_suffix(".tmp")
        tmp.write_text(value + "\n", encoding="utf-8")
        tmp.replace(path)
    return value
