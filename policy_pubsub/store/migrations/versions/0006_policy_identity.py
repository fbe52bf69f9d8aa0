"""Policy identity as ONAP's PAP has it: a deployed policy's stored version is its TOSCA
``version`` ("1.0.0"), no longer ``metadata.policy-version`` (El Alto's policy-api wrote "1"
there). The id (the key) does not change: a policy whose ``name`` and ``metadata.policy-id``
differ is refused from now on, and one stored before keeps the key it has.

Each row's version is worked out again from its body, on SQLite and PostgreSQL alike; the
bodies are kept as they are (a policy deployed without metadata gets it filled in when it is
deployed again). The downgrade restores the earlier rule.

Revision ID: 0006
Revises: 0004
Create Date: 2026-12-03
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_policies = sa.table(
    "policies",
    sa.column("policy_id", sa.String),
    sa.column("policy_version", sa.String),
    sa.column("body", sa.Text),
)


def upgrade() -> None:
    _reversion(tosca_first=True)


def downgrade() -> None:
    _reversion(tosca_first=False)


def _reversion(*, tosca_first: bool) -> None:
    """Set each row's version by the rule: TOSCA ``version`` first, or (the old rule)
    ``metadata.policy-version`` first; a row whose body names neither keeps its version.
    """
    bind = op.get_bind()
    rows = bind.execute(
        sa.select(_policies.c.policy_id, _policies.c.policy_version, _policies.c.body)
    )
    changes = []
    for policy_id, stored, body in rows.all():
        version = _version(json.loads(body), tosca_first=tosca_first)
        if version is not None and version != stored:
            changes.append({"key": policy_id, "version": version})
    if changes:
        bind.execute(
            _policies.update()
            .where(_policies.c.policy_id == sa.bindparam("key"))
            .values(policy_version=sa.bindparam("version")),
            changes,
        )


def _version(body: Any, *, tosca_first: bool) -> str | None:
    if not isinstance(body, dict):
        return None
    metadata = body.get("metadata")
    candidates = [body.get("version")]
    if isinstance(metadata, dict):
        candidates.insert(0 if not tosca_first else 1, metadata.get("policy-version"))
    for candidate in candidates:
        if candidate is not None:
            return str(candidate)
    return None
