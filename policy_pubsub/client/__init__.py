"""The component SDK: subscribe to your policies and get each change as it arrives.

```python
from policy_pubsub.client import PolicySubscriber

async with PolicySubscriber(
    "http://127.0.0.1:6969",
    subscriber_id="tca-1", subscriber_topic="policies_DCAE_tca_tca-1",
    policy_filters=[{"policy-id": ["onap.scaleout.tca", "onap.restart.tca"]}],
) as subscriber:
    print(subscriber.policies)
    async for change in subscriber.changes():
        print(change.revision, change.added, change.updated, change.removed)
```

Every delay (long-poll hold, request timeout, backoff, resync, giving up) is one
``Timings`` value: ``PolicySubscriber(..., timings=Timings(give_up_after=60.0))``.
With the server on RabbitMQ, ``router_url="amqp://user:password@rabbit:5672/vhost"`` consumes
the subscriber's queue there instead of long-polling (the ``amqp`` extra:
``pip install 'policy-pubsub-client[amqp]'``), with the same guarantees.
Not an asyncio program? ``PolicySubscriber(...).run(handler)`` blocks and calls ``handler``
for each change. Errors are in ``policy_pubsub.exceptions`` (``ClientError`` and below).
The SDK logs to the ``policy_pubsub.client`` logger, quiet unless the program configures
logging.
"""

from __future__ import annotations

import logging

from policy_pubsub.client.changes import PolicyChange, Snapshot
from policy_pubsub.client.subscriber import Handler, PolicySubscriber
from policy_pubsub.client.timings import Timings
from policy_pubsub.policy_identity import policy_id, policy_version, version_label

logging.getLogger("policy_pubsub.client").addHandler(logging.NullHandler())

__all__ = [
    "Handler",
    "PolicyChange",
    "PolicySubscriber",
    "Snapshot",
    "Timings",
    "policy_id",
    "policy_version",
    "version_label",
]
