"""``inspectd demo``: the whole product on embedded defaults, offline, in a few minutes.

Generates synthetic plastic-surface images, trains a small model with the offline teacher (ImageNet
EfficientNet-Lite2 from its installed wheel; nothing is downloaded), starts the real daemon on
``ROOT/inbox``, feeds it good and defective parts, prints the results table and keeps watching
until Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from daemon.config import dump_defaults, load_config
from daemon.run.logs import setup_logging
from inspectd.export import CARD_NAME

DEMO_STEPS = 40
DEMO_SIZE = 256
TRAIN_NORMAL, TRAIN_ABNORMAL = 60, 12
FEED_NORMAL, FEED_ABNORMAL = 12, 12


@dataclass(frozen=True)
class DemoPlan:
    root: Path
    max_steps: int
    exit_when_done: bool
    retrain: bool
    feed_interval_s: float = 0.4

    @property
    def model(self) -> Path:
        return self.root / "model"

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"


def register(commands: Any) -> None:
    demo = commands.add_parser(
        "demo",
        help="train a small model on synthetic images and watch the daemon judge them",
        description=(
            "End-to-end demo on embedded defaults, fully offline: generate synthetic plastic "
            "surfaces (good ones and ones with stains/scratches), train a small EfficientAD model "
            "with the offline ImageNet EfficientNet-Lite2 teacher, start the daemon on ROOT/inbox, "
            "feed it images and print the results. Keeps running so you can drop more images into "
            "ROOT/inbox; Ctrl-C stops it. A second run reuses the trained model."
        ),
    )
    demo.add_argument(
        "--root", type=Path, default=Path("var/demo"), help="folder for everything (default: var/demo)"
    )
    demo.add_argument(
        "--max-steps",
        type=int,
        default=DEMO_STEPS,
        metavar="N",
        help="training steps (default: %(default)s; the whole demo takes about 4 minutes on a 2-core CPU)",
    )
    demo.add_argument("--retrain", action="store_true", help="train again even if ROOT/model exists")
    demo.add_argument(
        "--exit-when-done", action="store_true", help="stop once the fed images are judged (for scripts)"
    )
    demo.set_defaults(handler=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    plan = DemoPlan(args.root.resolve(), args.max_steps, args.exit_when_done, args.retrain)
    return run_demo(plan)


def run_demo(plan: DemoPlan) -> int:
    from training.synthetic import make_surface_set

    started = time.monotonic()
    plan.root.mkdir(parents=True, exist_ok=True)
    say(f"inspectd demo in {plan.root}")
    train_normal, train_abnormal = make_surface_set(
        plan.root / "data" / "train", TRAIN_NORMAL, TRAIN_ABNORMAL, DEMO_SIZE, seed=1
    )
    feed_normal, feed_abnormal = make_surface_set(
        plan.root / "data" / "samples", FEED_NORMAL, FEED_ABNORMAL, DEMO_SIZE, seed=2
    )
    say(
        f"1/3 synthetic images: {TRAIN_NORMAL} good parts to train on, "
        f"{TRAIN_ABNORMAL} defective ones to calibrate the threshold"
    )
    _train_if_needed(plan, train_normal, train_abnormal)
    say(f"3/3 starting the daemon (model ready after {time.monotonic() - started:.0f} s)")
    _write_config(plan)
    return _serve(plan, feed_normal, feed_abnormal)


def say(text: str) -> None:
    print(f"==> {text}", flush=True)


def _train_if_needed(plan: DemoPlan, normal: Path, abnormal: Path) -> None:
    from training.fit import train
    from training.options import TrainOptions

    card = plan.model / CARD_NAME
    if card.is_file() and not plan.retrain:
        steps = json.loads(card.read_text()).get("steps")
        say(f"2/3 reusing the model in {plan.model} ({steps} steps; --retrain to train again)")
        return
    from training.teacher import OFFLINE_DEFAULT

    say(f"2/3 training EfficientAD-S for {plan.max_steps} steps, teacher {OFFLINE_DEFAULT} (offline)")
    train(
        TrainOptions(
            normal,
            plan.model,
            abnormal_dir=abnormal,
            max_steps=plan.max_steps,
            teacher=OFFLINE_DEFAULT,
            seed=0,
            overwrite=True,
        )
    )


def _write_config(plan: DemoPlan) -> None:
    config = dump_defaults()
    config["watch"] = {"settle_ms": 300, "rescan_seconds": 10}
    text = "# Written by `inspectd demo`; paths are relative to this file.\n" + yaml.safe_dump(
        config, sort_keys=False
    )
    plan.config.write_text(text, encoding="utf-8")


def _feed(plan: DemoPlan, normal: Path, abnormal: Path, inbox: Path, stop: threading.Event) -> None:
    good = sorted(normal.glob("*.png"))
    bad = sorted(abnormal.glob("*.png"))
    pairs = [(f"good_{i:02d}.png", p) for i, p in enumerate(good)]
    pairs += [(f"defect_{i:02d}.png", p) for i, p in enumerate(bad)]
    pairs.sort(key=lambda item: (item[0][-6:], item[0]))  # interleave good and defective parts
    for name, src in pairs:
        if stop.wait(plan.feed_interval_s):
            return
        tmp = inbox / f".{name}.part"
        shutil.copyfile(src, tmp)
        tmp.rename(inbox / name)  # like a camera's FTP client: temp name, then rename


def _serve(plan: DemoPlan, feed_normal: Path, feed_abnormal: Path) -> int:
    from daemon.cli.results import render
    from daemon.db.store import Query
    from daemon.run.service import Daemon, install_signal_handlers

    config = load_config(plan.config)
    setup_logging("INFO")
    stop = threading.Event()
    install_signal_handlers(stop)
    daemon = Daemon.start(config)
    before = daemon.store.count()
    expected = FEED_NORMAL + FEED_ABNORMAL
    feeder = threading.Thread(
        target=_feed,
        args=(plan, feed_normal, feed_abnormal, config.paths.inbox, stop),
        name="inspectd-demo-feeder",
        daemon=True,
    )
    feeder.start()
    reported = False

    def after_step() -> None:
        nonlocal reported
        if reported or daemon.store.count() - before < expected:
            return
        reported = True
        rows = daemon.store.query(Query(limit=expected))
        print()
        print(render(rows, "table"), end="")
        _summary(rows, plan)
        if plan.exit_when_done:
            stop.set()

    try:
        daemon.run_until(stop, on_step=after_step)
    finally:
        stop.set()
        feeder.join(5)
    return 0


def _summary(rows: Any, plan: DemoPlan) -> None:
    caught = sum(1 for r in rows if r.filename.startswith("defect_") and r.status == "rejected")
    passed = sum(1 for r in rows if r.filename.startswith("good_") and r.status == "accepted")
    rel = plan.root
    say(
        f"caught {caught}/{FEED_ABNORMAL} defective parts, passed {passed}/{FEED_NORMAL} good parts "
        f"(a {plan.max_steps}-step model; see README for real training)"
    )
    if plan.exit_when_done:
        return
    say(f"the daemon keeps watching {rel / 'inbox'}: drop more images there, e.g.")
    print(f"      cp {rel / 'data/samples/abnormal/0000.png'} {rel / 'inbox/my_part.png'}")
    print(f"    results: inspectd results --config {plan.config}   (accepted/, rejected/ under {rel})")
    print("    Ctrl-C stops the daemon.", flush=True)
