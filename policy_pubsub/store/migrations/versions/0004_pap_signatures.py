"""The PAP webhook's replay cache: one row per accepted signature until it expires.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pap_signatures",
        sa.Column("digest", sa.String(64), primary_key=True),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_pap_signatures_expires_at", "pap_signatures", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_pap_signatures_expires_at", table_name="pap_signatures")
    op.drop_table("pap_signatures")
