"""The generation log names the weights: ``model_sha256``, the digest of the model folder's
weight files (``easel.diffusion.identity.weights_digest``). Rows logged before this revision
keep NULL there: their model is named by its id alone.

Revision ID: 0006_model_digest
Revises: 0005_style
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_model_digest"
down_revision = "0005_style"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("generation_log") as batch:
        batch.add_column(sa.Column("model_sha256", sa.String(64), nullable=True))
    op.create_index("ix_generation_log_model_sha256", "generation_log", ["model_sha256"])


def downgrade() -> None:
    op.drop_index("ix_generation_log_model_sha256", table_name="generation_log")
    with op.batch_alter_table("generation_log") as batch:
        batch.drop_column("model_sha256")
