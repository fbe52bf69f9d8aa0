"""ONAP's PAP channel: this server as one PDP of an ONAP PAP, on the ``POLICY-PDP-PAP`` topic.

- :mod:`policy_pubsub.onap.messages`: the PDP/PAP messages as a PDP reads and writes them.
- :mod:`policy_pubsub.onap.pdp`: the PDP's state and its answer to each message.
- :mod:`policy_pubsub.onap.channel`: registration, heartbeats and the topic's consumer.

The modules are imported by name; nothing is imported here, so that the settings can use the
topic URL's parser without the server's other parts.
"""
