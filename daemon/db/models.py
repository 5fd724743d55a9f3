"""The ``inspections`` table: one row per judged (or quarantined) image, and ``labels``: an
operator's verdict on a row. Alembic owns the schema (``migrations/``); this is how the code sees it."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, CheckConstraint, DateTime, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

STATUSES = ("accepted", "rejected", "quarantined")
LABELS = ("good", "defect")


class Base(DeclarativeBase):
    pass


class Inspection(Base):
    """One judged (or quarantined) image; the row is committed before the file moves."""

    __tablename__ = "inspections"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    filename: Mapped[str] = mapped_column(String(1024))
    source_path: Mapped[str] = mapped_column(Text)
    final_path: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    score: Mapped[float | None] = mapped_column(Float, nullable=True)
    threshold: Mapped[float | None] = mapped_column(Float, nullable=True)
    model_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    size_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    received_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    decided_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    moved_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    latency_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    inference_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    host: Mapped[str | None] = mapped_column(String(255), nullable=True)
    line: Mapped[str] = mapped_column(String(64), default="default", server_default="default")
    # The daemon that judged it (host + instance own a row) and where it waited, claimed, meanwhile.
    instance: Mapped[str | None] = mapped_column(String(64), nullable=True)
    claim_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The anomaly-map overlay written for this row (outputs.heatmaps), or None.
    heatmap_path: Mapped[str | None] = mapped_column(Text, nullable=True)

    __table_args__ = (
        Index("ix_inspections_decided_at", "decided_at"),
        Index("ix_inspections_status", "status"),
        Index("ix_inspections_line", "line"),
        Index("ix_inspections_unmoved", "host", "instance", "moved_at"),
    )


class Label(Base):
    """An operator's verdict on one inspection (the review page); the newest one counts."""

    __tablename__ = "labels"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    inspection_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("inspections.id", ondelete="CASCADE", name="fk_labels_inspection_id")
    )
    label: Mapped[str] = mapped_column(String(16))
    labelled_by: Mapped[str] = mapped_column(String(255))
    labelled_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    # Where the image was copied for retraining (retraining/<line>/good|defect/...), or None.
    copied_to: Mapped[str | None] = mapped_column(Text, nullable=True)

    __table_args__ = (
        CheckConstraint("label IN ('good', 'defect')", name="ck_labels_label"),
        Index("ix_labels_inspection_id", "inspection_id"),
    )
