"""The style studio: personal styles, their works, shares, and the append-only credit ledger.

Revision ID: 0005_style
Revises: 0004_server_hardening
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from easel.registry.models import UTCDateTime

revision = "0005_style"
down_revision = "0004_server_hardening"
branch_labels = None
depends_on = None

# The credit ledger is append-only in the database too: UPDATE and DELETE raise.
_PG_FUNCTION = """
CREATE OR REPLACE FUNCTION easel_style_credits_append_only() RETURNS trigger AS $$
BEGIN
  RAISE EXCEPTION 'style_credits is append-only: % is not allowed', TG_OP;
END;
$$ LANGUAGE plpgsql
"""
_PG_TRIGGER = """
CREATE TRIGGER style_credits_append_only BEFORE UPDATE OR DELETE ON style_credits
FOR EACH ROW EXECUTE FUNCTION easel_style_credits_append_only()
"""
_SQLITE_TRIGGERS = (
    """CREATE TRIGGER style_credits_no_update BEFORE UPDATE ON style_credits
    BEGIN SELECT RAISE(ABORT, 'style_credits is append-only: UPDATE is not allowed'); END""",
    """CREATE TRIGGER style_credits_no_delete BEFORE DELETE ON style_credits
    BEGIN SELECT RAISE(ABORT, 'style_credits is append-only: DELETE is not allowed'); END""",
)


def upgrade() -> None:
    op.create_table(
        "styles",
        sa.Column("pk", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(40), nullable=False, unique=True),
        sa.Column("artist_id", sa.String(64), sa.ForeignKey("artists.id"), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("adapter_path", sa.Text(), nullable=False),
        sa.Column("base_model_id", sa.String(300), nullable=False),
        sa.Column("base_model_sha256", sa.String(64), nullable=False),
        sa.Column("manifest_sha256", sa.String(64), nullable=False),
        sa.Column("style_tag", sa.String(120), nullable=False),
        sa.Column("attribution", sa.Text(), nullable=False),
        sa.Column("visibility", sa.String(16), nullable=False),
        sa.Column("commercial", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("withdrawn_at", UTCDateTime(), nullable=True),
        sa.Column("withdrawn_reason", sa.Text(), nullable=True),
        sa.UniqueConstraint("artist_id", "name"),
    )
    op.create_index("ix_styles_artist_id", "styles", ["artist_id"])
    op.create_index("ix_styles_status", "styles", ["status"])
    op.create_table(
        "style_items",
        sa.Column("style_pk", sa.Integer(), sa.ForeignKey("styles.pk"), primary_key=True),
        sa.Column("work_pk", sa.Integer(), sa.ForeignKey("works.pk"), primary_key=True),
        sa.Column("consent_event_id", sa.String(32), nullable=False),
    )
    op.create_index("ix_style_items_work_pk", "style_items", ["work_pk"])
    op.create_table(
        "style_shares",
        sa.Column("style_pk", sa.Integer(), sa.ForeignKey("styles.pk"), primary_key=True),
        sa.Column("grantee", sa.String(64), primary_key=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "style_credits",
        sa.Column("pk", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("style_id", sa.String(40), nullable=False),
        sa.Column("artist_id", sa.String(64), nullable=False),
        sa.Column("generation_id", sa.String(12), nullable=False, unique=True),
        sa.Column("user", sa.String(64), nullable=True),
        sa.Column("commercial", sa.Boolean(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_style_credits_style_id", "style_credits", ["style_id"])
    op.create_index("ix_style_credits_artist_id", "style_credits", ["artist_id"])

    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute(_PG_FUNCTION)
        op.execute(_PG_TRIGGER)
    elif dialect == "sqlite":
        for statement in _SQLITE_TRIGGERS:
            op.execute(statement)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS style_credits_append_only ON style_credits")
        op.execute("DROP FUNCTION IF EXISTS easel_style_credits_append_only()")
    for table in ("style_credits", "style_shares", "style_items", "styles"):
        op.drop_table(table)
