"""The store's tables (SQLAlchemy Core). Migrations in ``migrations/versions`` create them.

Times are integer milliseconds since the epoch, the same on every database.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Integer, MetaData, String, Table, Text, text

metadata = MetaData()

# PostgreSQL: how full to pack the pages of the tables whose rows a push rewrites by the
# thousand. The free space lets an update write the new row version on the same page, without
# a new index entry (a heap-only tuple).
UPDATED_EVERY_PUSH_FILLFACTOR = 50

# One row (id = 1): the store revision. Every committed change takes the next value, and
# incrementing it locks the row, so revisions are handed out in commit order.
store_revision = Table(
    "store_revision",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("revision", BigInteger, nullable=False),
)

policies = Table(
    "policies",
    metadata,
    Column("policy_id", String(255), primary_key=True),
    Column("policy_version", String(255), nullable=False),
    Column("policy_type", String(1024), nullable=False),
    Column("policy_type_version", String(255), nullable=True),
    Column("body", Text, nullable=False),  # the ToscaPolicy JSON as deployed
    Column("revision", BigInteger, nullable=False),
    Column("deployed_at", BigInteger, nullable=False),
)

subscriptions = Table(
    "subscriptions",
    metadata,
    Column("subscriber_id", String(255), primary_key=True),
    Column("topic", String(255), nullable=False, index=True),
    Column("body", Text, nullable=False),  # the subscription record's wire fields, as JSON
    Column("revision", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)

# What was last published to each subscriber, apart from the subscriptions' wide rows: a push
# marks thousands of subscribers, and rewriting only these narrow rows is what keeps it cheap.
# Every subscription has one, written with it and deleted with it.
subscription_marks = Table(
    "subscription_marks",
    metadata,
    Column("subscriber_id", String(255), primary_key=True),
    Column("last_revision", BigInteger, nullable=True),  # revision of the newest snapshot
    Column("last_published_at", BigInteger, nullable=True),
    postgresql_with={"fillfactor": UPDATED_EVERY_PUSH_FILLFACTOR},
)

# The embedded router: topics hold messages at increasing offsets; a consumer group's position
# is the offset of the last message it consumed (0: none yet). A topic's offsets start after
# its base_offset: the store's offset floor (TOPIC_OFFSET_FLOOR) when its row was made, so a
# topic made again after its row was dropped never hands out an offset a reader may still
# hold. emptied_at: when the last subscription on the topic left it, taking its messages and
# consumer groups (None: in use, published to since, or never a subscription's); maintenance
# drops such a row once nothing uses the topic (TopicRepository.drop_orphans).
topics = Table(
    "topics",
    metadata,
    Column("name", String(255), primary_key=True),
    Column("last_offset", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("last_published_at", BigInteger, nullable=True),
    Column("base_offset", BigInteger, nullable=False, server_default=text("0")),
    Column("emptied_at", BigInteger, nullable=True),
    postgresql_with={"fillfactor": UPDATED_EVERY_PUSH_FILLFACTOR},
)

messages = Table(
    "messages",
    metadata,
    Column("topic", String(255), primary_key=True),
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("key", String(255), nullable=True),  # the subscriber id of a snapshot
    Column("revision", BigInteger, nullable=True),
    # The whole body; or, with ``part``, its beginning: the rest is the body of
    # snapshot_bodies (revision, part).
    Column("body", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("part", Integer, nullable=True),
    Index("ix_messages_topic_key", "topic", "key", "seq"),
    Index("ix_messages_created_at", "created_at"),
    # Which messages use a shared body: a body goes once none does.
    Index(
        "ix_messages_part",
        "revision",
        "part",
        sqlite_where=text("part IS NOT NULL"),
        postgresql_where=text("part IS NOT NULL"),
    ),
)

# The end of a change's snapshots that subscribers with the same filters share (the matching
# policies): kept once, for every message that names it, and deleted with the last of them.
snapshot_bodies = Table(
    "snapshot_bodies",
    metadata,
    Column("revision", BigInteger, primary_key=True, autoincrement=False),
    Column("part", Integer, primary_key=True, autoincrement=False),
    Column("body", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
)

consumer_groups = Table(
    "consumer_groups",
    metadata,
    Column("topic", String(255), primary_key=True),
    Column("name", String(255), primary_key=True),
    Column("position", BigInteger, nullable=False),
    Column("last_consumed_at", BigInteger, nullable=True),
)

# Messages for a router outside the store, written in the transaction of the change that causes
# them and deleted by the relay once the router acknowledged them. Ids grow in commit order of
# the writers, who all hold the revision lock.
outbox = Table(
    "outbox",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("topic", String(255), nullable=False),
    Column("key", String(255), nullable=True),
    Column("revision", BigInteger, nullable=True),
    Column("dedup_id", String(600), nullable=True),
    Column("body", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
)

# The PAP webhook's replay cache: the SHA-256 of each accepted signature, kept until its
# timestamp leaves the window (expires_at). The primary key makes a second use of one
# signature fail, on every replica that shares the store.
pap_signatures = Table(
    "pap_signatures",
    metadata,
    Column("digest", String(64), primary_key=True),
    Column("expires_at", BigInteger, nullable=False, index=True),
)

# Messages the router refused for good, moved here from the outbox by the relay (in the
# transaction that deletes their outbox rows), so that the messages behind them go on.
# superseded_by: the revision of the subscriber's next snapshot the router took; until then
# the subscriber has had nothing delivered since this one (and /healthcheck says so).
dead_letters = Table(
    "dead_letters",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("subscriber_id", String(255), nullable=True, index=True),
    Column("topic", String(255), nullable=False),
    Column("revision", BigInteger, nullable=True),
    Column("size", BigInteger, nullable=False),  # the body, in bytes of UTF-8
    Column("reason", Text, nullable=False),
    Column("dedup_id", String(600), nullable=True),
    Column("refused_at", BigInteger, nullable=False, index=True),
    Column("superseded_by", BigInteger, nullable=True),
)

# Counts that outlive the rows they count (one row per name): the dead letters ever made,
# for the policy_pubsub_dead_letters_total counter, which must not go down when dead letters
# are retried or expire, nor start again at 0 when the server restarts; and the topic offset
# floor (TOPIC_OFFSET_FLOOR).
store_counters = Table(
    "store_counters",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", BigInteger, nullable=False),
)

#: The ``store_counters`` row above every offset a dropped topic row ever handed out: the
#: deletion raises it in its transaction, and a topic row made later starts there. On
#: PostgreSQL every transaction that writes topic rows takes a shared lock on it before its
#: first topic row, and the deletion takes it exclusively first (then skips locked topic
#: rows): no row is made from a floor that a deletion is raising, and the two lock orders
#: cannot make a cycle.
TOPIC_OFFSET_FLOOR = "topic_offset_floor"

# Which policy ("p") or subscription ("s") each revision wrote or deleted, written in the
# transaction of the change: a replica at revision R reads the keys logged after R and then
# those rows as they are now (absent: deleted). Pruned by age (``background.change_log_pruning``).
change_log = Table(
    "change_log",
    metadata,
    Column("revision", BigInteger, primary_key=True, autoincrement=False),
    Column("kind", String(1), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("created_at", BigInteger, nullable=False, index=True),
)

# Which subscribers each revision marked as published to (``WriteTx.mark_published``): one row
# a revision, the ids joined by commas (an id has none), so that a replica at revision R reads
# the marks that moved after R from here instead of scanning every mark. Pruned with the change
# log, below the same floor.
mark_log = Table(
    "mark_log",
    metadata,
    Column("revision", BigInteger, primary_key=True, autoincrement=False),
    Column("published_at", BigInteger, nullable=False, index=True),
    Column("subscribers", Text, nullable=False),
)

# One row (id = 1): the change log holds every change after this revision; pruning raises it.
change_log_floor = Table(
    "change_log_floor",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("revision", BigInteger, nullable=False),
)
