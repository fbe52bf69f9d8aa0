"""The initial schema: revision, policies, subscriptions and the embedded router's tables.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
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
        "store_revision",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("revision", sa.BigInteger, nullable=False),
    )
    op.bulk_insert(
        sa.table(
            "store_revision", sa.column("id", sa.Integer), sa.column("revision", sa.BigInteger)
        ),
        [{"id": 1, "revision": 0}],
    )
    op.create_table(
        "policies",
        sa.Column("policy_id", sa.String(255), primary_key=True),
        sa.Column("policy_version", sa.String(255), nullable=False),
        sa.Column("policy_type", sa.String(1024), nullable=False),
        sa.Column("policy_type_version", sa.String(255), nullable=True),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("revision", sa.BigInteger, nullable=False),
        sa.Column("deployed_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "subscriptions",
        sa.Column("subscriber_id", sa.String(255), primary_key=True),
        sa.Column("topic", sa.String(255), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("revision", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.Column("last_revision", sa.BigInteger, nullable=True),
        sa.Column("last_published_at", sa.BigInteger, nullable=True),
    )
    op.create_index("ix_subscriptions_topic", "subscriptions", ["topic"])
    op.create_table(
        "topics",
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("last_offset", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("last_published_at", sa.BigInteger, nullable=True),
    )
    op.create_table(
        "messages",
        sa.Column("topic", sa.String(255), primary_key=True),
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("key", sa.String(255), nullable=True),
        sa.Column("revision", sa.BigInteger, nullable=True),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_messages_topic_key", "messages", ["topic", "key", "seq"])
    op.create_index("ix_messages_created_at", "messages", ["created_at"])
    op.create_table(
        "consumer_groups",
        sa.Column("topic", sa.String(255), primary_key=True),
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("position", sa.BigInteger, nullable=False),
        sa.Column("last_consumed_at", sa.BigInteger, nullable=True),
    )


def downgrade() -> None:
    for table in ("consumer_groups", "messages", "topics", "subscriptions", "policies"):
        op.drop_table(table)
    op.drop_table("store_revision")
