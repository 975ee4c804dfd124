"""The registry: artists, works, descriptors, the consent ledger, datasets and models.

Revision ID: 0001_registry
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from easel.registry.models import GENESIS_HASH, UTCDateTime

revision = "0001_registry"
down_revision = None
branch_labels = None
depends_on = None

# The consent ledger is append-only in the database too: UPDATE and DELETE raise.
_PG_FUNCTION = """
CREATE OR REPLACE FUNCTION easel_consent_events_append_only() RETURNS trigger AS $$
BEGIN
  RAISE EXCEPTION 'consent_events is append-only: % is not allowed', TG_OP;
END;
$$ LANGUAGE plpgsql
"""
_PG_TRIGGER = """
CREATE TRIGGER consent_events_append_only BEFORE UPDATE OR DELETE ON consent_events
FOR EACH ROW EXECUTE FUNCTION easel_consent_events_append_only()
"""
_SQLITE_TRIGGERS = (
    """CREATE TRIGGER consent_events_no_update BEFORE UPDATE ON consent_events
    BEGIN SELECT RAISE(ABORT, 'consent_events is append-only: UPDATE is not allowed'); END""",
    """CREATE TRIGGER consent_events_no_delete BEFORE DELETE ON consent_events
    BEGIN SELECT RAISE(ABORT, 'consent_events is append-only: DELETE is not allowed'); END""",
)


def upgrade() -> None:
    op.create_table(
        "artists",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("contact", sa.String(320), nullable=True),
        sa.Column("contact_verified", sa.Boolean(), nullable=False),
        sa.Column("api_key_hash", sa.String(200), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "works",
        sa.Column("pk", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(40), nullable=False, unique=True),
        sa.Column("owner_id", sa.String(64), sa.ForeignKey("artists.id"), nullable=False),
        sa.Column("title", sa.String(300), nullable=False),
        sa.Column("license_spdx", sa.String(64), nullable=False),
        sa.Column("attribution", sa.Text(), nullable=False),
        sa.Column("source", sa.String(300), nullable=True, unique=True),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("media_type", sa.String(32), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("pdq", sa.String(64), nullable=False),
        sa.Column("pdq_quality", sa.Integer(), nullable=False),
        sa.Column("pdq_dihedral", sa.Text(), nullable=False),
        sa.Column("stored_path", sa.Text(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_works_owner_id", "works", ["owner_id"])
    op.create_index("ix_works_sha256", "works", ["sha256"])
    op.create_table(
        "work_descriptors",
        sa.Column("pk", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("work_pk", sa.Integer(), sa.ForeignKey("works.pk"), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("dim", sa.Integer(), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.UniqueConstraint("work_pk", "kind"),
    )
    op.create_index("ix_work_descriptors_work_pk", "work_descriptors", ["work_pk"])
    op.create_table(
        "consent_events",
        sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("id", sa.String(32), nullable=False, unique=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("artist_id", sa.String(64), sa.ForeignKey("artists.id"), nullable=False),
        sa.Column("work_id", sa.String(40), sa.ForeignKey("works.id"), nullable=True),
        sa.Column("actor_id", sa.String(64), nullable=False),
        sa.Column("purposes", sa.String(100), nullable=False),
        sa.Column("basis", sa.String(200), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("hash", sa.String(64), nullable=False, unique=True),
    )
    op.create_index("ix_consent_events_artist_id", "consent_events", ["artist_id"])
    op.create_index("ix_consent_events_work_id", "consent_events", ["work_id"])
    head = op.create_table(
        "ledger_head",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    # The head row exists from the start, so the first append locks it like every other.
    op.bulk_insert(head, [{"id": 1, "seq": 0, "hash": GENESIS_HASH}])
    op.create_table(
        "datasets",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("purpose", sa.String(32), nullable=False),
        sa.Column("manifest_path", sa.Text(), nullable=False),
        sa.Column("item_count", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "dataset_items",
        sa.Column("dataset_id", sa.String(64), sa.ForeignKey("datasets.id"), primary_key=True),
        sa.Column("work_pk", sa.Integer(), sa.ForeignKey("works.pk"), primary_key=True),
        sa.Column("consent_event_id", sa.String(32), nullable=False),
    )
    op.create_index("ix_dataset_items_work_pk", "dataset_items", ["work_pk"])
    op.create_table(
        "trained_models",
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("dataset_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_trained_models_dataset_id", "trained_models", ["dataset_id"])

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
        op.execute("DROP TRIGGER IF EXISTS consent_events_append_only ON consent_events")
        op.execute("DROP FUNCTION IF EXISTS easel_consent_events_append_only()")
    for table in ("trained_models", "dataset_items", "datasets", "ledger_head", "consent_events",
                  "work_descriptors", "works", "artists"):
        op.drop_table(table)
