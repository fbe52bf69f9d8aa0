"""Wire constants: names, defaults and limits that the HTTP contract and the SDK share."""

from __future__ import annotations

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 6969  # the ONAP PDP port
DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./policy-pubsub.db"
DEFAULT_ROUTER_URL = "embedded"

ENV_PREFIX = "POLICY_PUBSUB_"

REQUEST_ID_HEADER = "X-ONAP-RequestID"
# The PAP webhook's signature of a request: "t=<unix seconds>,nonce=<nonce>,v1=<hex HMAC>"
# (policy_pubsub.webhook_signature; README, Security).
SIGNATURE_HEADER = "X-Policy-Pubsub-Signature"

# Long-poll (DMaaP Message Router semantics).
DEFAULT_POLL_TIMEOUT_MS = 15_000
MAX_POLL_TIMEOUT_MS = 120_000
DEFAULT_POLL_LIMIT = 100
MAX_POLL_LIMIT = 10_000

# RabbitMQ router: the durable topic exchange every snapshot is published to (the server's
# amqp_exchange, the SDK's amqp_exchange=).
DEFAULT_AMQP_EXCHANGE = "policy-pubsub"
AMQP_EXCHANGE_PATTERN = r"^[A-Za-z0-9._:-]{1,200}$"

DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024
# Largest message a router takes unless told otherwise (POST /events, the embedded router,
# the DMaaP router); NATS says its own (the server's max_payload).
DEFAULT_MAX_MESSAGE_BYTES = 1024 * 1024
DEFAULT_RETENTION_SECONDS = 7 * 24 * 3600
DEFAULT_MAINTENANCE_INTERVAL_SECONDS = 60.0
DEFAULT_POSITION_FLUSH_SECONDS = 0.2
# PostgreSQL ends a session of this server that stays idle inside a transaction this long (a
# frozen replica's row locks are freed then). The server's own transactions are idle for
# milliseconds between statements (a consumer-group claim while its answer is handed over,
# a change while its snapshots are matched), seconds at worst on a busy event loop.
DEFAULT_IDLE_TRANSACTION_TIMEOUT_SECONDS = 60.0
# PostgreSQL 14+ ends a leader lock's session idle this long (a frozen leader's lock is freed
# then, and another replica takes it); the holder checks its lock four times as often.
DEFAULT_LEADER_LOCK_TIMEOUT_SECONDS = 20.0
# Longest a policy change's commit waits for other clients' changes (service/batches.py).
DEFAULT_COMMIT_DELAY_MS = 1.0

# Identifier grammar of API.md.
SUBSCRIBER_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,255}$"
TOPIC_PATTERN = r"^[A-Za-z0-9._-]{1,255}$"
POLICY_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,255}$"
CONSUMER_PATTERN = r"^[A-Za-z0-9._:-]{1,255}$"

# Snapshot events.
EVENT_SUBSCRIBE = "subscribe"
EVENT_UPDATE = "update"
EVENT_RESYNC = "resync"

ACTION_CONFIGURE = "configure"
PDP_TYPE = "policy-pubsub"
# The PDP group a PDP asks to join unless told otherwise (ONAP's default group).
DEFAULT_PDP_GROUP = "defaultGroup"
SERVICE_NAME = "policy-pubsub"

# DMaaP Message Router error numbers (mrstatus) used by the /events and /topics routes.
MR_STATUS_NO_TOPIC = 3001
MR_STATUS_BAD_REQUEST = 3002
MR_STATUS_UNAVAILABLE = 5003
MR_STATUS_TOO_MANY_REQUESTS = 5012  # DMaaP's answer to a consumer polling too often
