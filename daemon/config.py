"""Load config.yaml once into a frozen, validated object.

Relative paths (and a relative SQLite URL) are resolved against the folder that holds the config
file, so a service started from any working directory sees the same folders.

One daemon serves one or more *lines* (an inbox with its folders, model and watch rules). The
single-line form (``paths.inbox``, ``model.path`` at the top level) is one line named
``default``; with ``lines:`` each entry names its own and takes every key it leaves out from the
top-level ``paths``, ``model`` and ``watch`` sections.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from daemon.db.url import resolve_sqlite_url
from daemon.errors import ConfigError

DEFAULT_IGNORE = (".*", "*.part", "*.tmp", "*.crdownload", "~*")
DEFAULT_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


DEFAULT_LINE = "default"
LINE_PATHS = ("inbox", "accepted", "rejected", "quarantine")
OPTIONAL_LINE_PATHS = ("heatmaps", "review", "retraining")  # default: a folder of that name beside rejected/
LINE_SECTIONS = ("paths", "model", "watch")
LINE_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class PathsConfig(_Frozen):
    # A line's folders (required in the single-line form, defaults for ``lines:`` otherwise).
    inbox: Path | None = None
    accepted: Path | None = None
    rejected: Path | None = None
    quarantine: Path | None = None
    state: Path = Path("var/state")
    # OpenVINO compile cache; None = state/openvino_cache. Under systemd: CacheDirectory (/var/cache/...).
    cache: Path | None = None
    # Anomaly-map overlays (outputs.heatmaps); None = heatmaps/ beside each line's rejected/.
    heatmaps: Path | None = None
    # Accepted parts held while the drift alarm is latched (drift.action hold); None = review/
    # beside each line's rejected/.
    review: Path | None = None
    # Captures an operator labels on /review are copied to <retraining>/good|defect/; None =
    # retraining/ beside each line's rejected/.
    retraining: Path | None = None


class DatabaseConfig(_Frozen):
    url: str = "sqlite:///var/inspectd.db"


class ModelConfig(_Frozen):
    path: Path | None = None  # required for every line
    device: str = "CPU"
    # CPU inference arithmetic: auto times f32 against bf16 at load (where the CPU has bf16) and
    # keeps the faster one; the log says which.
    precision: Literal["auto", "f32", "bf16"] = "auto"
    # CPU: images waiting together (a backlog) run side by side, one per OpenVINO THROUGHPUT
    # stream; an image alone always gets every core. false: one image at a time on every core.
    backlog_streams: bool = True
    # With backlog_streams: when more images wait than there are streams, up to this many share
    # one stream's inference (1: never batched); an image alone never waits for a partner.
    # `inspectd bench` says whether batching pays on this CPU (it did not on the one measured).
    backlog_batch: int = Field(default=1, ge=1, le=16)
    threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    # How often the export's files are stat()ed for a swapped-in model (0 = only on SIGHUP).
    check_seconds: float = Field(default=5.0, ge=0, le=3600)


class WatchConfig(_Frozen):
    observer: Literal["auto", "native", "polling"] = "auto"
    settle_ms: int = Field(default=1000, ge=0, le=600_000)
    rescan_seconds: float = Field(default=30.0, gt=0, le=86_400)
    ignore: tuple[str, ...] = DEFAULT_IGNORE
    extensions: tuple[str, ...] = DEFAULT_EXTENSIONS
    # Also watch sub-folders; inbox/lineA/x.png is filed as accepted/lineA/x.png.
    recursive: bool = False

    @field_validator("extensions")
    @classmethod
    def _dotted_lowercase(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("list at least one image extension, e.g. [.jpg, .png]")
        return tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in value)


class LinePaths(_Frozen):
    inbox: Path
    accepted: Path
    rejected: Path
    quarantine: Path
    heatmaps: Path | None = None  # filled in at load: heatmaps/ beside rejected/ unless set
    review: Path | None = None  # filled in at load: review/ beside rejected/ unless set
    retraining: Path | None = None  # filled in at load: retraining/ beside rejected/ unless set


class DriftConfig(_Frozen):
    # alarm: gauges and log lines; hold: also file accepted parts into paths.review from the first
    # alarm until `systemctl reload`; off: no drift check.
    action: Literal["alarm", "hold", "off"] = "alarm"
    window: int = Field(default=200, ge=20, le=100_000)  # accepted parts compared each time
    alpha: float = Field(default=0.001, gt=0, lt=0.5)  # false-alarm probability per check


class OutputsConfig(_Frozen):
    # Anomaly-map overlay PNGs in paths.heatmaps for rejected parts, every judged part, or none.
    heatmaps: Literal["rejected", "all", "off"] = "rejected"


class LineModel(ModelConfig):
    path: Path


class LineConfig(_Frozen):
    """One inbox with its own folders, model, threshold and watch rules."""

    name: str = Field(pattern=LINE_NAME)
    paths: LinePaths
    model: LineModel
    watch: WatchConfig = WatchConfig()


class LogConfig(_Frozen):
    level: Literal["TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR"] = "INFO"
    file: Path | None = None  # besides stderr (the journal under systemd)
    rotation: str = "50 MB"  # loguru rotation: a size ("50 MB"), an age ("1 week") or a time ("00:00")
    retention: str = "14 days"  # loguru retention of rotated files: an age or a count ("10 files")


class MetricsConfig(_Frozen):
    host: str = "127.0.0.1"
    port: int = Field(ge=0, le=65535)  # 0 = any free port (tests)
    # /healthz answers 503 once the processing loop has not gone round for this long.
    stall_seconds: float = Field(default=60.0, gt=0, le=86_400)
    # /review answers only with it (?token= or Authorization: Bearer); without one, only on loopback.
    token: str | None = Field(default=None, min_length=16, max_length=256, pattern=r"^[\x21-\x7e]+$")


def is_loopback(host: str) -> bool:
    """True for names and addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: other machines may resolve it too


