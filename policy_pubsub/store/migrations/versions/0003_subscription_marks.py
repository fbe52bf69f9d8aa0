"""Subscription marks: what was last published to each subscriber, in a narrow table of its
own rather than in the subscriptions' rows; PostgreSQL leaves room in the pages of the tables
that every push updates.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from policy_pubsub.store import dialects

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

FILLFACTOR = 50
UPDATED_EVERY_PUSH = ("topics", "subscription_marks")


def upgrade() -> None:
    op.create_table(
        "subscription_marks",
        sa.Column("subscriber_id", sa.String(255), primary_key=True),
        sa.Column("last_revision", sa.BigInteger, nullable=True),
        sa.Column("last_published_at", sa.BigInteger, nullable=True),
    )
    for table in UPDATED_EVERY_PUSH:
        dialects.set_fillfactor(op.get_bind(), table, FILLFACTOR)
    op.execute(
        "INSERT INTO subscription_marks (subscriber_id, last_revision, last_published_at) "
        "SELECT subscriber_id, last_revision, last_published_at FROM subscriptions"
    )
    with op.batch_alter_table("subscriptions") as batch:
        batch.drop_column("last_published_at")
        batch.drop_column("last_revision")


def downgrade() -> None:
    with op.batch_alter_table("subscriptions") as batch:
        batch.add_column(sa.Column("last_revision", sa.BigInteger, nullable=True))
        batch.add_column(sa.Column("last_published_at", sa.BigInteger, nullable=True))
    op.execute(
        "UPDATE subscriptions SET "
        "last_revision = (SELECT m.last_revision FROM subscription_marks m "
        "WHERE m.subscriber_id = subscriptions.subscriber_id), "
        "last_published_at = (SELECT m.last_published_at FROM subscription_marks m "
        "WHERE m.subscriber_id = subscriptions.subscriber_id)"
    )
    op.drop_table("subscription_marks")
    dialects.set_fillfactor(op.get_bind(), "topics", None)
