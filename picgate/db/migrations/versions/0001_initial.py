"""Initial schema: images, settings, logs, admin users and sessions, login attempts, leases.

Revision ID: 0001
Revises:
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
        "images",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("ext", sa.String(8), nullable=False),
        sa.Column("mime", sa.String(32), nullable=False),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("width", sa.Integer, nullable=True),
        sa.Column("height", sa.Integer, nullable=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("accessed_at", sa.DateTime, nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("prompt", sa.Text, nullable=True),
        sa.Column("local", sa.Boolean, nullable=False),
        sa.Column("expired", sa.Boolean, nullable=False),
        sa.Column("r2_state", sa.String(16), nullable=False),
        sa.Column("r2_attempts", sa.Integer, nullable=False),
        sa.Column("r2_last_error", sa.Text, nullable=True),
        sa.Column("r2_next_attempt_at", sa.DateTime, nullable=True),
        sa.Column("r2_lease_owner", sa.String(64), nullable=True),
        sa.Column("r2_lease_until", sa.DateTime, nullable=True),
    )
    op.create_index("ix_images_created_at", "images", ["created_at"])
    op.create_index("ix_images_accessed_at", "images", ["accessed_at"])
    op.create_index("ix_images_size", "images", ["size"])
    op.create_index("ix_images_local_accessed", "images", ["local", "accessed_at"])
    op.create_index("ix_images_r2_queue", "images", ["r2_state", "r2_next_attempt_at"])

    op.create_table(
        "settings",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("secret", sa.Boolean, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "log_entries",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("level", sa.String(10), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
    )
    op.create_index("ix_log_entries_level_id", "log_entries", ["level", "id"])
    op.create_table(
        "admin_users",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("username", sa.String(64), nullable=False, unique=True),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "admin_sessions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.String(32), nullable=False),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("last_seen_at", sa.DateTime, nullable=False),
        sa.Column("expires_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_admin_sessions_expires_at", "admin_sessions", ["expires_at"])
    op.create_table(
        "login_attempts",
        sa.Column("key", sa.String(128), primary_key=True),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("window_start", sa.DateTime, nullable=False),
        sa.Column("locked_until", sa.DateTime, nullable=True),
    )
    op.create_table(
        "job_leases",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("owner", sa.String(64), nullable=True),
        sa.Column("lease_until", sa.DateTime, nullable=True),
        sa.Column("last_run_at", sa.DateTime, nullable=True),
        sa.Column("last_report", sa.Text, nullable=True),
    )
    op.create_table(
        "daily_stats",
        sa.Column("day", sa.String(10), primary_key=True),
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("value", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    for table in (
        "daily_stats",
        "job_leases",
        "login_attempts",
        "admin_sessions",
        "admin_users",
        "log_entries",
        "settings",
        "images",
    ):
        op.drop_table(table)