HHMM = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]$")


class ShiftConfig(_Frozen):
    """A shift starts at ``start`` (local time, HH:MM) and runs until the next shift starts."""

    name: str = Field(min_length=1, max_length=64)
    start: str

    @field_validator("start", mode="before")
    @classmethod
    def _unquoted_time(cls, value: object) -> object:
        """YAML 1.1 reads an unquoted ``06:00`` as the base-60 number 360: take it as that time."""
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 24 * 60:
            return f"{value // 60:02d}:{value % 60:02d}"
        if isinstance(value, str) and len(value) == 4 and value[1] == ":":
            value = "0" + value  # 6:00
        if not isinstance(value, str) or not HHMM.match(value):
            raise ValueError(f"{value!r} is not a time of day: write it as HH:MM (24 h, local), e.g. '06:00'")
        return value

    @property
    def start_minute(self) -> int:
        hours, minutes = self.start.split(":")
        return int(hours) * 60 + int(minutes)


DEFAULT_SHIFTS = (ShiftConfig(name="day", start="00:00"),)


class RetentionConfig(_Frozen):
    rows_days: float | None = Field(default=None, gt=0)
    images_days: float | None = Field(default=None, gt=0)
    check_seconds: float = Field(default=3600.0, gt=0, le=86_400)


class LimitsConfig(_Frozen):
    # Larger images are quarantined unread: decoding costs ~16 bytes per pixel (50 MP ~ 0.8 GB).
    max_pixels: int = Field(default=50_000_000, ge=1, le=2_000_000_000)


