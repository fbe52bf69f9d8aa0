"""Shared snapshot bodies: the end of a change's snapshots that subscribers with the same
filters share (the matching policies) is kept once, in ``snapshot_bodies``, and each of those
messages keeps only its own beginning, naming the shared end by ``part``.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "snapshot_bodies",
        sa.Column("revision", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("part", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    # Every message stored so far is whole: it names no shared body.
    op.add_column("messages", sa.Column("part", sa.Integer, nullable=True))
    op.create_index(
        "ix_messages_part",
        "messages",
        ["revision", "part"],
        sqlite_where=sa.text("part IS NOT NULL"),
        postgresql_where=sa.text("part IS NOT NULL"),
    )


def downgrade() -> None:
    # Each message takes its whole body back before the shared ones go.
    op.execute(
        "UPDATE messages SET body = body || (SELECT b.body FROM snapshot_bodies b "
        "WHERE b.revision = messages.revision AND b.part = messages.part) "
        "WHERE part IS NOT NULL"
    )
    op.drop_index("ix_messages_part", table_name="messages")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("part")
    op.drop_table("snapshot_bodies")
