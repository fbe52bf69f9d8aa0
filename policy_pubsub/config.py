"""Server settings: one object, read once from flags and ``POLICY_PUBSUB_*`` variables."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from policy_pubsub import constants, models
from policy_pubsub.onap.topic import PapTopic

#: The shortest session timeout (PostgreSQL, a frozen replica) a setting may give.
MIN_SESSION_TIMEOUT_SECONDS = 0.5


class Settings(BaseSettings):
    """Everything the server can be told; command-line flags override the environment."""

    model_config = SettingsConfigDict(env_prefix=constants.ENV_PREFIX, extra="forbid")

    host: str = constants.DEFAULT_HOST
    port: int = Field(constants.DEFAULT_PORT, ge=0, le=65535)
    database_url: str = constants.DEFAULT_DATABASE_URL
    router_url: str = constants.DEFAULT_ROUTER_URL

    max_body_bytes: int = Field(constants.DEFAULT_MAX_BODY_BYTES, ge=1024)
    retention_seconds: float = Field(constants.DEFAULT_RETENTION_SECONDS, gt=0)
    maintenance_interval_seconds: float = Field(
        constants.DEFAULT_MAINTENANCE_INTERVAL_SECONDS, gt=0
    )
    position_flush_seconds: float = Field(constants.DEFAULT_POSITION_FLUSH_SECONDS, ge=0)
    max_poll_timeout_ms: int = Field(constants.MAX_POLL_TIMEOUT_MS, ge=0)
    # Longest a policy change's commit waits for the other PAP clients' next changes to
    # join it, when several pushed back to back (service/batches.py); 0: never waits.
    commit_delay_ms: float = Field(constants.DEFAULT_COMMIT_DELAY_MS, ge=0, le=10)
    shutdown_grace_seconds: float = Field(5.0, ge=0)

    # Limits under abuse (README "Observability and limits"). A long-poll's timeout is
    # clamped into [min_poll_timeout_ms, max_poll_timeout_ms]; min > 0 slows busy pollers.
    min_poll_timeout_ms: int = Field(0, ge=0)
    # Most policies one push may carry (POST /pap/v1/policies, each list of a PDP_UPDATE).
    max_policies_per_push: int = Field(10_000, ge=1, le=models.MAX_POLICIES)
    # Most policy filters one subscription or decision request may carry.
    max_filters_per_subscription: int = Field(100, ge=1, le=models.MAX_FILTERS)
    # Most policy ids (or types) one filter may list.
    max_ids_per_filter: int = Field(1000, ge=1, le=models.MAX_IDS_PER_FILTER)
    # Largest message POST /events takes, in bytes of JSON (each message of an array); also
    # the largest snapshot the embedded router carries (a change past it is refused, 413).
    max_message_bytes: int = Field(constants.DEFAULT_MAX_MESSAGE_BYTES, ge=64)
    # Most long-polls this server holds at once; past it, 503 with Retry-After.
    max_held_polls: int = Field(20_000, ge=1)
    # Most long-polls held at once for one consumer group of one topic; past it, 503.
    max_held_polls_per_group: int = Field(100, ge=1)
    # Slow clients (README "Security"): a connection must send its request's headers within
    # header_timeout_seconds of opening (or of its next request's first byte) and its body
    # within body_timeout_seconds after that, else 408 and closed; at most
    # max_incomplete_requests connections may be sending a request at once, past it the one
    # that has waited longest is closed. Held long-polls are complete requests: not affected.
    header_timeout_seconds: float = Field(10.0, gt=0)
    body_timeout_seconds: float = Field(30.0, gt=0)
    max_incomplete_requests: int = Field(1000, ge=1)
    # Empty answers a consumer may get in a minute before it is refused with 429 (0: no cap).
    max_empty_polls_per_minute: int = Field(120, ge=0)

    # A replica frozen, not dead (SIGSTOP, a paused VM, a hung process), on PostgreSQL
    # (README "Several replicas"): the database ends its session that stays idle inside a
    # transaction this long, so the row locks it holds (a change being written, a consumer
    # group's claim) stop blocking the other replicas. Far above the server's own idle spells
    # in a transaction: milliseconds, seconds on a very busy replica. 0: the database's own.
    idle_transaction_timeout_seconds: float = Field(
        constants.DEFAULT_IDLE_TRANSACTION_TIMEOUT_SECONDS, ge=0, le=86_400
    )
    # PostgreSQL 14+ ends a leader lock's session left idle this long (its holder checks it at
    # a quarter of that), so a frozen leader's relay and background jobs move to another
    # replica within about this long plus a retry. 0: the database's own (none by default).
    leader_lock_timeout_seconds: float = Field(
        constants.DEFAULT_LEADER_LOCK_TIMEOUT_SECONDS, ge=0, le=3600
    )

    # Deep healthcheck: the relay is stuck (503) when the outbox's oldest message waited
    # longer than this while the router is reachable.
    relay_stuck_seconds: float = Field(60.0, gt=0)
    # Unsubscribe subscriptions whose topic nobody read for this long (off when unset).
    expire_stale_after_seconds: float | None = Field(None, gt=0)
    # How often the stale-subscription expiry looks.
    stale_check_interval_seconds: float = Field(60.0, gt=0)
    # How long the store's change log keeps what each revision changed (README "Several
    # replicas"): a replica back within it reads only what changed, one away longer reloads.
    change_log_keep_seconds: float = Field(3600.0, gt=0)
    # /metrics reports the consumer lag of at most this many topics (the largest), plus a total.
    metrics_lag_topics: int = Field(50, ge=0, le=10_000)
    # Reading the lag costs a router call per subscription topic: scrapes closer than this
    # reuse the last reading.
    metrics_lag_refresh_seconds: float = Field(10.0, ge=0)

    # DMaaP router (router_url dmaap+http(s)://...). Basic auth for the Message Router; the
    # URL's userinfo (dmaap+https://user:pass@mr:3905), when present, is used instead.
    dmaap_username: str | None = None
    dmaap_password: SecretStr | None = None
    # A PEM bundle of the CAs to trust for the MR's certificate, instead of the system ones.
    dmaap_ca_file: str | None = None
    # Skip TLS certificate checks: only for test labs with self-signed MRs, never production.
    dmaap_insecure: bool = False
    # Create each topic (POST /topics/create) before its first publish, for an MR that does
    # not create topics on publish; ours and a default ONAP MR do.
    dmaap_create_topics: bool = False
    # Connect, write and read timeout of a call to the MR; a long-poll waits this much more
    # than its own hold time.
    dmaap_timeout_seconds: float = Field(10.0, gt=0)
    # The largest message the MR takes, in bytes: a change whose snapshot for some subscriber
    # would be larger is refused (413) before anything is written.
    dmaap_max_message_bytes: int = Field(constants.DEFAULT_MAX_MESSAGE_BYTES, ge=64)

    # NATS router (router_url nats://host:4222): the one JetStream stream of the deployment.
    nats_stream: str = Field("POLICY_PUBSUB", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    # How long that stream keeps a message (JetStream max_age); unset: retention_seconds.
    nats_max_age_seconds: float | None = Field(None, gt=0)

    # RabbitMQ router (router_url amqp(s)://user:password@host:5672/vhost): the durable topic
    # exchange every snapshot is published to, with its topic as routing key.
    amqp_exchange: str = Field(
        constants.DEFAULT_AMQP_EXCHANGE, pattern=constants.AMQP_EXCHANGE_PATTERN
    )
    # A PEM bundle of the CAs to trust for RabbitMQ's certificate (amqps://), instead of the
    # system ones.
    amqp_ca_file: str | None = None
    # Most ready messages a subscriber's queue keeps; past it the oldest is dropped (superseded
    # by the newer snapshots behind it). At least the number of subscribers sharing a topic.
    amqp_queue_max_length: int = Field(100, ge=1)
    # The type of the queues declared: quorum (classic on a broker before 3.8) or classic. A
    # single RabbitMQ node forgets a quorum queue declared just before a kill -9 (README "AMQP
    # (RabbitMQ)"); classic durable queues survive it. Changing it for existing queues needs
    # them deleted first (RabbitMQ refuses a declare with another type).
    amqp_queue_type: Literal["quorum", "classic"] = "quorum"
    # The largest message RabbitMQ takes, in bytes (at most its max_message_size, 128 MiB by
    # default): a change whose snapshot for some subscriber would be larger is refused (413).
    amqp_max_message_bytes: int = Field(constants.DEFAULT_MAX_MESSAGE_BYTES, ge=64)
    # Connect timeout, and how long a publish waits for RabbitMQ's confirms.
    amqp_timeout_seconds: float = Field(10.0, gt=0)
    # Publish attempts in a row in which one queue's message got no confirm within the timeout
    # while RabbitMQ confirmed others, before that message is a dead letter (the queue is stuck,
    # e.g. a quorum queue without a leader) and delivery to the other queues goes on.
    amqp_unconfirmed_attempts: int = Field(3, ge=1)

    # Security (README "Security"). Users, roles and topic patterns (TOML, examples/auth.toml);
    # unset: no authentication, which serve allows only on a loopback address.
    auth_file: str | None = None
    # Serve a non-loopback address without an auth file (a proxy in front authenticates).
    insecure: bool = False
    # TLS: the certificate chain and its private key (PEM files); both or neither.
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    # Shared secret of the PAP webhook: /pap/* must carry X-Policy-Pubsub-Signature, an HMAC
    # of the request's time, nonce, method, path and body (policy_pubsub.webhook_signature).
    pap_webhook_secret: SecretStr | None = Field(None, min_length=1)
    # How far a signature's time may be from the server's clock, either way; a signature is
    # accepted once within it (the replay cache in the store, shared by the replicas).
    pap_signature_window_seconds: int = Field(300, ge=1, le=86_400)
    # Also accept the legacy "sha256=<HMAC of the body>" signature, which can be replayed.
    pap_signature_legacy: bool = False
    # GET /metrics without credentials (Prometheus scrapes); false: admin only.
    metrics_public: bool = True

    # ONAP's PAP channel (README "Running under ONAP's PAP"): where the POLICY-PDP-PAP topic
    # is; unset, the server joins no PAP (the webhook stays). "embedded[/TOPIC]": this
    # server's own message router API (/events), where the PAP's DMaaP client posts and
    # polls; "dmaap+http(s)://[user:pass@]host:port[/TOPIC]": an external DMaaP Message Router
    # (its TLS options are the dmaap_* ones above). Kafka is not a transport here.
    pap_topic_url: str | None = None
    # The PDP's name, unique among the PAP's PDPs; unset: "policy-pubsub-<uuid>", the uuid
    # derived from the store, so the same at every start and on every replica of the store.
    pdp_name: str | None = Field(None, pattern=constants.CONSUMER_PATTERN)
    # The PDP type (the PAP assigns a PDP to the subgroup of its type) and the group it joins.
    pdp_type: str = Field(constants.PDP_TYPE, pattern=constants.CONSUMER_PATTERN)
    pdp_group: str = Field(constants.DEFAULT_PDP_GROUP, min_length=1, max_length=255)
    # The PAP topic's consumer group; unset: the PDP's name (every PDP reads every message).
    pap_consumer_group: str | None = Field(None, pattern=constants.CONSUMER_PATTERN)
    # Heartbeat interval until the PAP's PDP_UPDATE gives its own (pdpHeartbeatIntervalMs).
    pdp_heartbeat_ms: int = Field(60_000, ge=10, le=86_400_000)
    # How long one read of the PAP topic waits for a message (a DMaaP fetchTimeout).
    pap_poll_timeout_ms: int = Field(15_000, ge=0, le=constants.MAX_POLL_TIMEOUT_MS)

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # text: one line a record for people; json: one JSON object a line for log collectors.
    log_format: Literal["text", "json"] = "text"

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        if not value.startswith(("sqlite", "postgresql")):
            raise ValueError(
                "database_url must be a sqlite+aiosqlite:// or postgresql+asyncpg:// URL"
            )
        return value

    @field_validator("pap_topic_url")
    @classmethod
    def _pap_topic(cls, value: str | None) -> str | None:
        if value is not None:
            PapTopic.parse(value)  # ValueError says what is wrong
        return value

    @field_validator("idle_transaction_timeout_seconds", "leader_lock_timeout_seconds")
    @classmethod
    def _session_timeout(cls, value: float) -> float:
        # Shorter, a live replica's own pauses (a garbage collection, a busy moment) would
        # get its sessions ended.
        if 0 < value < MIN_SESSION_TIMEOUT_SECONDS:
            least = MIN_SESSION_TIMEOUT_SECONDS
            raise ValueError(f"must be 0 (the database's own setting) or at least {least} s")
        return value

    @model_validator(mode="after")
    def _poll_bounds(self) -> Settings:
        if self.min_poll_timeout_ms > self.max_poll_timeout_ms:
            raise ValueError("min_poll_timeout_ms must not be above max_poll_timeout_ms")
        return self
