"""The review page's reads and writes: recent rejects and quarantined files with their newest
label, and an operator's label for one row."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, select

from daemon.db.models import Inspection, Label
from daemon.db.store import Store


@dataclass(frozen=True)
class Reviewed:
    row: Inspection
    label: Label | None  # the newest one


def for_review(
    store: Store,
    *,
    statuses: Sequence[str],
    line: str | None = None,
    since: dt.datetime | None = None,
    limit: int = 100,
) -> list[Reviewed]:
    """Newest first: rows of these statuses, each with its newest label (if any)."""
    stmt = select(Inspection).where(Inspection.status.in_(list(statuses)))
    if line:
        stmt = stmt.where(Inspection.line == line)
    if since is not None:
        stmt = stmt.where(Inspection.decided_at >= since)
    stmt = stmt.order_by(Inspection.decided_at.desc(), Inspection.id.desc()).limit(limit)
    with store.session() as session:
        rows = list(session.scalars(stmt))
        newest = (
            select(Label.inspection_id, func.max(Label.id).label("last"))
            .where(Label.inspection_id.in_([r.id for r in rows]))
            .group_by(Label.inspection_id)
            .subquery()
        )
        labels = {
            label.inspection_id: label
            for label in session.scalars(select(Label).join(newest, Label.id == newest.c.last))
        }
    return [Reviewed(row, labels.get(row.id)) for row in rows]


def lines_seen(store: Store) -> list[str]:
    with store.session() as session:
        return sorted(session.scalars(select(Inspection.line).distinct()))


def get_row(store: Store, row_id: int) -> Inspection | None:
    with store.session() as session:
        return session.get(Inspection, row_id)


def add_label(store: Store, label: Label) -> Label:
    with store.session() as session:
        session.add(label)
    return label
