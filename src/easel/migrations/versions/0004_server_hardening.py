"""Server hardening: servers with heartbeats, jobs owned by a server, failed-auth records.

- ``servers``: one row per running ``easel serve`` process (id = host, pid and start time),
  with a heartbeat; a job whose owner's heartbeat is stale is requeued by the next server.
- ``jobs``: ``server_id`` (the server that owns it: queued for it or running on it; NULL when
  any server may claim it), ``heartbeat_at``, ``attempts`` (how often it was started, so a job
  that kills its server is not requeued forever), and the uploaded init and mask images as PNG
  bytes so that another server can run an image-to-image job it did not receive.
- ``auth_failures``: failed log-ins and API-key checks, one row per failure and scope
  (``account`` or ``address``), so the rate limit holds across workers and restarts.

Revision ID: 0004_server_hardening
Revises: 0003_server
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from easel.registry.models import UTCDateTime

revision = "0004_server_hardening"
down_revision = "0003_server"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "servers",
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("heartbeat_at", UTCDateTime(), nullable=False),
        sa.Column("stopped_at", UTCDateTime(), nullable=True),
    )
    op.create_index("ix_servers_heartbeat_at", "servers", ["heartbeat_at"])
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("server_id", sa.String(200), nullable=True))
        batch.add_column(sa.Column("heartbeat_at", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("init_png", sa.LargeBinary(), nullable=True))
        batch.add_column(sa.Column("mask_png", sa.LargeBinary(), nullable=True))
    op.create_index("ix_jobs_server_id", "jobs", ["server_id"])
    op.create_index("ix_jobs_state", "jobs", ["state"])
    op.create_table(
        "auth_failures",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_auth_failures_scope_key_at", "auth_failures", ["scope", "key", "at"])
    op.create_index("ix_auth_failures_at", "auth_failures", ["at"])


def downgrade() -> None:
    op.drop_table("auth_failures")
    op.drop_index("ix_jobs_state", table_name="jobs")
    op.drop_index("ix_jobs_server_id", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("mask_png")
        batch.drop_column("init_png")
        batch.drop_column("attempts")
        batch.drop_column("heartbeat_at")
        batch.drop_column("server_id")
    op.drop_table("servers")
