"""Named gateway keys with usage counts.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gateway_keys",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("last_used_at", sa.DateTime, nullable=True),
        sa.Column("revoked_at", sa.DateTime, nullable=True),
        sa.Column("daily_images", sa.Integer, nullable=True),
        sa.Column("day", sa.String(10), nullable=True),
        sa.Column("requests_today", sa.Integer, nullable=False),
        sa.Column("images_today", sa.Integer, nullable=False),
        sa.Column("requests_total", sa.Integer, nullable=False),
        sa.Column("images_total", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("gateway_keys")
