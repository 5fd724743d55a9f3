"""The daemon's own sub-commands: run, db, results."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from daemon.config import load_config
from daemon.logs import apply_log_config
from daemon.results import parse_since, render
from daemon.store import STATUSES, Query, Store, make_engine

CONFIG_HELP = "path of config.yaml (default: ./config.yaml)"


def register(commands: Any) -> None:
    run = commands.add_parser(
        "run",
        help="watch the inbox and judge every image until stopped",
        description=(
            "Watch paths.inbox; judge every complete image with the exported model; record one "
            "row per image; move it to accepted/, rejected/ or quarantine/. Upgrades the database "
            "schema on start. SIGTERM or Ctrl-C finishes the current image, then exits 0."
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
        description="List recorded inspections, newest first.",
    )
    res.add_argument("--config", default="config.yaml", help=CONFIG_HELP)
    res.add_argument("--status", choices=STATUSES, help="only rows with this status")
    res.add_argument(
        "--since", help="only rows decided since then: ISO time (2026-11-26T08:00) or a span (30m, 12h, 7d)"
    )
    res.add_argument("--limit", type=int, default=50, help="at most N rows (default 50; 0 = all)")
    res.add_argument("--format", choices=("table", "csv", "json"), default="table", help="output format")
    res.set_defaults(handler=cmd_results)


def cmd_run(args: argparse.Namespace) -> int:
    from daemon.service import run

    config = load_config(args.config)
    apply_log_config(config.log)
    return run(config)


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from daemon.migrate import upgrade

    config = load_config(args.config)
    before, after = upgrade(make_engine(config.database.url))
    print(f"database at revision {after} (was {before or 'empty'})")
    return 0


def cmd_results(args: argparse.Namespace) -> int:
    from daemon.migrate import upgrade

    config = load_config(args.config)
    engine = make_engine(config.database.url)
    upgrade(engine)
    query = Query(
        status=args.status,
        since=parse_since(args.since) if args.since else None,
        limit=args.limit or None,
    )
    sys.stdout.write(render(Store(engine).query(query), args.format))
    return 0
