"""Create the inspections table.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "inspections",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("filename", sa.String(1024), nullable=False),
        sa.Column("source_path", sa.Text, nullable=False),
        sa.Column("final_path", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("score", sa.Float, nullable=True),
        sa.Column("threshold", sa.Float, nullable=True),
        sa.Column("model_id", sa.String(64), nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("sha256", sa.String(64), nullable=True),
        sa.Column("size_bytes", sa.BigInteger, nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("moved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("latency_ms", sa.Float, nullable=True),
        sa.Column("inference_ms", sa.Float, nullable=True),
        sa.Column("host", sa.String(255), nullable=True),
        sa.CheckConstraint("status IN ('accepted', 'rejected', 'quarantined')", name="ck_inspections_status"),
    )
    op.create_index("ix_inspections_decided_at", "inspections", ["decided_at"])
    op.create_index("ix_inspections_status", "inspections", ["status"])


def downgrade() -> None:
    op.drop_index("ix_inspections_status", table_name="inspections")
    op.drop_index("ix_inspections_decided_at", table_name="inspections")
    op.drop_table("inspections")
