"""``policy_pubsub.testing``: the in-process server that component authors test against."""

from __future__ import annotations

from pathlib import Path

import httpx

from policy_pubsub.client import PolicySubscriber, Timings
from policy_pubsub.testing import running_server


async def test_running_server_serves_a_subscriber_and_cleans_up(tmp_path: Path) -> None:
    """``running_server()`` yields the URL of a real server, on which a subscriber gets its
    changes; with a directory given, the store is kept there.
    """
    async with running_server(tmp_path) as url:
        assert url.startswith("http://127.0.0.1:")
        async with (
            httpx.AsyncClient(base_url=url, timeout=10) as http,
            PolicySubscriber(
                url,
                subscriber_id="me",
                subscriber_topic="my-topic",
                policy_filters=[{"policy-type": "my.type"}],
                timings=Timings(backoff_initial=0.01, backoff_max=0.05),
            ) as subscriber,
        ):
            policy = {"type": "my.type", "name": "p", "version": "1"}
            pushed = (await http.post("/pap/v1/policies", json={"policies": [policy]})).json()
            async for change in subscriber.changes():
                assert (change.revision, list(change.added)) == (pushed["revision"], ["p"])
                break
            assert subscriber.policies == {}  # left by break: not applied
    assert (tmp_path / "store.db").exists()
    async with running_server() as url, httpx.AsyncClient() as http:
        assert (await http.get(f"{url}/healthcheck")).status_code == 200
