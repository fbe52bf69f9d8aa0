"""Alembic environment: migrations run on a connection the store hands over."""

from __future__ import annotations

from alembic import context

from policy_pubsub.store.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "policy-pubsub runs its migrations itself at start-up; "
        "use `policy-pubsub migrate` rather than the alembic command"
    )
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
