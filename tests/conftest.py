"""Shared fixtures: a real tiny exported model (trained once per session), temp configs, and a
guard that fails any test leaving threads behind."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image
from sqlalchemy import select

from daemon.config import Config, dump_defaults, load_config
from daemon.db.models import Inspection
from daemon.run.service import Daemon


@pytest.fixture(scope="session")
def surface_set(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from training.synthetic import make_surface_set

    return make_surface_set(tmp_path_factory.mktemp("surface"), n_normal=10, n_abnormal=6, size=128, seed=7)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    """A real EfficientAD-S export (few steps, random teacher): the daemon loads it like any other."""
    from training.fit import train
    from training.options import TrainOptions

    normal, _abnormal = request.getfixturevalue("surface_set")
    out = tmp_path_factory.mktemp("model")
    train(TrainOptions(normal, out, max_steps=3, teacher="random", seed=0))
    return out


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 5.0
    while True:
        leaked = [t for t in threading.enumerate() if t not in before and t.is_alive() and _ours(t)]
        if not leaked or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not leaked, f"test leaked threads: {[t.name for t in leaked]}"


def _ours(thread: threading.Thread) -> bool:
    """Threads inspectd starts (observer, emitters, rescan); library pools are not ours to police."""
    return thread.name.startswith("inspectd") or type(thread).__module__.startswith("watchdog")


def write_image(path: Path, seed: int = 0, size: int = 64) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)
    return path


def make_config(root: Path, model: Path, **overrides: Any) -> Path:
    """Write a config.yaml under ``root`` with relative folders, like a user would."""
    data = dump_defaults()  # the same self-contained layout `inspectd demo` writes
    data["model"]["path"] = str(model)
    data["watch"] = {"settle_ms": 300, "rescan_seconds": 2}
    for dotted, value in overrides.items():
        section, key = dotted.split("__")
        data.setdefault(section, {})[key] = value
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.fixture
def config_for(tmp_path: Path, tiny_model: Path) -> Any:
    def build(**overrides: Any) -> Config:
        return load_config(make_config(tmp_path, tiny_model, **overrides))

    return build


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A running PostgreSQL server (tests/postgres.py), one per test session."""
    from tests.postgres import PostgresServer

    server = PostgresServer()
    server.start()
    try:
        yield server
    finally:
        server.remove()


@pytest.fixture
def pg_url(postgres: Any, request: pytest.FixtureRequest) -> str:
    """A fresh, empty database on the session's server."""
    name = "t_" + "".join(c if c.isalnum() else "_" for c in request.node.name.lower())[:50]
    return str(postgres.create_database(f"{name}_{time.monotonic_ns() % 10**8}"))


@contextlib.contextmanager
def daemon_running(config: Config, join_s: float = 60.0) -> Iterator[Daemon]:
    """A started daemon whose loop runs on a thread, as ``inspectd run`` runs it; stopped as a
    SIGTERM stops it (a clean stop writes the overlays still queued)."""
    daemon = Daemon.start(config)
    stop = threading.Event()
    loop = threading.Thread(target=daemon.run_until, args=(stop,), name="inspectd-test-loop")
    loop.start()
    try:
        yield daemon
    finally:
        stop.set()
        loop.join(join_s)


def rows_of(daemon: Daemon) -> list[Inspection]:
    with daemon.store.session() as session:
        return list(session.scalars(select(Inspection).order_by(Inspection.id)))


def wait_until(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll ``check`` until it holds (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
