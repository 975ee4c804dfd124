"""The generation log: every published image's id, parameters, model, dataset, hashes.

Revision ID: 0002_generation_log
Revises: 0001_registry
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from easel.registry.models import UTCDateTime

revision = "0002_generation_log"
down_revision = "0001_registry"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "generation_log",
        sa.Column("pk", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(12), nullable=False, unique=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("model_id", sa.String(300), nullable=False),
        sa.Column("dataset_id", sa.String(64), nullable=True),
        sa.Column("seed", sa.BigInteger(), nullable=True),
        sa.Column("parameters", sa.JSON(), nullable=False),
        sa.Column("style", sa.String(200), nullable=True),
        sa.Column("style_artist", sa.String(200), nullable=True),
        sa.Column("style_attribution", sa.Text(), nullable=True),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("pdq", sa.String(64), nullable=False),
        sa.Column("pdq_quality", sa.Integer(), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("watermarked", sa.Boolean(), nullable=False),
        sa.Column("signed", sa.Boolean(), nullable=False),
        sa.Column("visible_mark", sa.Boolean(), nullable=False),
        sa.Column("manifest_label", sa.String(120), nullable=True),
        sa.Column("easel_version", sa.String(32), nullable=False),
    )
    op.create_index("ix_generation_log_dataset_id", "generation_log", ["dataset_id"])
    op.create_index("ix_generation_log_style_artist", "generation_log", ["style_artist"])
    op.create_index("ix_generation_log_sha256", "generation_log", ["sha256"])


def downgrade() -> None:
    op.drop_table("generation_log")
