"""``Timings``: every delay of a subscriber, in seconds, as one value.

```python
from policy_pubsub.client import PolicySubscriber, Timings

PolicySubscriber(..., timings=Timings(backoff_max=5.0, give_up_after=60.0))
```

The defaults suit a component in production; tests pass small numbers (or 0) so that retries
and resyncs take milliseconds. A ``Timings`` is checked when it is made and never changes;
``dataclasses.replace(timings, poll_timeout=30)`` makes a variant.
"""

from __future__ import annotations

from dataclasses import dataclass

from policy_pubsub import constants

__all__ = [
    "DEFAULT_BACKOFF_INITIAL",
    "DEFAULT_BACKOFF_MAX",
    "DEFAULT_POLL_TIMEOUT",
    "DEFAULT_REQUEST_TIMEOUT",
    "DEFAULT_RESYNC_INTERVAL",
    "Timings",
]

DEFAULT_POLL_TIMEOUT = constants.DEFAULT_POLL_TIMEOUT_MS / 1000  # the router's hold time
DEFAULT_REQUEST_TIMEOUT = 10.0
DEFAULT_RESYNC_INTERVAL = 20 * 60.0
DEFAULT_BACKOFF_INITIAL = 0.5
DEFAULT_BACKOFF_MAX = 30.0


@dataclass(frozen=True, slots=True)
class Timings:
    """How long a subscriber waits, in seconds.

    - ``poll_timeout``: how long the router may hold one long-poll before it answers ``[]``;
    - ``request_timeout``: the bound on every other request, and on a poll's answer beyond
      its hold (a poll's read timeout is ``poll_timeout + request_timeout``);
    - ``backoff_initial``, ``backoff_max``: the wait after a failure doubles from the first up
      to the second, jittered down by up to a half;
    - ``resync_interval``: a full re-read of the subscription's policies this often (0: never);
    - ``give_up_after``: requests failing for this long in a row raise ``ServerUnreachable``
      (None: retry for ever).

    Consuming from RabbitMQ (an ``amqp://`` ``router_url``), ``poll_timeout`` is how long one
    wait for a message lasts, ``request_timeout`` bounds connecting and each request to
    RabbitMQ, and a lost connection is made again after the same backoff as a failed poll.

    ``ValueError`` at construction names the first value out of range.
    """

    poll_timeout: float = DEFAULT_POLL_TIMEOUT
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT
    backoff_initial: float = DEFAULT_BACKOFF_INITIAL
    backoff_max: float = DEFAULT_BACKOFF_MAX
    resync_interval: float = DEFAULT_RESYNC_INTERVAL
    give_up_after: float | None = None

    def __post_init__(self) -> None:
        for name, number in (
            ("poll_timeout", self.poll_timeout),
            ("backoff_initial", self.backoff_initial),
            ("resync_interval", self.resync_interval),
            ("give_up_after", self.give_up_after or 0),
        ):
            if number < 0:
                raise ValueError(f"{name} must not be negative")
        if self.request_timeout <= 0:
            raise ValueError("request_timeout must be positive")
        if self.backoff_max < self.backoff_initial:
            raise ValueError("backoff_max must be at least backoff_initial")
