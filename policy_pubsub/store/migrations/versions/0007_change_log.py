"""The change log: which policies and subscriptions each revision wrote or deleted, so that a
replica behind the store reads only what changed since its revision; and the revision up to
which it has been pruned.

Revision ID: 0007
Revises: 0004
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "change_log",
        sa.Column("revision", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("kind", sa.String(1), primary_key=True),
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_change_log_created_at", "change_log", ["created_at"])
    op.create_table(
        "change_log_floor",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("revision", sa.BigInteger, nullable=False),
    )
    # The log starts empty: it covers the changes after the store's revision now.
    op.execute("INSERT INTO change_log_floor (id, revision) SELECT 1, revision FROM store_revision")


def downgrade() -> None:
    op.drop_table("change_log_floor")
    op.drop_index("ix_change_log_created_at", table_name="change_log")
    op.drop_table("change_log")
