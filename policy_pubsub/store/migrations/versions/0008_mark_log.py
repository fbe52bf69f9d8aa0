"""The mark log: which subscribers each revision marked as published to, so that a replica
behind the store reads the marks that moved after its revision instead of scanning all of
them. Pruned with the change log.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mark_log",
        sa.Column("revision", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("published_at", sa.BigInteger, nullable=False),
        sa.Column("subscribers", sa.Text, nullable=False),
    )
    op.create_index("ix_mark_log_published_at", "mark_log", ["published_at"])
    # The log starts empty, and so must the change log's reach: a replica behind the store's
    # revision now would miss the marks before it, so it reloads (as after a pruning).
    op.execute("UPDATE change_log_floor SET revision = (SELECT revision FROM store_revision)")


def downgrade() -> None:
    op.drop_index("ix_mark_log_published_at", table_name="mark_log")
    op.drop_table("mark_log")
