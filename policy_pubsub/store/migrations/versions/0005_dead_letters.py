"""Dead letters: messages the router refused for good, out of the outbox; and the store's
persistent counters (the dead letters ever made).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dead_letters",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
        sa.Column("subscriber_id", sa.String(255), nullable=True),
        sa.Column("topic", sa.String(255), nullable=False),
        sa.Column("revision", sa.BigInteger, nullable=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("dedup_id", sa.String(600), nullable=True),
        sa.Column("refused_at", sa.BigInteger, nullable=False),
        sa.Column("superseded_by", sa.BigInteger, nullable=True),
    )
    op.create_index("ix_dead_letters_subscriber_id", "dead_letters", ["subscriber_id"])
    op.create_index("ix_dead_letters_refused_at", "dead_letters", ["refused_at"])
    op.create_table(
        "store_counters",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("store_counters")
    op.drop_index("ix_dead_letters_refused_at", table_name="dead_letters")
    op.drop_index("ix_dead_letters_subscriber_id", table_name="dead_letters")
    op.drop_table("dead_letters")
