"""Lines and daemon instances: which line judged a row, which daemon owns it, where it was claimed.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01

``line`` is backfilled ``default`` (every row before this revision came from a single-line
daemon). ``instance`` and ``claim_path`` stay NULL for old rows: recovery treats a row without an
instance as its host's, as the previous version did.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("inspections") as batch:
        batch.add_column(sa.Column("line", sa.String(64), nullable=False, server_default="default"))
        batch.add_column(sa.Column("instance", sa.String(64), nullable=True))
        batch.add_column(sa.Column("claim_path", sa.Text, nullable=True))
    op.create_index("ix_inspections_line", "inspections", ["line"])
    op.create_index("ix_inspections_unmoved", "inspections", ["host", "instance", "moved_at"])


def downgrade() -> None:
    op.drop_index("ix_inspections_unmoved", table_name="inspections")
    op.drop_index("ix_inspections_line", table_name="inspections")
    with op.batch_alter_table("inspections") as batch:
        batch.drop_column("claim_path")
        batch.drop_column("instance")
        batch.drop_column("line")
