"""``python -m policy_pubsub``: the same as the ``policy-pubsub`` command."""

from __future__ import annotations

import sys

from policy_pubsub.cli import main

sys.exit(main())