class Config(_Frozen):
    paths: PathsConfig = PathsConfig()
    database: DatabaseConfig = DatabaseConfig()
    model: ModelConfig = ModelConfig()
    watch: WatchConfig = WatchConfig()
    lines: tuple[LineConfig, ...]
    log: LogConfig = LogConfig()
    limits: LimitsConfig = LimitsConfig()
    metrics: MetricsConfig | None = None
    retention: RetentionConfig | None = None
    outputs: OutputsConfig = OutputsConfig()
    drift: DriftConfig = DriftConfig()
    # `inspectd stats --by shift`; default: one shift "day" from 00:00 (a shift is a calendar day).
    shifts: tuple[ShiftConfig, ...] = DEFAULT_SHIFTS
    source: Path = Field(default=Path("config.yaml"), exclude=True)

    @field_validator("shifts")
    @classmethod
    def _shifts_distinct(cls, value: tuple[ShiftConfig, ...]) -> tuple[ShiftConfig, ...]:
        if not value:
            raise ValueError("list at least one shift, e.g. [{name: day, start: '06:00'}]")
        names = [s.name for s in value]
        if len(set(names)) != len(names):
            raise ValueError(f"each shift needs its own name (got {', '.join(names)})")
        starts = [s.start for s in value]
        if len(set(starts)) != len(starts):
            raise ValueError(f"two shifts start at the same time (got {', '.join(starts)})")
        return value

    @property
    def single_line(self) -> bool:
        """True for the single-line form: the top-level sections are the one line ``default``."""
        return self.paths.inbox is not None and len(self.lines) == 1 and self.lines[0].name == DEFAULT_LINE

    @property
    def cache_dir(self) -> Path:
        """The OpenVINO compile cache: ``paths.cache``, else ``paths.state/openvino_cache``."""
        return self.paths.cache or self.paths.state / "openvino_cache"

    def key(self, index: int, name: str) -> str:
        """How the user names a line's setting ``name``: ``paths.inbox`` or ``lines.2.paths.inbox``."""
        return name if self.single_line else f"lines.{index}.{name}"


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate ``path``; raise ConfigError with the offending key and a fix."""
    file = Path(path).expanduser()
    try:
        raw = yaml.safe_load(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"config file {file} does not exist: pass --config with the path of your config.yaml"
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{file} must hold a mapping with paths:, database:, model: sections")
    single = "lines" not in raw
    if single and "paths" not in raw:
        raise ConfigError(f"{file} has 1 problem(s):\n  paths: required key is missing: add it")
    try:
        config = Config.model_validate({**raw, "lines": _line_entries(raw)})
    except ValidationError as exc:
        raise ConfigError(_explain(file, exc, single)) from None
    _check_lines(file, config.lines)
    return _resolve(config, file.resolve().parent, file)


def _line_entries(raw: dict[str, Any]) -> Any:
    """Each line as written, with the top-level sections as its defaults (the single-line form
    is one line named ``default`` made of the top-level sections alone)."""
    defaults = {section: raw.get(section) or {} for section in LINE_SECTIONS}
    defaults["paths"] = {
        k: v for k, v in defaults["paths"].items() if k in (*LINE_PATHS, *OPTIONAL_LINE_PATHS)
    }
    entries = raw.get("lines", [{"name": DEFAULT_LINE}])
    if not isinstance(entries, list) or not entries:
        return entries  # pydantic names the problem
    merged = []
    for entry in entries:
        if not isinstance(entry, dict):
            merged.append(entry)
            continue
        line = dict(entry)
        for section in LINE_SECTIONS:
            own = entry.get(section) or {}
            line[section] = {**defaults[section], **own} if isinstance(own, dict) else own
        merged.append(line)
    return merged


def _check_lines(file: Path, lines: tuple[LineConfig, ...]) -> None:
    """Names unique; no folder is the inbox of one line and anything of another."""
    problems = []
    names = [line.name for line in lines]
    for name in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"  lines: the name {name!r} is used twice; each line needs its own")
    seen: dict[Path, str] = {}
    for index, line in enumerate(lines):
        for key in LINE_PATHS:
            folder = getattr(line.paths, key)
            other = seen.get(folder)
            if other is not None and (key == "inbox" or other.endswith(".inbox")):
                problems.append(f"  lines.{index}.paths.{key}: {folder} is also {other}")
            seen.setdefault(folder, f"lines.{index}.paths.{key}")
    if problems:
        raise ConfigError("\n".join([f"{file} has {len(problems)} problem(s):", *problems]))


def _explain(file: Path, exc: ValidationError, single: bool) -> str:
    lines = [f"{file} has {exc.error_count()} problem(s):"]
    for err in exc.errors():
        loc = err["loc"]
        if single and loc[:2] == ("lines", 0):  # the implicit line is the top-level sections
            loc = loc[2:]
        key = ".".join(str(p) for p in loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            hint = "unknown key: remove it or check its spelling against the commented config.yaml"
        elif err["type"] == "missing":
            hint = "required key is missing: add it"
        else:
            hint = err["msg"].removeprefix("Value error, ")
        lines.append(f"  {key}: {hint}")
    return "\n".join(lines)


def _resolve(config: Config, base: Path, source: Path) -> Config:
    def absolute(p: Path) -> Path:
        p = p.expanduser()
        return p if p.is_absolute() else base / p

    paths = config.paths.model_copy(
        update={
            name: absolute(value)
            for name in PathsConfig.model_fields
            if (value := getattr(config.paths, name)) is not None
        }
    )
    model = config.model.model_copy(update={"path": config.model.path and absolute(config.model.path)})
    lines = tuple(
        line.model_copy(
            update={
                "paths": line.paths.model_copy(
                    update={
                        **{key: absolute(getattr(line.paths, key)) for key in LINE_PATHS},
                        **{
                            key: absolute(getattr(line.paths, key))
                            if getattr(line.paths, key) is not None
                            else absolute(line.paths.rejected).parent / key
                            for key in OPTIONAL_LINE_PATHS
                        },
                    }
                ),
                "model": line.model.model_copy(update={"path": absolute(line.model.path)}),
            }
        )
        for line in config.lines
    )
    database = config.database.model_copy(update={"url": resolve_sqlite_url(config.database.url, base)})
    log = config.log.model_copy(update={"file": config.log.file and absolute(config.log.file)})
    return config.model_copy(
        update={
            "paths": paths,
            "model": model,
            "lines": lines,
            "database": database,
            "log": log,
            "source": source,
        }
    )


def dump_defaults() -> dict[str, Any]:
    """A self-contained config (every folder beside the file), as ``inspectd demo`` writes it."""
    return {
        "paths": {
            "inbox": "inbox",
            "accepted": "accepted",
            "rejected": "rejected",
            "quarantine": "quarantine",
            "state": "state",
        },
        "database": {"url": "sqlite:///inspectd.db"},
        "model": {"path": "model", "device": "CPU", "threshold": None},
    }
