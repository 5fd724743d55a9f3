"""Heatmaps and labels: where a row's anomaly-map overlay lies, and operators' verdicts on rows.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-08

``heatmap_path`` stays NULL for old rows (no map was kept before this revision) and for rows the
``outputs.heatmaps`` setting leaves without one. A label belongs to its inspection: deleting the
row deletes its labels (ON DELETE CASCADE; SQLite enforces it only with ``PRAGMA foreign_keys``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("inspections") as batch:
        batch.add_column(sa.Column("heatmap_path", sa.Text, nullable=True))
    op.create_table(
        "labels",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "inspection_id",
            sa.Integer,
            sa.ForeignKey("inspections.id", ondelete="CASCADE", name="fk_labels_inspection_id"),
            nullable=False,
        ),
        sa.Column("label", sa.String(16), nullable=False),
        sa.Column("labelled_by", sa.String(255), nullable=False),
        sa.Column("labelled_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("copied_to", sa.Text, nullable=True),
        sa.CheckConstraint("label IN ('good', 'defect')", name="ck_labels_label"),
    )
    op.create_index("ix_labels_inspection_id", "labels", ["inspection_id"])


def downgrade() -> None:
    op.drop_index("ix_labels_inspection_id", table_name="labels")
    op.drop_table("labels")
    with op.batch_alter_table("inspections") as batch:
        batch.drop_column("heatmap_path")
