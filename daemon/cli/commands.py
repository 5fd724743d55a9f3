"""The daemon's own sub-commands: run, db, results, stats, install-service, bench."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from daemon import bench as benchmark
from daemon.cli.results import parse_since, render
from daemon.cli.stats import register_stats
from daemon.config import load_config
from daemon.db.connect import one_line_errors, open_engine, reading
from daemon.db.models import STATUSES
from daemon.db.store import Query, Store
from daemon.run.logs import apply_log_config
from inspectd.errors import InspectdError

CONFIG_HELP = "path of config.yaml (default: ./config.yaml)"


def register(commands: Any) -> None:
    run = commands.add_parser(
        "run",
        help="watch the inbox and judge every image until stopped",
        description=(
            "Watch paths.inbox; judge every complete image with the exported model; record one "
            "row per image; move it to accepted/, rejected/ or quarantine/. Upgrades the database "
            "schema on start. SIGTERM or Ctrl-C finishes the current image, then exits 0. "
            "SIGHUP re-reads the config (threshold, watch rules, limits, log, retention) and the "
            "model without stopping; a new export swapped in at model.path is also picked up by "
            "itself within model.check_seconds. Exit code 2: the configuration is wrong (the "
            "message names the key)."
        ),
    )
    run.add_argument("--config", default="config.yaml", help=CONFIG_HELP)
    run.set_defaults(handler=cmd_run)

    db = commands.add_parser(
        "db", help="database schema maintenance", description="Database schema maintenance."
    )
    db_commands = db.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    up = db_commands.add_parser(
        "upgrade",
        help="create or migrate the results database to the newest schema",
        description="Create the results database or migrate it to the newest schema (Alembic).",
    )
    up.add_argument("--config", default="config.yaml", help=CONFIG_HELP)
    up.set_defaults(handler=cmd_db_upgrade)

    res = commands.add_parser(
        "results",
        help="list recorded inspections",
        description=(
            "List recorded inspections, newest first. Only reads: the database must already "
            "exist at this version's schema (`inspectd run` creates it, `inspectd db upgrade` "
            "migrates it)."
        ),
    )
    res.add_argument("--config", default="config.yaml", help=CONFIG_HELP)
    res.add_argument("--status", choices=STATUSES, help="only rows with this status")
    res.add_argument("--line", metavar="NAME", help="only rows of this line (config.yaml lines: name)")
    res.add_argument(
        "--since", help="only rows decided since then: ISO time (2026-11-26T08:00) or a span (30m, 12h, 7d)"
    )
    res.add_argument("--limit", type=int, default=50, help="at most N rows (default 50; 0 = all)")
    res.add_argument("--format", choices=("table", "csv", "json"), default="table", help="output format")
    res.set_defaults(handler=cmd_results)

    _add_install_service(commands)
    register_stats(commands, CONFIG_HELP)
    register_bench(commands)


def _add_install_service(commands: Any) -> None:
    svc = commands.add_parser(
        "install-service",
        help="write a systemd unit that runs the daemon with this config",
        description=(
            "Write a hardened systemd unit (Type=notify, watchdog, restart on failure) that runs "
            "`inspectd run` with this virtualenv's python and --config, as an unprivileged user, "
            "with only the config's folders writable. Prints to stdout unless --output is given; "
            "does not call systemctl."
        ),
        epilog=(
            "Typical use: inspectd install-service --config /etc/inspectd/config.yaml "
            "--output /etc/systemd/system/inspectd.service && systemctl daemon-reload && "
            "systemctl enable --now inspectd"
        ),
    )
    svc.add_argument("--config", default="config.yaml", help=CONFIG_HELP)
    svc.add_argument("--user", default="inspectd", help="unprivileged user to run as (default: inspectd)")
    svc.add_argument("--group", help="group to run as (default: same as --user)")
    svc.add_argument(
        "--python", help="interpreter for ExecStart (default: the one running this command, i.e. its venv)"
    )
    svc.add_argument("--output", help="write the unit to this file instead of stdout")
    svc.add_argument(
        "--template",
        action="store_true",
        help="write the template unit inspectd@.service instead: one daemon per /etc/inspectd/NAME.yaml, "
        "folders under /srv/inspectd/NAME (systemctl enable --now inspectd@NAME); --config is not read",
    )
    svc.set_defaults(handler=cmd_install_service)


def register_bench(commands: Any) -> None:
    bench = commands.add_parser(
        "bench",
        help="measure how fast this machine judges with a model: anomalib's loop, raw OpenVINO, the daemon",
        description=(
            "In one run and on the same IR: seed_loop_ips (anomalib's OpenVINOInferencer.predict(path) "
            "in a loop), raw_ips (the best raw OpenVINO configuration on pre-decoded tensors, picked by a "
            "short screen and timed again before, between and after the daemon's drains: raw_screen_ips "
            "is the screen's own, biased-high figure), "
            "daemon_ips (a real inspectd run draining a backlog, from its first decision to the last, "
            "with model.backlog_batch set to the chosen raw configuration's batch: daemon_backlog_batch; "
            "daemon_ips_from_landing counts from the backlog's landing, first_decision_ms the wait for "
            "the first verdict), overhead_ms_per_image, latency "
            "p50/p95 from a closed file to its committed row at a low rate, and the daemon's peak "
            "RSS. Heatmap overlays wait for a pause in judging, so their cost comes after a drain: "
            "overlays_per_drain and overlays_done_ms (from its last verdict to its last overlay). "
            "Compare ratios, not absolute figures: CPUs differ by 3x."
        ),
    )
    bench.add_argument(
        "--model", required=True, type=Path, metavar="DIR", help="export folder (or model.xml)"
    )
    bench.add_argument(
        "--images", type=int, default=30, metavar="N", help="images per measurement (default 30)"
    )
    bench.add_argument(
        "--size", default="256x256", metavar="WxH", help="size of the generated frames (default 256x256)"
    )
    bench.add_argument("--format", choices=("png", "jpg"), default="png", help="file format of the frames")
    bench.add_argument(
        "--baseline",
        type=Path,
        metavar="DIR",
        help="another export (e.g. the fp32 one an INT8 --model was quantised from): its seed loop is "
        "measured too, as baseline_seed_loop_ips, so the daemon's speed can be set against it",
    )
    bench.add_argument(
        "--rounds",
        type=int,
        default=benchmark.DEFAULT_ROUNDS,
        metavar="N",
        help="backlog drains, each between two raw timings of the same configuration; the figures "
        f"are medians (default {benchmark.DEFAULT_ROUNDS}: a shared CPU's speed drifts from one "
        "minute to the next)",
    )
    bench.add_argument("--json", action="store_true", help="print one JSON object with the figures")
    bench.set_defaults(handler=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    try:
        width, height = benchmark.frame_size(args.size)
    except ValueError as exc:
        raise InspectdError(str(exc)) from None
    if args.images < 3 or width < 32 or height < 32 or args.rounds < 1:
        raise InspectdError("--images must be at least 3, --size at least 32x32 and --rounds at least 1")
    result = benchmark.bench(
        args.model,
        images=args.images,
        size=(width, height),
        fmt=args.format,
        say=lambda text: print(f"bench: {text}", file=sys.stderr, flush=True),
        baseline=args.baseline,
        rounds=args.rounds,
    )
    if args.json:
        print(result.to_json())
    else:
        ratios = result.ratios()
        print(
            f"{result.cpu}, {result.images} images of {width}x{height} {args.format}\n"
            f"  seed loop   {result.seed_loop_ips:7.2f} images/s\n"
            f"  raw best    {result.raw_ips:7.2f} images/s  {result.raw_config} "
            f"(screen: {result.raw_screen_ips:.2f})\n"
            f"  daemon      {result.daemon_ips:7.2f} images/s  "
            f"({ratios['daemon_over_raw']:.2f} x raw, {ratios['daemon_over_seed_loop']:.2f} x seed loop; "
            f"each drain over the raw timings around it: {', '.join(map(str, result.round_ratios))})\n"
            f"              {result.daemon_ips_from_landing:7.2f} images/s from the landing "
            f"({ratios['daemon_from_landing_over_raw']:.2f} x raw; first decision after "
            f"{result.first_decision_ms:.0f} ms)\n"
            f"  overhead    {result.overhead_ms_per_image:7.1f} ms/image over raw\n"
            f"  latency     p50 {result.latency_p50_ms:.0f} ms, p95 {result.latency_p95_ms:.0f} ms "
            f"(inference {result.inference_ms:.0f} ms raw, "
            f"{result.daemon_inference_p50_ms:.0f} ms in the daemon's rows)\n"
            f"  peak RSS    {result.peak_rss_mb:.0f} MB"
        )
        if result.overlays_done_ms is not None:
            print(
                f"  overlays    {result.overlays_per_drain:.0f} per drain, written after its verdicts: "
                f"the last {result.overlays_done_ms:.0f} ms after the last verdict"
            )
        if "daemon_over_baseline_seed_loop" in ratios:
            print(
                f"  baseline    {result.baseline_seed_loop_ips:7.2f} images/s seed loop on {args.baseline} "
                f"(daemon {ratios['daemon_over_baseline_seed_loop']:.2f} x)"
            )
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from daemon.run.service import run

    config = load_config(args.config)
    apply_log_config(config.log)
    return run(config)


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from daemon.db.migrate import upgrade

    config = load_config(args.config)
    with one_line_errors(config.database.url):
        before, after = upgrade(open_engine(config.database.url))
    print(f"database at revision {after} (was {before or 'empty'})")
    return 0


def cmd_results(args: argparse.Namespace) -> int:

    config = load_config(args.config)
    query = Query(
        status=args.status,
        since=parse_since(args.since) if args.since else None,
        limit=args.limit or None,
        line=args.line,
    )
    with reading(config.database.url) as engine:
        rows = Store(engine).query(query)
    sys.stdout.write(render(rows, args.format))
    return 0


def cmd_install_service(args: argparse.Namespace) -> int:
    from pathlib import Path

    from daemon.cli.service_unit import render_template_unit, render_unit, warnings_for

    python = Path(args.python).expanduser().absolute() if args.python else None
    if args.template:
        unit = render_template_unit(user=args.user, group=args.group, python=python)
    else:
        config_file = Path(args.config).expanduser().absolute()
        config = load_config(config_file)
        unit = render_unit(config, config_file=config_file, user=args.user, group=args.group, python=python)
        for note in warnings_for(config, python):
            print(f"inspectd: warning: {note}", file=sys.stderr)
    if args.output:
        out = Path(args.output)
        out.write_text(unit, encoding="utf-8")
        enable = f"{out.stem}NAME" if out.stem.endswith("@") else out.stem
        print(
            f"wrote {out}; then: systemctl daemon-reload && systemctl enable --now {enable}",
            file=sys.stderr,
        )
    else:
        sys.stdout.write(unit)
    return 0
