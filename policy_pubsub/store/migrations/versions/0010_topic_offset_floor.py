"""Topic rows that go: a topic emptied by its last subscription leaving is marked
(``emptied_at``), and maintenance drops its row once nothing uses it; the store's topic
offset floor (a ``store_counters`` row) keeps every offset such a row handed out from being
handed out again, and each topic's ``base_offset`` is the floor it started from.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

FLOOR = "topic_offset_floor"


def upgrade() -> None:
    # Every topic so far started at offset 0; none is marked: a topic emptied before this
    # migration cannot be told from a DMaaP client's whose messages expired, and stays.
    op.add_column(
        "topics",
        sa.Column("base_offset", sa.BigInteger, nullable=False, server_default=sa.text("0")),
    )
    op.add_column("topics", sa.Column("emptied_at", sa.BigInteger, nullable=True))
    op.execute(f"INSERT INTO store_counters (name, value) VALUES ('{FLOOR}', 0)")


def downgrade() -> None:
    op.execute(f"DELETE FROM store_counters WHERE name = '{FLOOR}'")
    with op.batch_alter_table("topics") as batch:
        batch.drop_column("emptied_at")
        batch.drop_column("base_offset")
