"""policy-pubsub: a durable publish/subscribe server for policies."""
