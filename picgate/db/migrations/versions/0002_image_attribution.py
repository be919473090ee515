"""Image attribution: who asked (user, gateway key), from where (chat, message), which model.

Indexes serve the console's and ``picgate images list``'s filters and the per-user daily
count; the sha256 index lets the Open WebUI migration find an image already stored.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

COLUMNS = (
    ("user_id", 128),
    ("user_name", 128),
    ("chat_id", 128),
    ("message_id", 128),
    ("model", 128),
    ("key_name", 64),
)
INDEXES = (
    ("ix_images_user_created", ["user_id", "created_at"]),
    ("ix_images_chat", ["chat_id"]),
    ("ix_images_model_created", ["model", "created_at"]),
    ("ix_images_key_created", ["key_name", "created_at"]),
    ("ix_images_sha256", ["sha256"]),
)


def upgrade() -> None:
    with op.batch_alter_table("images") as batch:
        for name, length in COLUMNS:
            batch.add_column(sa.Column(name, sa.String(length), nullable=True))
    for name, columns in INDEXES:
        op.create_index(name, "images", columns)


def downgrade() -> None:
    for name, _ in INDEXES:
        op.drop_index(name, "images")
    with op.batch_alter_table("images") as batch:
        for name, _ in reversed(COLUMNS):
            batch.drop_column(name)
