from pathlib import Path

import pytest
from pydantic import ValidationError

from daemon.cli import main
from daemon.config import load_config
from daemon.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_shipped_config_loads_with_paths_relative_to_it() -> None:
    config = load_config(REPO / "config.yaml")
    assert config.paths.inbox == REPO / "var" / "inbox"
    assert config.database.url == f"sqlite:///{REPO / 'var' / 'inspectd.db'}"
    assert config.model.threshold is None
    with pytest.raises(ValidationError):
        config.model.device = "GPU"  # type: ignore[misc]  # frozen


def test_unknown_key_is_named(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text("paths: {inbox: i, accepted: a, rejected: r, quarantine: q, inbx: x}\nmodel: {path: m}\n")
    with pytest.raises(ConfigError, match=r"paths\.inbx: unknown key"):
        load_config(cfg)


def test_missing_section_and_bad_range_are_named(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        "paths: {inbox: i, accepted: a, rejected: r, quarantine: q}\nmodel: {path: m, threshold: 3}\n"
    )
    with pytest.raises(ConfigError, match=r"model\.threshold"):
        load_config(cfg)
    cfg.write_text("model: {path: m}\n")
    with pytest.raises(ConfigError, match=r"paths: required key is missing"):
        load_config(cfg)


def test_missing_model_exits_2_naming_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        "paths: {inbox: i, accepted: a, rejected: r, quarantine: q}\nmodel: {path: nothing-here}\n"
    )
    assert main(["run", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "model.path" in err and "inspectd train" in err
    assert not (tmp_path / "i").exists()  # nothing created for a config that cannot run


def test_uncreatable_folder_is_named(
    tmp_path: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(  # /proc refuses new folders even to root
        f"paths: {{inbox: i, accepted: /proc/inspectd-accepted, rejected: r, quarantine: q}}\n"
        f"model: {{path: {tiny_model}}}\n"
    )
    assert main(["run", "--config", str(cfg)]) == 2
    assert "paths.accepted" in capsys.readouterr().err


def test_folder_that_is_a_file_is_named(
    tmp_path: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "acc").write_text("I am a file")
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        f"paths: {{inbox: i, accepted: acc, rejected: r, quarantine: q, state: s}}\n"
        f"database: {{url: 'sqlite:///x.db'}}\nmodel: {{path: {tiny_model}}}\n"
    )
    assert main(["run", "--config", str(cfg)]) == 2
    assert "paths.accepted" in capsys.readouterr().err


def test_missing_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["results", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err


def _config(tmp_path: Path, extra: str) -> Path:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        f"paths: {{inbox: i, accepted: a, rejected: out/r, quarantine: q}}\nmodel: {{path: m}}\n{extra}\n"
    )
    return cfg


def test_shifts_default_to_one_day_shift_and_read_unquoted_times(tmp_path: Path) -> None:
    assert [(s.name, s.start) for s in load_config(_config(tmp_path, "")).shifts] == [("day", "00:00")]
    # YAML 1.1 reads an unquoted 06:00 as the number 360; it still means six o'clock.
    config = load_config(
        _config(tmp_path, "shifts: [{name: early, start: 06:00}, {name: night, start: '22:30'}]")
    )
    assert [(s.name, s.start, s.start_minute) for s in config.shifts] == [
        ("early", "06:00", 360),
        ("night", "22:30", 1350),
    ]


@pytest.mark.parametrize(
    ("shifts", "message"),
    [
        ("[]", r"shifts: list at least one shift"),
        ("[{name: a, start: '06:00'}, {name: a, start: '14:00'}]", r"shifts: each shift needs its own name"),
        ("[{name: a, start: '06:00'}, {name: b, start: '06:00'}]", r"shifts: two shifts start at the same"),
        ("[{name: a, start: '24:00'}]", r"shifts\.0\.start: '24:00' is not a time of day: write it as HH:MM"),
        ("[{name: a}]", r"shifts\.0\.start: required key is missing"),
    ],
)
def test_wrong_shifts_are_named(tmp_path: Path, shifts: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(_config(tmp_path, f"shifts: {shifts}"))
