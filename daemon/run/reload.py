"""SIGHUP: what a reload may change while images flow, and applying it.

The reload re-reads config.yaml. Each line's model, threshold and watch rules, the size limit, the
log set-up and the retention ages apply live; folders, the database, the metrics listener, the set
of lines and the observer kind (it decides whether close events can be waited for) need a restart
and are logged as such (the running values stay). Either every live change goes in together or,
when one cannot (a model that does not load, a log file that cannot be written), none does.
"""

from __future__ import annotations

from typing import Any

from loguru import logger

from daemon.config import Config, LineConfig, load_config
from daemon.db.store import Store
from daemon.errors import ConfigError
from daemon.run.line import Line, compiled_as
from daemon.run.logs import apply_log_config
from daemon.run.model_watch import fingerprint
from daemon.run.notify import Notifier
from daemon.run.retention import Retention
from daemon.web.metrics import Metrics
from inspectd.errors import ModelError
from inspectd.scorer import Model

RESTART_SECTIONS = ("paths", "database", "metrics", "outputs", "drift")
RESTART_KEYS = ("watch.observer", "watch.recursive")
LINE_RESTART = ("paths", "watch.observer", "watch.recursive")


def changed_keys(old: Config, new: Config) -> list[str]:
    """Dotted names of the settings that differ, as the user wrote them: ``model.threshold``, or
    ``lines.<name>.model.threshold`` in the ``lines:`` form."""
    return sorted(_diff(_as_written(old), _as_written(new), ""))


def _as_written(config: Config) -> dict[str, Any]:
    data = config.model_dump()
    lines = data.pop("lines")
    if not config.single_line:
        data["lines"] = {line["name"]: line for line in lines}
    return data


def _diff(a: Any, b: Any, prefix: str) -> set[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: set[str] = set()
        for key in a.keys() | b.keys():
            out |= _diff(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    return set() if a == b else {prefix.rstrip(".")}


def needs_restart(key: str) -> bool:
    head, _, rest = key.partition(".")
    if head == "lines":
        _name, _, setting = rest.partition(".")
        return not setting or setting.startswith(LINE_RESTART)  # a line added or removed, or its folders
    return head in RESTART_SECTIONS or key in RESTART_KEYS


def live_config(running: Config, new: Config) -> Config:
    """``new`` with what cannot change live kept at its running values: the running lines, each
    with its folders and observer, take their new model and watch settings."""
    kept: dict[str, object] = {section: getattr(running, section) for section in RESTART_SECTIONS}
    kept["watch"] = _live_watch(running.watch, new.watch)
    fresh = {line.name: line for line in new.lines}
    kept["lines"] = tuple(_live_line(line, fresh.get(line.name)) for line in running.lines)
    return new.model_copy(update=kept)


def _live_watch(running: Any, new: Any) -> Any:
    return new.model_copy(
        update={key.split(".", 1)[1]: getattr(running, key.split(".", 1)[1]) for key in RESTART_KEYS}
    )


def _live_line(running: LineConfig, new: LineConfig | None) -> LineConfig:
    if new is None:  # removed from the file: runs as before until the restart
        return running
    return new.model_copy(update={"paths": running.paths, "watch": _live_watch(running.watch, new.watch)})


class LiveChanges:
    """The service's reload, as a mixin: it works on the running lines and shared parts."""

    config: Config
    lines: list[Line]
    store: Store
    metrics: Metrics
    notifier: Notifier
    retention: Retention | None

    def status_line(self) -> str:
        raise NotImplementedError

    def reload(self) -> None:
        """SIGHUP: apply config.yaml and changed models, or refuse both and keep running as before."""
        logger.info("reload requested: re-reading {} and checking the models", self.config.source)
        self.notifier.reloading()
        try:
            self._reload()
        finally:
            self.notifier.reloaded(self.status_line())

    def _reload(self) -> None:
        try:
            config = load_config(self.config.source)
        except ConfigError as exc:
            self._refuse(f"configuration not applied: {exc}")
            return
        changed = changed_keys(self.config, config)
        config = live_config(self.config, config)
        models = self._models_for(config)
        if models is None:
            return
        if config.log != self.config.log:
            try:
                apply_log_config(config.log)
            except ConfigError as exc:
                apply_log_config(self.config.log)
                self._refuse(str(exc))
                return
        # Nothing below can fail: the new settings go live together.
        for line, line_config, model in zip(self.lines, config.lines, models, strict=True):
            line.apply(line_config, model, config.limits.max_pixels)
        if config.retention != self.config.retention:
            self._apply_retention(config)
        self.config = config
        restart = [k for k in changed if needs_restart(k)]
        if restart:
            logger.warning(
                "reload: {} changed; needs restart (systemctl restart inspectd), running values kept",
                ", ".join(restart),
            )
        live = [k for k in changed if not needs_restart(k)]
        logger.info("reload: applied {}", ", ".join(live) if live else "no changed live setting")

    def _models_for(self, config: Config) -> list[Model | None] | None:
        """Per running line, the model its new settings need (None: keep the loaded one); None
        when a line's config names a model that cannot be used, which refuses the whole reload."""
        models: list[Model | None] = []
        for line, new in zip(self.lines, config.lines, strict=True):
            moved = compiled_as(new) != compiled_as(line.config)
            max_pixels = config.limits.max_pixels
            if moved:  # the config names another model: unusable means the config is refused
                key = "model" if config.single_line else f"lines.{line.name}.model"
                try:
                    model = line.try_model(new, fingerprint(new.model.path), max_pixels)
                except ModelError as exc:
                    self._refuse(f"{key}.path: {exc}")
                    return None
                if model is None:
                    self._refuse(f"{key}.path / {key}.device: that model cannot be used (see above)")
                    return None
                models.append(model)
            elif (stamp := line.model_watch.candidate(force=True)) is not None:
                models.append(line.try_model(new, stamp, max_pixels))  # refused alone; config applies
            else:
                models.append(None)
        return models

    def _refuse(self, why: str) -> None:
        self.metrics.error("daemon", "reload_refused")
        logger.error(
            "reload refused: {}; still running with model(s) {} and the previous configuration",
            why,
            ", ".join(line.model.model_id for line in self.lines),
        )

    def start_retention(self, config: Config) -> Retention:
        assert config.retention is not None
        folders = [
            folder
            for line in config.lines
            for key in ("accepted", "rejected", "quarantine", "heatmaps")
            if (folder := getattr(line.paths, key)) is not None
        ]
        retention = Retention(self.store, sorted(set(folders)), config.retention)
        retention.start()
        return retention

    def _apply_retention(self, config: Config) -> None:
        if config.retention is None:
            if self.retention is not None:
                self.retention.stop()
                self.retention = None
        elif self.retention is None:
            self.retention = self.start_retention(config)
        else:
            self.retention.update(config.retention)
