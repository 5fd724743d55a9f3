"""The daemon's own sub-commands: run, db, results, install-service."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from daemon.cli.results import parse_since, render
from daemon.config import load_config
from daemon.db.engine import make_engine
from daemon.db.models import STATUSES
from daemon.db.store import Query, Store
from daemon.db.url import sqlite_file
from daemon.errors import DatabaseNotReady
from daemon.run.logs import apply_log_config

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
    res.add_argument(
        "--since", help="only rows decided since then: ISO time (2026-11-26T08:00) or a span (30m, 12h, 7d)"
    )
    res.add_argument("--limit", type=int, default=50, help="at most N rows (default 50; 0 = all)")
    res.add_argument("--format", choices=("table", "csv", "json"), default="table", help="output format")
    res.set_defaults(handler=cmd_results)

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
    svc.set_defaults(handler=cmd_install_service)


def cmd_run(args: argparse.Namespace) -> int:
    from daemon.run.service import run

    config = load_config(args.config)
    apply_log_config(config.log)
    return run(config)


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from daemon.db.migrate import upgrade

    config = load_config(args.config)
    before, after = upgrade(make_engine(config.database.url))
    print(f"database at revision {after} (was {before or 'empty'})")
    return 0


def cmd_results(args: argparse.Namespace) -> int:
    from daemon.db.migrate import require_head

    config = load_config(args.config)
    query = Query(
        status=args.status,
        since=parse_since(args.since) if args.since else None,
        limit=args.limit or None,
    )
    url = config.database.url
    if (path := sqlite_file(url)) is not None and not path.is_file():
        raise DatabaseNotReady(f"no results database at {path} yet; `inspectd run` creates it")
    engine = make_engine(url)
    require_head(engine)
    sys.stdout.write(render(Store(engine).query(query), args.format))
    return 0


def cmd_install_service(args: argparse.Namespace) -> int:
    from pathlib import Path

    from daemon.cli.service_unit import render_unit, warnings_for

    config_file = Path(args.config).expanduser().absolute()
    config = load_config(config_file)
    python = Path(args.python).expanduser().absolute() if args.python else None
    unit = render_unit(config, config_file=config_file, user=args.user, group=args.group, python=python)
    for note in warnings_for(config, python):
        print(f"inspectd: warning: {note}", file=sys.stderr)
    if args.output:
        out = Path(args.output)
        out.write_text(unit, encoding="utf-8")
        print(
            f"wrote {out}; then: systemctl daemon-reload && systemctl enable --now {out.stem}",
            file=sys.stderr,
        )
    else:
        sys.stdout.write(unit)
    return 0
